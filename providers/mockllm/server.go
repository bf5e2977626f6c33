package mockllm

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// RequestInfo is what the server recorded about one request.
type RequestInfo struct {
	ID          string
	Path        string
	Model       string
	Body        []byte // request body (recorded only for requests with an explicit id)
	Start, End  time.Time
	ChunksSent  int
	ClosedEarly bool      // the client went away before the response was complete
	ClosedAt    time.Time // when the server noticed (zero if not early)
}

type record struct {
	info RequestInfo
	done chan struct{} // closed when the handler returned
}

// Server is the fake upstream; it implements http.Handler and is safe for
// concurrent use.
type Server struct {
	def Options

	mu   sync.Mutex
	reqs map[string]*record // requests with an explicit id; guarded by mu

	total, early atomic.Int64
}

// New returns a server whose responses default to opts (zero fields of
// Chunks/ChunkSize take DefaultOptions' values).
func New(opts Options) *Server {
	if opts.Chunks == 0 && opts.ChunkSize == 0 {
		d := DefaultOptions
		d.Delay, d.FirstChunkDelay, d.Status, d.RetryAfter = opts.Delay, opts.FirstChunkDelay, opts.Status, opts.RetryAfter
		d.NoUsage, d.NoFinish = opts.NoUsage, opts.NoFinish
		if opts.InputTokens != 0 {
			d.InputTokens = opts.InputTokens
		}
		d.CacheReadTokens, d.CacheWriteTokens, d.ReasoningTokens = opts.CacheReadTokens, opts.CacheWriteTokens, opts.ReasoningTokens
		if opts.ErrorAfter != 0 {
			d.ErrorAfter = opts.ErrorAfter
		}
		if opts.ResetAfter != 0 {
			d.ResetAfter = opts.ResetAfter
		}
		d.ErrorType = opts.ErrorType
		opts = d
	}
	return &Server{def: opts, reqs: map[string]*record{}}
}

// Stats returns the number of requests served and of those closed early.
func (s *Server) Stats() (total, closedEarly int64) { return s.total.Load(), s.early.Load() }

// Request returns what was recorded for id so far; ok is false if the
// request has not arrived.
func (s *Server) Request(id string) (RequestInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.reqs[id]
	if !ok || r.info.Start.IsZero() {
		return RequestInfo{}, false
	}
	return r.info, true
}

// Wait blocks until the request with id has been fully handled (completed
// or closed early) and returns what was recorded.
func (s *Server) Wait(ctx context.Context, id string) (RequestInfo, error) {
	r := s.recordFor(id)
	select {
	case <-r.done:
		s.mu.Lock()
		defer s.mu.Unlock()
		return r.info, nil
	case <-ctx.Done():
		return RequestInfo{}, fmt.Errorf("mockllm: waiting for request %q: %w", id, ctx.Err())
	}
}

func (s *Server) recordFor(id string) *record {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.reqs[id]
	if !ok {
		r = &record{done: make(chan struct{})}
		s.reqs[id] = r
	}
	return r
}

// flavor writes one provider's wire format.
type flavor interface {
	// start appends what precedes the first text chunk.
	start(b []byte) []byte
	// chunk appends one text chunk.
	chunk(b []byte, i int, text string) []byte
	// errorEvent appends a mid-stream error.
	errorEvent(b []byte) []byte
	// finish appends the finish events (and usage unless disabled).
	finish(b []byte) []byte
	// httpError writes an error response body for status.
	httpError(status int) []byte
	// whole returns the non-streaming answer.
	whole(text string) []byte
}

// reqBody is the part of a request body the server looks at.
type reqBody struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

