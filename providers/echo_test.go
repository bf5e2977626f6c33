package providers

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestEcho(t *testing.T) {
	cfg := ConfigFromEnv(func(k string) string {
		return map[string]string{"MAULA_ECHO_PROVIDER": "1", "MAULA_ECHO_DELAY": "-1ms"}[k]
	})
	reg, err := NewRegistry(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	req := testRequest()
	s, err := reg.Stream(context.Background(), "echo", req)
	if err != nil {
		t.Fatal(err)
	}
	text, deltas, term := collect(t, s)
	if text != EchoReply(req) || !strings.Contains(text, "offline") || !strings.HasSuffix(text, "Why is this IP risky?") {
		t.Fatalf("text = %q", text)
	}
	if deltas < 10 || term.FinishReason != FinishStop {
		t.Fatalf("deltas %d, terminal %+v", deltas, term)
	}
	want := Usage{Input: estimatePrompt(req), Output: EstimateTokens(text)}
	if term.Usage != want {
		t.Fatalf("usage = %+v, want %+v", term.Usage, want)
	}
	c, err := reg.Prices().Cost("echo", term.Model, term.Usage, time.Now())
	if err != nil || c.Micros != 0 {
		t.Fatalf("cost = %+v, %v", c, err)
	}
}

func TestEchoCancel(t *testing.T) {
	p := newEcho(ProviderConfig{DefaultModel: "echo-1"}, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	s, _ := p.Stream(ctx, testRequest())
	first, _ := s.Recv()
	if first.Type != EventDelta {
		t.Fatalf("first = %+v", first)
	}
	cancel() // the next word is an hour away: Recv must return on cancel
	ev, _ := s.Recv()
	if ev.Type != EventFinish || ev.FinishReason != FinishCancelled || ev.Usage.Output != EstimateTokens(first.Text) {
		t.Fatalf("after cancel = %+v", ev)
	}
}
