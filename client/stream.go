package client

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"
	"time"

	"github.com/maula-ai/maula-chat/protocol"
)

// ChatRequest is one chat.send. Tool, Provider and Message are required.
type ChatRequest struct {
	Tool        string   // tool id, e.g. "ipintel"
	Provider    string   // claude, gpt, grok, mistral, gemini (or echo where enabled)
	Model       string   // empty: the provider's default model
	Message     string   // the user's message, up to 32 KiB
	SessionID   string   // continue this conversation; empty starts a new one (see Result.SessionID)
	AnalysisID  string   // attach one of the user's analyses; empty: the three most recent
	MaxTokens   int      // output cap, 1 to 200000; 0: the server's default
	Temperature *float64 // 0 to 2; nil: the provider's default

	// CancelOnDisconnect stops the reply when the connection drops instead of keeping it for
	// resume. It defeats the SDK's transparent resume; use it for fire-and-forget turns.
	CancelOnDisconnect bool
	// ID is the request id; empty picks a unique one.
	ID string
}

// Result is how a reply ended, from chat.done or chat.cancelled.
type Result struct {
	ID           string // the request id
	SessionID    string // the conversation; pass it as ChatRequest.SessionID to continue
	MessageID    string // the stored reply's id
	Provider     string
	Model        string
	FinishReason string // stop, length, stop_sequence, content_filter, credits_exhausted; "cancelled" after a cancel
	Cancelled    bool
	Usage        protocol.Usage
	CostUSD      float64
	CostMicros   int64 // the exact cost in micro-dollars
	CreditsLeft  int64
	Seq          uint64 // the last delta's seq
}

// Stream is one running reply. Read its text with Deltas or Next from one goroutine, then
// Result. Text is buffered per stream, so a slow reader of one stream never stalls another.
type Stream struct {
	c         *Client
	id        string
	ctx       context.Context
	sendFrame []byte
	stopWatch func() bool // stops the context.AfterFunc that sends chat.cancel

	// Used only by the connection's reader goroutine (and serve, which runs on it).
	lastSeq  uint64
	started  bool
	resuming bool // a chat.resume was sent and nothing answered it yet
	resends  int  // chat.send sent again after a resume found nothing

	// Guarded by c.mu.
	sent      bool // the chat.send was handed to a writer: the server may have it
	cancelled bool // chat.cancel was requested

	mu       sync.Mutex
	pending  []string      // guarded by mu: deltas not yet taken
	ended    bool          // guarded by mu
	res      Result        // guarded by mu
	err      error         // guarded by mu
	live     Progress      // guarded by mu
	timer    *time.Timer   // guarded by mu: the cancel timeout
	wake     chan struct{} // capacity 1: text arrived
	finished chan struct{} // closed when the reply ended
}

// Progress is the running estimate of a reply's usage and cost (chat.usage, at most once a
// second while it streams).
type Progress struct {
	Usage       protocol.Usage
	CostUSD     float64
	CreditsLeft int64
}