// ServeHTTP routes /v1/messages, /v1/chat/completions and
// /v1beta/models/{model}:streamGenerateContent|generateContent (any path
// prefix before those is ignored, so a base URL may carry one).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	o, err := requestOptions(s.def, r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err != nil {
		return
	}
	var rb reqBody
	path := r.URL.Path
	var f flavor
	stream := false
	switch {
	case strings.HasSuffix(path, "/v1/messages"):
		_ = json.Unmarshal(body, &rb)
		f, stream = newAnthropic(o, rb.Model), rb.Stream
	case strings.HasSuffix(path, "/chat/completions"):
		_ = json.Unmarshal(body, &rb)
		usageChunk := rb.StreamOptions != nil && rb.StreamOptions.IncludeUsage
		f, stream = newOpenAI(o, rb.Model, usageChunk), rb.Stream
	case strings.Contains(path, "/models/") && strings.Contains(path, ":"):
		model, method, _ := strings.Cut(path[strings.LastIndex(path, "/models/")+len("/models/"):], ":")
		rb.Model = model
		f = newGemini(o, model)
		switch method {
		case "streamGenerateContent":
			stream = true
		case "generateContent":
		default:
			http.NotFound(w, r)
			return
		}
	default:
		http.NotFound(w, r)
		return
	}

	s.total.Add(1)
	var rec *record
	if o.ID != "" {
		rec = s.recordFor(o.ID)
		s.mu.Lock()
		rec.info = RequestInfo{ID: o.ID, Path: path, Model: rb.Model, Body: body, Start: time.Now()}
		s.mu.Unlock()
	}
	sent, early, at := s.respond(w, r, o, f, stream)
	if early {
		s.early.Add(1)
	}
	if rec != nil {
		s.mu.Lock()
		rec.info.End = time.Now()
		rec.info.ChunksSent, rec.info.ClosedEarly, rec.info.ClosedAt = sent, early, at
		s.mu.Unlock()
		close(rec.done)
	}
}

// respond writes the response; it reports chunks sent and whether (and
// when) the client closed the request early.
func (s *Server) respond(w http.ResponseWriter, r *http.Request, o Options, f flavor, stream bool) (sent int, early bool, at time.Time) {
	ctx := r.Context()
	if o.Status >= 400 {
		if o.RetryAfter > 0 {
			secs := int64((o.RetryAfter + time.Second - 1) / time.Second)
			w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
			w.Header().Set("Retry-After-Ms", strconv.FormatInt(o.RetryAfter.Milliseconds(), 10))
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(o.Status)
		_, _ = w.Write(f.httpError(o.Status))
		return 0, false, time.Time{}
	}
	var timer *time.Timer
	wait := func(d time.Duration) bool {
		if d <= 0 {
			return ctx.Err() == nil
		}
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		select {
		case <-ctx.Done():
			timer.Stop()
			return false
		case <-timer.C:
			return true
		}
	}
	gone := func() (int, bool, time.Time) { return sent, true, time.Now() }

	if !stream {
		if !wait(o.FirstChunkDelay + time.Duration(o.Chunks)*o.Delay) {
			return gone()
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(f.whole(Text(o)))
		return o.Chunks, false, time.Time{}
	}

	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	buf := make([]byte, 0, 512+o.ChunkSize)
	write := func() bool {
		if _, err := w.Write(buf); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	buf = f.start(buf[:0])
	if len(buf) > 0 && !write() {
		return gone()
	}
	if !wait(o.FirstChunkDelay) {
		return gone()
	}
	text := Text(o)
	for i := 0; i < o.Chunks; i++ {
		if i > 0 && !wait(o.Delay) {
			return gone()
		}
		if i == o.ResetAfter {
			reset(rc)
			return sent, false, time.Time{}
		}
		if i == o.ErrorAfter {
			buf = f.errorEvent(buf[:0])
			write()
			return sent, false, time.Time{}
		}
		buf = f.chunk(buf[:0], i, text[i*o.ChunkSize:(i+1)*o.ChunkSize])
		if !write() {
			return gone()
		}
		sent++
	}
	switch {
	case o.ResetAfter >= 0 && o.ResetAfter >= o.Chunks:
		reset(rc)
		return sent, false, time.Time{}
	case o.ErrorAfter >= 0 && o.ErrorAfter >= o.Chunks:
		buf = f.errorEvent(buf[:0])
		write()
		return sent, false, time.Time{}
	case o.NoFinish:
		return sent, false, time.Time{}
	}
	buf = f.finish(buf[:0])
	if !write() {
		return gone()
	}
	return sent, false, time.Time{}
}

// reset aborts the connection with a TCP RST (SO_LINGER 0), the way a
// crashed upstream or a dropped proxy looks to the client.
func reset(rc *http.ResponseController) {
	conn, _, err := rc.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // HTTP/2 or a test recorder: abort the response instead
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
