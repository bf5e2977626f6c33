package providers

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/providers/mockllm"
)

// setMock replaces the request's mock options (used by countingHandler.rewrite).
func setMock(r *http.Request, o mockllm.Options) { r.Header.Set(mockllm.HeaderName, o.Header()) }

func TestRegistryRetryAndFallback(t *testing.T) {
	base := mockllm.DefaultOptions
	base.Chunks, base.ChunkSize = 4, 5
	text := mockllm.Text(base)

	type result struct {
		text     string
		provider string
		code     string // terminal error code, "" for finish
		requests int64
	}
	cases := []struct {
		name     string
		fallback []string
		rewrite  func(n int64, r *http.Request)
		want     result
		minWait  time.Duration // at least one backoff must be this long (Retry-After)
	}{
		{name: "retries 529 then succeeds", rewrite: func(n int64, r *http.Request) {
			o := base
			if n <= 2 {
				o.Status = 529
			}
			setMock(r, o)
		}, want: result{text: text, provider: "claude", requests: 3}},
		{name: "honours Retry-After", rewrite: func(n int64, r *http.Request) {
			o := base
			if n == 1 {
				o.Status, o.RetryAfter = 429, 40*time.Millisecond
			}
			setMock(r, o)
		}, want: result{text: text, provider: "claude", requests: 2}, minWait: 40 * time.Millisecond},
		{name: "error before first token is retried", rewrite: func(n int64, r *http.Request) {
			o := base
			if n == 1 {
				o.ErrorAfter = 0
			}
			setMock(r, o)
		}, want: result{text: text, provider: "claude", requests: 2}},
		{name: "falls back after attempts run out", fallback: []string{"gpt"}, rewrite: func(n int64, r *http.Request) {
			o := base
			if strings.HasSuffix(r.URL.Path, "/v1/messages") {
				o.Status = 503
			}
			setMock(r, o)
		}, want: result{text: text, provider: "gpt", requests: 4}},
		{name: "401 skips retries to the fallback", fallback: []string{"gemini"}, rewrite: func(n int64, r *http.Request) {
			o := base
			if strings.HasSuffix(r.URL.Path, "/v1/messages") {
				o.Status = 401
			}
			setMock(r, o)
		}, want: result{text: text, provider: "gemini", requests: 2}},
		{name: "no retry or fallback after the first token", fallback: []string{"gpt"}, rewrite: func(n int64, r *http.Request) {
			o := base
			o.ErrorAfter = 2
			setMock(r, o)
		}, want: result{text: text[:10], provider: "claude", code: CodeOverloaded, requests: 1}},
		{name: "cut stream after first token is a retryable error", fallback: []string{"gpt"}, rewrite: func(n int64, r *http.Request) {
			o := base
			o.NoFinish = true
			setMock(r, o)
		}, want: result{text: text, provider: "claude", code: CodeIncomplete, requests: 1}},
		{name: "all fail", fallback: []string{"gpt"}, rewrite: func(n int64, r *http.Request) {
			o := base
			o.Status = 500
			setMock(r, o)
		}, want: result{provider: "gpt", code: CodeServer, requests: 6}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newMockEnv(t)
			env.count.rewrite = tc.rewrite
			pc := env.reg.cfg.Providers["claude"]
			pc.Fallback = tc.fallback
			env.reg.cfg.Providers["claude"] = pc
			var mu sync.Mutex
			var waits []time.Duration
			env.reg.sleep = func(ctx context.Context, d time.Duration) error {
				mu.Lock()
				waits = append(waits, d)
				mu.Unlock()
				return ctx.Err() // no real sleeping in tests
			}
			s, err := env.reg.Stream(context.Background(), "claude", testRequest())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got, _, term := collect(t, s)
			if got != tc.want.text {
				t.Errorf("text = %q, want %q", got, tc.want.text)
			}
			if term.Provider != tc.want.provider {
				t.Errorf("served by %q, want %q", term.Provider, tc.want.provider)
			}
			if tc.want.code == "" && term.Type != EventFinish {
				t.Errorf("terminal = %+v, want finish", term)
			}
			if tc.want.code != "" && (term.Type != EventError || term.Err.Code != tc.want.code) {
				t.Errorf("terminal = %+v (err %v), want error %s", term, term.Err, tc.want.code)
			}
			if n := env.count.n.Load(); n != tc.want.requests {
				t.Errorf("upstream requests = %d, want %d", n, tc.want.requests)
			}
			if tc.minWait > 0 {
				ok := false
				for _, w := range waits {
					ok = ok || w >= tc.minWait
				}
				if !ok {
					t.Errorf("waits %v, want one >= %v", waits, tc.minWait)
				}
			}
		})
	}
}

func TestRegistryValidation(t *testing.T) {
	env := newMockEnv(t)
	cases := []struct {
		provider, model, code string
	}{
		{"claude", "claude-imaginary-9", CodeUnknownModel},
		{"nope", "", CodeNotFound},
		{"echo", "", CodeUnavailableProv}, // echo off in this config
	}
	for _, tc := range cases {
		t.Run(tc.provider+"/"+tc.model, func(t *testing.T) {
			req := testRequest()
			req.Model = tc.model
			_, err := env.reg.Stream(context.Background(), tc.provider, req)
			var pe *Error
			if !errors.As(err, &pe) || pe.Code != tc.code {
				t.Fatalf("err = %v, want code %s", err, tc.code)
			}
			if n := env.count.n.Load(); n != 0 {
				t.Fatalf("upstream called %d times", n)
			}
		})
	}
}

func TestRegistryList(t *testing.T) {
	cfg := ConfigFromEnv(func(k string) string {
		return map[string]string{"ANTHROPIC_API_KEY": "k", "MAULA_DEFAULT_MODEL_GPT": "gpt-5",
			"MAULA_FALLBACK_CLAUDE": "gpt, gemini", "MAULA_ECHO_PROVIDER": "on"}[k]
	})
	if got := cfg.Providers["claude"].Fallback; len(got) != 2 || got[0] != "gpt" || got[1] != "gemini" {
		t.Fatalf("fallback = %v", got)
	}
	reg, err := NewRegistry(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	avail := map[string]bool{}
	for _, pi := range reg.List() {
		avail[pi.Name] = pi.Available
		if len(pi.Models) == 0 {
			t.Errorf("%s lists no models", pi.Name)
		}
		if pi.Name == "gpt" && pi.DefaultModel != "gpt-5" {
			t.Errorf("gpt default = %s", pi.DefaultModel)
		}
	}
	want := map[string]bool{"claude": true, "gpt": false, "grok": false, "mistral": false, "gemini": false, "echo": true}
	for k, v := range want {
		if avail[k] != v {
			t.Errorf("%s available = %v, want %v", k, avail[k], v)
		}
	}
}

func TestRegistryCancelBeforeFirstToken(t *testing.T) {
	env := newMockEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env.count.rewrite = func(n int64, r *http.Request) {
		o := mockllm.DefaultOptions
		o.FirstChunkDelay, o.ID = 10*time.Second, "slow"
		setMock(r, o)
		cancel() // the upstream has the request: the caller gives up now
	}
	s, err := env.reg.Stream(ctx, "claude", testRequest())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, _, term := collect(t, s)
	if term.Type != EventFinish || term.FinishReason != FinishCancelled || !term.Usage.Estimated || term.Usage.Input == 0 {
		t.Fatalf("terminal = %+v", term)
	}
	info, err := env.mock.Wait(context.Background(), "slow")
	if err != nil || !info.ClosedEarly {
		t.Fatalf("upstream close not seen: %+v %v", info, err)
	}
}