// Chat starts a reply. Cancelling ctx sends chat.cancel: the stream then ends with the
// server's chat.cancelled figures and ctx's error. Validation errors of the server (bad tool,
// rate limit, credits...) surface from Next's end, through Result.
func (c *Client) Chat(ctx context.Context, req ChatRequest) (*Stream, error) {
	if req.Tool == "" || req.Provider == "" || req.Message == "" {
		return nil, errors.New("maula: chat needs Tool, Provider and Message")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	id := req.ID
	if id == "" {
		id = c.newID("c")
	}
	s := &Stream{c: c, id: id, ctx: ctx, wake: make(chan struct{}, 1), finished: make(chan struct{})}
	s.res.ID = id
	s.sendFrame = sendFrame(id, req)
	c.mu.Lock()
	switch {
	case c.err != nil:
		c.mu.Unlock()
		return nil, c.err
	case c.streams[id] != nil:
		c.mu.Unlock()
		return nil, fmt.Errorf("maula: a chat with id %q is running", id)
	}
	c.streams[id] = s
	c.mu.Unlock()
	if err := c.enqueue(ctx, outFrame{data: s.sendFrame, send: s}); err != nil {
		c.mu.Lock()
		delete(c.streams, id)
		c.mu.Unlock()
		return nil, err
	}
	stop := context.AfterFunc(ctx, s.onCancel)
	s.mu.Lock()
	if s.ended {
		stop() // ended before we got here (the Client stopped)
	}
	s.stopWatch = stop
	s.mu.Unlock()
	return s, nil
}

// ID is the request id of the reply.
func (s *Stream) ID() string { return s.id }

// onCancel runs once ctx is done: ask the server to stop, and give it CancelTimeout to say so.
func (s *Stream) onCancel() {
	s.c.mu.Lock()
	s.cancelled = true
	s.c.mu.Unlock()
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.timer = time.AfterFunc(s.c.o.CancelTimeout, func() {
		s.finish(nil, fmt.Errorf("maula: no chat.cancelled from the server in %s: %w", s.c.o.CancelTimeout, s.ctx.Err()))
	})
	s.mu.Unlock()
	select {
	case s.c.sendq <- outFrame{data: cancelFrame(s.id)}:
	case <-s.finished:
	case <-s.c.loopDone:
	}
}

// handle applies one frame of this reply; it runs on the reader goroutine.
func (s *Stream) handle(f *frame, writerDone <-chan struct{}) {
	switch f.Type {
	case protocol.TypeChatStarted:
		s.resuming = false
		if s.started {
			return // replayed by a resume from seq 0
		}
		s.started = true
		s.mu.Lock()
		s.res.SessionID, s.res.MessageID, s.res.Provider, s.res.Model = f.SessionID, f.MessageID, f.Provider, f.Model
		s.mu.Unlock()
	case protocol.TypeChatDelta:
		s.resuming = false
		if f.Seq <= s.lastSeq {
			return // already delivered before the connection dropped
		}
		s.lastSeq = f.Seq
		s.mu.Lock()
		s.pending = append(s.pending, f.Text)
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
	case protocol.TypeChatUsage:
		s.mu.Lock()
		s.live = Progress{Usage: f.Usage, CostUSD: f.CostUSD, CreditsLeft: f.CreditsLeft}
		s.mu.Unlock()
	case protocol.TypeChatDone, protocol.TypeChatCancelled:
		r := Result{ID: s.id, FinishReason: f.FinishReason, Usage: f.Usage, CostUSD: f.CostUSD,
			CostMicros: f.CostMicros, CreditsLeft: f.CreditsLeft, Seq: f.Seq}
		var err error
		if f.Type == protocol.TypeChatCancelled {
			r.Cancelled, r.FinishReason = true, "cancelled"
			err = ErrCancelled
			if cerr := s.ctx.Err(); cerr != nil {
				err = cerr
			}
		}
		s.finish(&r, err)
	case protocol.TypeChatError:
		if s.resuming && f.Code == protocol.CodeNotFound && !s.started && s.resends < 3 {
			// The server never saw the chat.send (it was lost with the old connection): send it
			// again on this one. A chat.send that was seen always leaves a buffered frame.
			s.resends++
			s.resuming = false
			s.resend(s.sendFrame, writerDone)
			return
		}
		if f.Code == protocol.CodeDuplicateID && s.resends > 0 {
			// The turn exists after all (it started between our resume and its answer).
			s.resuming = true
			s.resend(resumeFrame(s.id, s.lastSeq), writerDone)
			return
		}
		s.finish(nil, errorFromFrame(f))
	}
}

// resend queues a frame from the reader goroutine without ever blocking it on a dead writer:
// if the connection is gone the next one re-subscribes anyway.
func (s *Stream) resend(data []byte, writerDone <-chan struct{}) {
	select {
	case s.c.sendq <- outFrame{data: data}:
	case <-writerDone:
	}
}

// ErrCancelled ends a reply that was cancelled by someone else (another connection of the
// same user); a reply cancelled through its context ends with the context's error.
var ErrCancelled = errors.New("maula: reply cancelled")

// finish ends the stream once; r carries the terminal frame's figures when there was one.
func (s *Stream) finish(r *Result, err error) {
	s.c.mu.Lock()
	if s.c.streams[s.id] == s {
		delete(s.c.streams, s.id)
	}
	s.c.mu.Unlock()
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	if r != nil {
		r.SessionID, r.MessageID, r.Provider, r.Model = s.res.SessionID, s.res.MessageID, s.res.Provider, s.res.Model
		s.res = *r
	}
	s.err = err
	if s.timer != nil {
		s.timer.Stop()
	}
	stop := s.stopWatch
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	close(s.finished)
}

// Next returns the next piece of text, blocking until one arrives; false means the reply
// ended (see Result). Call it from one goroutine.
func (s *Stream) Next() (string, bool) {
	for {
		s.mu.Lock()
		if len(s.pending) > 0 {
			t := s.pending[0]
			s.pending[0] = ""
			s.pending = s.pending[1:]
			s.mu.Unlock()
			return t, true
		}
		ended := s.ended
		s.mu.Unlock()
		if ended {
			return "", false
		}
		select {
		case <-s.wake:
		case <-s.finished:
		}
	}
}

// Deltas ranges over the reply's text as it arrives, each piece exactly once, in order.
func (s *Stream) Deltas() iter.Seq[string] {
	return func(yield func(string) bool) {
		for {
			t, ok := s.Next()
			if !ok || !yield(t) {
				return
			}
		}
	}
}

// Done is closed when the reply has ended.
func (s *Stream) Done() <-chan struct{} { return s.finished }

// Result waits for the reply to end and returns its figures. The error is nil after
// chat.done; the context's error (or ErrCancelled) after chat.cancelled, with the figures of
// what was billed; a typed error after chat.error (see the package doc), with a zero Result
// but for the ids.
func (s *Stream) Result() (*Result, error) {
	<-s.finished
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.res
	return &r, s.err
}

// Progress returns the latest running estimate of usage and cost.
func (s *Stream) Progress() Progress {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}

// The encoders of the frames the SDK sends (held to testdata/protocol/client by the tests).

func sendFrame(id string, req ChatRequest) []byte {
	return mustJSON(protocol.ClientFrame{Type: protocol.TypeChatSend, ID: id, Tool: req.Tool,
		SessionID: req.SessionID, Provider: req.Provider, Model: req.Model, Message: req.Message,
		AnalysisID: req.AnalysisID, MaxTokens: req.MaxTokens, Temperature: req.Temperature,
		CancelOnDisconnect: req.CancelOnDisconnect})
}

func cancelFrame(id string) []byte {
	return mustJSON(protocol.ClientFrame{Type: protocol.TypeChatCancel, ID: id})
}

func resumeFrame(id string, afterSeq uint64) []byte {
	return mustJSON(protocol.ClientFrame{Type: protocol.TypeChatResume, ID: id, AfterSeq: afterSeq})
}
