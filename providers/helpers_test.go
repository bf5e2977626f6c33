package providers

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/providers/mockllm"
)

// mockHeaderKey carries per-request mock options through the SDKs: the
// test transport copies it into the X-Mock header.
type mockHeaderKey struct{}

func withMock(ctx context.Context, o mockllm.Options) context.Context {
	return context.WithValue(ctx, mockHeaderKey{}, o.Header())
}

type mockHeaderTransport struct{ base http.RoundTripper }

func (t mockHeaderTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if h, ok := r.Context().Value(mockHeaderKey{}).(string); ok {
		r = r.Clone(r.Context())
		r.Header.Set(mockllm.HeaderName, h)
	}
	return t.base.RoundTrip(r)
}

// adapterCase is one adapter under the conformance suite.
type adapterCase struct {
	provider string
	model    string
	// what the adapter's Usage must be for mock options o
	usage func(o mockllm.Options) Usage
}

func openAIUsage(o mockllm.Options) Usage {
	return Usage{Input: int64(o.InputTokens), CacheRead: int64(o.CacheReadTokens),
		Output: int64(o.OutputTokens()), Reasoning: int64(o.ReasoningTokens)}
}

var adapterCases = []adapterCase{
	{"claude", "claude-sonnet-4-5", func(o mockllm.Options) Usage {
		return Usage{Input: int64(o.InputTokens), CacheRead: int64(o.CacheReadTokens), CacheWrite: int64(o.CacheWriteTokens),
			Output: int64(o.OutputTokens()), Reasoning: int64(o.ReasoningTokens)}
	}},
	{"gpt", "gpt-5-mini", openAIUsage},
	{"grok", "grok-4-fast", openAIUsage},
	{"mistral", "mistral-medium-latest", openAIUsage},
	{"gemini", "gemini-2.5-flash", openAIUsage},
}

// mockConfig points every provider at the mock server at url.
func mockConfig(url string, transport http.RoundTripper) Config {
	cfg := ConfigFromEnv(func(string) string { return "" })
	for name, base := range map[string]string{"claude": url, "gpt": url + "/v1", "grok": url + "/v1",
		"mistral": url + "/v1", "gemini": url} {
		pc := cfg.Providers[name]
		pc.APIKey, pc.BaseURL = "test-key-"+name, base
		cfg.Providers[name] = pc
	}
	cfg.HTTPClient = &http.Client{Transport: transport}
	cfg.Retry = RetryPolicy{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond,
		MaxTotal: 5 * time.Second, MaxRetryWait: time.Second}
	return cfg
}

// countingHandler counts requests before handing them to h.
type countingHandler struct {
	h http.Handler
	n atomic.Int64
	// rewrite may set per-request options from the request number (1-based).
	rewrite func(n int64, r *http.Request)
}

func (c *countingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := c.n.Add(1)
	if c.rewrite != nil {
		c.rewrite(n, r)
	}
	c.h.ServeHTTP(w, r)
}

type mockEnv struct {
	mock  *mockllm.Server
	count *countingHandler
	srv   *httptest.Server
	reg   *Registry
}

func newMockEnv(t testing.TB) *mockEnv {
	t.Helper()
	m := mockllm.New(mockllm.Options{})
	ch := &countingHandler{h: m}
	srv := httptest.NewServer(ch)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(func() { srv.Close(); tr.CloseIdleConnections() })
	reg, err := NewRegistry(mockConfig(srv.URL, mockHeaderTransport{base: tr}), nil)
	if err != nil {
		t.Fatal(err)
	}
	return &mockEnv{mock: m, count: ch, srv: srv, reg: reg}
}

func testRequest() *Request {
	return &Request{System: "You are FraudGuard's assistant.", Context: "Analysis #1: score 0.91 (high risk).",
		Messages: []Message{{Role: RoleUser, Content: "Why is this IP risky?"}}, MaxTokens: 256, CacheHint: true}
}

// collect drains a stream: concatenated text, deltas, and the terminal event.
func collect(t testing.TB, s Stream) (text string, deltas int, term Event) {
	t.Helper()
	var b strings.Builder
	for {
		ev, err := s.Recv()
		if errors.Is(err, io.EOF) {
			t.Fatalf("io.EOF before a terminal event")
		}
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		switch ev.Type {
		case EventDelta:
			if ev.Text == "" {
				t.Fatalf("empty delta event")
			}
			b.WriteString(ev.Text)
			deltas++
		case EventFinish, EventError:
			if _, err := s.Recv(); !errors.Is(err, io.EOF) {
				t.Fatalf("Recv after terminal event: %v, want io.EOF", err)
			}
			return b.String(), deltas, ev
		default:
			t.Fatalf("bad event type %v", ev.Type)
		}
	}
}
