package providers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"
)

// Registry holds the configured providers and the price book, and runs
// calls with retries and fallback. It is safe for concurrent use.
type Registry struct {
	cfg       Config
	policy    RetryPolicy
	prices    *PriceBook
	providers map[string]Provider // available providers only
	// sleep waits d or until ctx is done; replaced in tests.
	sleep func(ctx context.Context, d time.Duration) error
}

// NewRegistry builds the adapters of every provider that has a key (and
// echo when enabled). prices nil means the embedded (or MAULA_PRICES) file.
func NewRegistry(cfg Config, prices *PriceBook) (*Registry, error) {
	if prices == nil {
		var err error
		if prices, err = LoadPricesFile(cfg.PricesPath); err != nil {
			return nil, err
		}
	}
	r := &Registry{cfg: cfg, policy: cfg.retry(), prices: prices, providers: map[string]Provider{}, sleep: sleepCtx}
	hc := httpClient(cfg.HTTPClient)
	for _, name := range ProviderNames {
		pc := cfg.provider(name)
		if name == "echo" {
			if cfg.Echo {
				r.providers[name] = newEcho(pc, cfg.EchoDelay)
			}
			continue
		}
		if pc.APIKey == "" {
			continue
		}
		switch name {
		case "claude":
			r.providers[name] = newClaude(pc, hc)
		case "gpt", "grok", "mistral":
			r.providers[name] = newOpenAICompatible(name, pc, hc)
		case "gemini":
			g, err := newGemini(pc, hc)
			if err != nil {
				return nil, err
			}
			r.providers[name] = g
		}
	}
	return r, nil
}

// Register adds or replaces a provider (tests, custom adapters).
func (r *Registry) Register(p Provider) { r.providers[p.Name()] = p }

// Prices returns the price book.
func (r *Registry) Prices() *PriceBook { return r.prices }

// Provider returns the named available provider.
func (r *Registry) Provider(name string) (Provider, bool) {
	p, ok := r.providers[name]
	return p, ok
}

// List describes every known provider, available or not, with its priced models.
func (r *Registry) List() []ProviderInfo {
	now := nowFunc()
	out := make([]ProviderInfo, 0, len(ProviderNames))
	for _, name := range ProviderNames {
		_, ok := r.providers[name]
		out = append(out, ProviderInfo{Name: name, Available: ok,
			DefaultModel: r.cfg.provider(name).DefaultModel, Models: r.prices.Models(name, now)})
	}
	return out
}

// Stream validates the request (known, available provider; priced model)
// and returns a stream. The call itself starts on the first Recv, which
// retries with backoff and walks the fallback chain until the first event
// arrives; after that no retry or fallback happens, so the text of two
// providers is never mixed.
func (r *Registry) Stream(ctx context.Context, provider string, req *Request) (Stream, error) {
	p, ok := r.providers[provider]
	if !ok {
		if !known(provider) {
			return nil, &Error{Provider: provider, Status: 404, Code: CodeNotFound,
				Message: "unknown provider " + provider, Err: fmt.Errorf("unknown provider %q", provider)}
		}
		return nil, &Error{Provider: provider, Code: CodeUnavailableProv,
			Message: provider + " is not configured", Err: fmt.Errorf("provider %q has no API key", provider)}
	}
	model := req.Model
	if model == "" {
		model = p.DefaultModel()
	}
	if _, err := r.prices.Price(provider, model, nowFunc()); err != nil {
		return nil, &Error{Provider: provider, Status: 400, Code: CodeUnknownModel,
			Message: "unknown model " + model + " for " + provider, Err: err}
	}
	return &registryStream{r: r, ctx: ctx, provider: provider, req: req}, nil
}

func known(name string) bool {
	for _, n := range ProviderNames {
		if n == name {
			return true
		}
	}
	return false
}

// registryStream runs the attempts on its first Recv, then passes events through.
type registryStream struct {
	r        *Registry
	ctx      context.Context
	provider string
	req      *Request

	started bool // owned by the Recv goroutine
	done    bool // owned by the Recv goroutine

	mu     sync.Mutex
	inner  Stream // committed upstream stream; guarded by mu
	closed bool   // Close was called; guarded by mu
}

