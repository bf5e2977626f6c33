package providers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"strings"
	"sync"

	"google.golang.org/genai"
)

// geminiProvider streams from the Gemini API (streamGenerateContent?alt=sse).
type geminiProvider struct {
	client       *genai.Client
	defaultModel string
}

func newGemini(pc ProviderConfig, hc *http.Client) (*geminiProvider, error) {
	one := int32(1)
	cc := &genai.ClientConfig{
		APIKey:     pc.APIKey,
		Backend:    genai.BackendGeminiAPI,
		HTTPClient: hc,
		HTTPOptions: genai.HTTPOptions{
			BaseURL: pc.BaseURL,
			// One attempt: the Registry owns retries (only before the first token).
			RetryOptions: &genai.HTTPRetryOptions{Attempts: &one},
		},
	}
	c, err := genai.NewClient(context.Background(), cc)
	if err != nil {
		return nil, fmt.Errorf("gemini client: %w", err)
	}
	return &geminiProvider{client: c, defaultModel: pc.DefaultModel}, nil
}

// Name returns "gemini".
func (p *geminiProvider) Name() string { return "gemini" }

// DefaultModel returns the configured default model.
func (p *geminiProvider) DefaultModel() string { return p.defaultModel }

// Stream starts a streamGenerateContent call. genai exposes the stream as an
// iterator; iter.Pull2 turns it into Recv calls on the caller's goroutine,
// so no extra goroutine hops sit between a chunk and its event.
func (p *geminiProvider) Stream(ctx context.Context, req *Request) (Stream, error) {
	model := req.Model
	if model == "" {
		model = p.defaultModel
	}
	contents, cfg := geminiParams(req)
	ctx, ri := withRespInfo(ctx)
	// Close may come from another goroutine while Recv waits in next, and a
	// Pull iterator must not be driven concurrently: Close first cancels the
	// call (unblocking next), then takes mu to stop the iterator.
	callCtx, cancel := context.WithCancel(ctx)
	seq := p.client.Models.GenerateContentStream(callCtx, model, contents, cfg)
	next, stop := iter.Pull2(seq)
	s := &geminiStream{next: next, ri: ri}
	s.core = newCore(ctx, "gemini", model, req, func() error {
		cancel()
		s.mu.Lock()
		defer s.mu.Unlock()
		stop()
		return nil
	})
	// Pull the first chunk now so HTTP errors surface from Stream, like the
	// other adapters; the chunk is replayed by the first Recv.
	resp, err, ok := s.pull()
	if ok && err != nil && !s.core.cancelled() {
		_ = s.core.close()
		return nil, geminiError(err, ri)
	}
	s.first, s.firstErr, s.firstOK, s.havePending = resp, err, ok, true
	return s, nil
}

func geminiParams(req *Request) ([]*genai.Content, *genai.GenerateContentConfig) {
	off := false
	cfg := &genai.GenerateContentConfig{
		MaxOutputTokens:       int32(req.MaxTokens),
		StopSequences:         req.Stop,
		AutomaticContinuation: &off, // a resumed hop could repeat text; the hub owns resume
	}
	if req.Temperature != nil {
		t := float32(*req.Temperature)
		cfg.Temperature = &t
	}
	var sys []*genai.Part
	for _, s := range []string{req.System, req.Context} {
		if s != "" {
			sys = append(sys, &genai.Part{Text: s})
		}
	}
	var contents []*genai.Content
	for _, m := range req.Messages {
		switch m.Role {
		case RoleSystem:
			sys = append(sys, &genai.Part{Text: m.Content})
		case RoleAssistant:
			contents = append(contents, &genai.Content{Role: genai.RoleModel, Parts: []*genai.Part{{Text: m.Content}}})
		default:
			contents = append(contents, &genai.Content{Role: genai.RoleUser, Parts: []*genai.Part{{Text: m.Content}}})
		}
	}
	if len(sys) > 0 {
		cfg.SystemInstruction = &genai.Content{Parts: sys}
	}
	return contents, cfg
}

// geminiStream adapts genai's response iterator. Each chunk may carry
// usageMetadata; the one on the chunk with a finishReason is final.
type geminiStream struct {
	core        *streamCore
	next        func() (*genai.GenerateContentResponse, error, bool)
	ri          *respInfo
	mu          sync.Mutex // serialises next and stop
	reason      string
	pending     []string // texts of the current chunk not yet returned
	first       *genai.GenerateContentResponse
	firstErr    error
	firstOK     bool
	havePending bool // first is still to be handled
}

// Recv returns the next event.
func (s *geminiStream) Recv() (Event, error) {
	c := s.core
	if c.done {
		return Event{}, io.EOF
	}
	if c.cancelled() {
		return c.finish(FinishCancelled), nil
	}
	for {
		if len(s.pending) > 0 {
			t := s.pending[0]
			s.pending = s.pending[1:]
			return c.delta(t), nil
		}
		var (
			resp *genai.GenerateContentResponse
			err  error
			ok   bool
		)
		if s.havePending {
			resp, err, ok = s.first, s.firstErr, s.firstOK
			s.havePending, s.first = false, nil
		} else {
			resp, err, ok = s.pull()
		}
		if !ok {
			if s.reason != "" {
				return c.finish(geminiFinishReason(s.reason)), nil
			}
			return c.fail(incompleteError("gemini")), nil
		}
		if err != nil {
			return c.fail(geminiError(err, s.ri)), nil
		}
		s.chunk(resp)
	}
}

func (s *geminiStream) pull() (*genai.GenerateContentResponse, error, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next()
}

// chunk records usage and finish reason and queues the chunk's texts.
func (s *geminiStream) chunk(resp *genai.GenerateContentResponse) {
	if resp == nil {
		return
	}
	if len(resp.Candidates) > 0 && resp.Candidates[0] != nil {
		cand := resp.Candidates[0]
		if cand.Content != nil {
			for _, part := range cand.Content.Parts {
				if part != nil && part.Text != "" && !part.Thought {
					s.pending = append(s.pending, part.Text)
				}
			}
		}
		if cand.FinishReason != "" && cand.FinishReason != genai.FinishReasonUnspecified {
			s.reason = string(cand.FinishReason)
		}
	}
	if um := resp.UsageMetadata; um != nil {
		c := s.core
		cached := int64(um.CachedContentTokenCount)
		// promptTokenCount includes the cached part; Output bills thoughts too.
		c.usage = Usage{
			Input:     max(int64(um.PromptTokenCount)-cached, 0),
			CacheRead: cached,
			Output:    int64(um.CandidatesTokenCount) + int64(um.ThoughtsTokenCount),
			Reasoning: int64(um.ThoughtsTokenCount),
		}
		c.haveInput = um.PromptTokenCount > 0
		c.final = s.reason != ""
	}
}

// Close stops the iterator, which closes the HTTP response.
func (s *geminiStream) Close() error { return s.core.close() }

func geminiFinishReason(r string) string {
	switch r {
	case "STOP":
		return FinishStop
	case "MAX_TOKENS":
		return FinishLength
	case "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE":
		return FinishContentFilter
	}
	return strings.ToLower(r)
}

// geminiError maps genai errors: APIError carries the HTTP code, both for
// error responses and for error objects sent mid-stream.
func geminiError(err error, ri *respInfo) *Error {
	var ae genai.APIError
	if errors.As(err, &ae) {
		status := ae.Code
		if status < 400 {
			status = errorTypeStatus(ae.Status)
		}
		if status >= 400 {
			return newHTTPError("gemini", status, ri.retryAfter(), err)
		}
	}
	return transportError("gemini", err)
}
