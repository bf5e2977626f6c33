package providers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/providers/mockllm"
)

// TestConformance runs one suite against every adapter through the fake
// upstream: exact text and usage, estimated usage, failures and cancel.
func TestConformance(t *testing.T) {
	env := newMockEnv(t)
	base := mockllm.DefaultOptions
	base.Chunks, base.ChunkSize = 5, 7

	type want struct {
		text       string // exact text, or prefix when streamErr
		finish     string
		code       string // error code of the terminal error event, or of Stream's error
		status     int
		retryAfter time.Duration
		estimated  bool
	}
	cases := []struct {
		name string
		mod  func(o *mockllm.Options)
		want func(o mockllm.Options) want
		// streamErr: the error comes from Provider.Stream, not an event
		streamErr bool
	}{
		{name: "usage in last event", mod: func(o *mockllm.Options) {},
			want: func(o mockllm.Options) want { return want{text: mockllm.Text(o), finish: FinishStop} }},
		{name: "cached and reasoning tokens", mod: func(o *mockllm.Options) {
			o.CacheReadTokens, o.CacheWriteTokens, o.ReasoningTokens = 1024, 300, 48
		}, want: func(o mockllm.Options) want { return want{text: mockllm.Text(o), finish: FinishStop} }},
		{name: "no usage is estimated", mod: func(o *mockllm.Options) { o.NoUsage = true },
			want: func(o mockllm.Options) want {
				return want{text: mockllm.Text(o), finish: FinishStop, estimated: true}
			}},
		{name: "error event mid-stream", mod: func(o *mockllm.Options) { o.ErrorAfter = 2 },
			want: func(o mockllm.Options) want {
				return want{text: mockllm.Text(o)[:2*o.ChunkSize], code: "*", estimated: true}
			}},
		{name: "connection reset mid-stream", mod: func(o *mockllm.Options) { o.ResetAfter = 3 },
			want: func(o mockllm.Options) want {
				return want{text: mockllm.Text(o)[:3*o.ChunkSize], code: CodeNetwork, estimated: true}
			}},
		{name: "no finish event", mod: func(o *mockllm.Options) { o.NoFinish = true },
			want: func(o mockllm.Options) want {
				return want{text: mockllm.Text(o), code: CodeIncomplete, estimated: true}
			}},
		{name: "429 with Retry-After", streamErr: true, mod: func(o *mockllm.Options) {
			o.Status, o.RetryAfter = 429, 1500*time.Millisecond
		}, want: func(o mockllm.Options) want {
			return want{code: CodeRateLimited, status: 429, retryAfter: 1500 * time.Millisecond}
		}},
		{name: "529 overloaded", streamErr: true, mod: func(o *mockllm.Options) { o.Status = 529 },
			want: func(o mockllm.Options) want { return want{code: CodeOverloaded, status: 529} }},
		{name: "401 not retryable", streamErr: true, mod: func(o *mockllm.Options) { o.Status = 401 },
			want: func(o mockllm.Options) want { return want{code: CodeAuth, status: 401} }},
	}
	for _, ac := range adapterCases {
		p, ok := env.reg.Provider(ac.provider)
		if !ok {
			t.Fatalf("%s not registered", ac.provider)
		}
		for _, tc := range cases {
			t.Run(ac.provider+"/"+tc.name, func(t *testing.T) {
				o := base
				tc.mod(&o)
				w := tc.want(o)
				req := testRequest()
				req.Model = ac.model
				ctx := withMock(context.Background(), o)
				s, err := p.Stream(ctx, req)
				if tc.streamErr {
					var pe *Error
					if !errors.As(err, &pe) {
						t.Fatalf("Stream error = %v, want *Error", err)
					}
					if pe.Code != w.code || pe.Status != w.status || pe.Provider != ac.provider {
						t.Fatalf("error = %+v, want code %s status %d", pe, w.code, w.status)
					}
					if pe.Retryable != (w.status != 401) {
						t.Errorf("retryable = %v", pe.Retryable)
					}
					if pe.RetryAfter != w.retryAfter {
						t.Errorf("RetryAfter = %v, want %v", pe.RetryAfter, w.retryAfter)
					}
					if strings.Contains(pe.Message, "test-key") || strings.Contains(pe.Error(), "test-key") {
						t.Errorf("error leaks the key: %v", pe)
					}
					return
				}
				if err != nil {
					t.Fatalf("Stream: %v", err)
				}
				defer s.Close()
				text, _, term := collect(t, s)
				if text != w.text {
					t.Fatalf("text = %q, want %q", text, w.text)
				}
				if term.Provider != ac.provider || term.Model != ac.model {
					t.Errorf("served by %s/%s", term.Provider, term.Model)
				}
				if w.code != "" {
					if term.Type != EventError {
						t.Fatalf("terminal = %+v, want error %s", term, w.code)
					}
					if (w.code != "*" && term.Err.Code != w.code) || !term.Err.Retryable {
						t.Fatalf("error = %+v, want retryable %s", term.Err, w.code)
					}
					if term.Usage.Output < EstimateTokens(text) || term.Usage.Input == 0 {
						t.Errorf("partial usage %+v too small for %q", term.Usage, text)
					}
					return
				}
				if term.Type != EventFinish || term.FinishReason != w.finish {
					t.Fatalf("terminal = %+v, want finish %s", term, w.finish)
				}
				wu := ac.usage(o)
				if w.estimated {
					wu = Usage{Input: estimatePrompt(req), Output: EstimateTokens(text), Estimated: true}
				}
				if term.Usage != wu {
					t.Fatalf("usage = %+v, want %+v", term.Usage, wu)
				}
				if _, err := env.reg.Prices().Cost(ac.provider, ac.model, term.Usage, time.Now()); err != nil {
					t.Errorf("Cost: %v", err)
				}
			})
		}
		t.Run(ac.provider+"/cancel mid-stream", func(t *testing.T) {
			o := base
			o.Chunks, o.Delay, o.ID = 200, 20*time.Millisecond, "cancel-"+ac.provider
			ctx, cancel := context.WithCancel(withMock(context.Background(), o))
			defer cancel()
			req := testRequest()
			req.Model = ac.model
			s, err := p.Stream(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for i := 0; i < 2; i++ {
				if ev, err := s.Recv(); err != nil || ev.Type != EventDelta {
					t.Fatalf("Recv = %+v, %v", ev, err)
				}
			}
			cancelAt := time.Now()
			cancel()
			ev, err := s.Recv()
			if err != nil || ev.Type != EventFinish || ev.FinishReason != FinishCancelled {
				t.Fatalf("after cancel: %+v, %v", ev, err)
			}
			if ev.Usage.Input == 0 || ev.Usage.Output < 2 {
				t.Errorf("cancel usage = %+v", ev.Usage)
			}
			wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer wcancel()
			info, err := env.mock.Wait(wctx, o.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !info.ClosedEarly {
				t.Fatalf("upstream did not see the close: %+v", info)
			}
			if d := info.ClosedAt.Sub(cancelAt); d > 100*time.Millisecond {
				t.Fatalf("upstream saw the close after %v, want < 100ms", d)
			}
		})
	}
}