// Recv returns the next event.
func (s *registryStream) Recv() (Event, error) {
	if s.done {
		return Event{}, io.EOF
	}
	if !s.started {
		s.started = true
		ev := s.attempt()
		if ev.Type != EventDelta {
			s.done = true
		}
		return ev, nil
	}
	s.mu.Lock()
	inner := s.inner
	s.mu.Unlock()
	ev, err := inner.Recv()
	if err != nil || ev.Type != EventDelta {
		s.done = true
	}
	return ev, err
}

// attempt tries the provider and its fallbacks until one yields a first event.
func (s *registryStream) attempt() Event {
	r, ctx := s.r, s.ctx
	deadline := nowFunc().Add(r.policy.MaxTotal)
	chain := append([]string{s.provider}, r.cfg.provider(s.provider).Fallback...)
	var last *Error
	for i, name := range chain {
		p, ok := r.providers[name]
		if !ok {
			continue
		}
		req := *s.req
		if i > 0 {
			// A fallback serves its own default model: the primary's model
			// name means nothing to another provider.
			req.Model = ""
			if _, err := r.prices.Price(name, p.DefaultModel(), nowFunc()); err != nil {
				continue
			}
		}
		for attempt := 0; attempt < r.policy.MaxAttempts; attempt++ {
			if attempt > 0 {
				wait := backoff(r.policy, attempt)
				if last != nil && last.RetryAfter > wait {
					wait = last.RetryAfter // the provider said when; earlier is wasted
				}
				if nowFunc().Add(wait).After(deadline) {
					break
				}
				if err := r.sleep(ctx, wait); err != nil {
					return s.cancelled(name, &req)
				}
			}
			ev, err := s.try(ctx, p, &req)
			if err == nil {
				return ev
			}
			last = err
			if ctx.Err() != nil {
				return s.cancelled(name, &req)
			}
			if !err.Retryable || (err.RetryAfter > r.policy.MaxRetryWait) {
				break // this provider will not recover soon: next in the chain
			}
		}
	}
	if last == nil {
		last = &Error{Provider: s.provider, Code: CodeUnavailableProv, Message: s.provider + " is not available",
			Err: errors.New("no provider of the chain is available")}
	}
	return Event{Type: EventError, Err: last, Provider: last.Provider}
}

// try starts one call and reads its first event. It returns the event to
// commit to, or the error to retry on.
func (s *registryStream) try(ctx context.Context, p Provider, req *Request) (Event, *Error) {
	st, err := p.Stream(ctx, req)
	if err != nil {
		return Event{}, AsError(p.Name(), err)
	}
	ev, rerr := st.Recv()
	switch {
	case rerr != nil:
		_ = st.Close()
		return Event{}, AsError(p.Name(), rerr)
	case ev.Type == EventError:
		_ = st.Close()
		return Event{}, ev.Err
	}
	s.mu.Lock()
	s.inner = st
	closed := s.closed
	s.mu.Unlock()
	if closed {
		_ = st.Close()
	}
	return ev, nil
}

// cancelled is the terminal event for a cancel before any provider answered:
// nothing was generated, the prompt may have been read.
func (s *registryStream) cancelled(provider string, req *Request) Event {
	model := req.Model
	if p, ok := s.r.providers[provider]; ok && model == "" {
		model = p.DefaultModel()
	}
	return Event{Type: EventFinish, FinishReason: FinishCancelled, Provider: provider, Model: model,
		Usage: Usage{Input: estimatePrompt(req), Estimated: true}}
}

// Close closes the committed upstream stream, if any.
func (s *registryStream) Close() error {
	s.mu.Lock()
	s.closed = true
	inner := s.inner
	s.mu.Unlock()
	if inner != nil {
		return inner.Close()
	}
	return nil
}

// backoff is exponential with "equal jitter": half the step is fixed, half
// random, so retries from many streams spread out but never collapse to 0.
func backoff(p RetryPolicy, attempt int) time.Duration {
	d := p.BaseDelay << max(attempt-1, 0)
	if d > p.MaxDelay || d <= 0 {
		d = p.MaxDelay
	}
	half := d / 2
	return half + rand.N(half+1)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
