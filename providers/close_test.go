package providers

import (
	"context"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/providers/mockllm"
)

// TestCloseUnblocksRecv: Close from another goroutine ends a Recv that is
// waiting for the next chunk, and the upstream sees the request closed.
func TestCloseUnblocksRecv(t *testing.T) {
	env := newMockEnv(t)
	for _, ac := range adapterCases {
		t.Run(ac.provider, func(t *testing.T) {
			o := mockllm.DefaultOptions
			o.Chunks, o.Delay, o.ID = 50, time.Hour, "close-"+ac.provider
			p, _ := env.reg.Provider(ac.provider)
			s, err := p.Stream(withMock(context.Background(), o), testRequest())
			if err != nil {
				t.Fatal(err)
			}
			if ev, err := s.Recv(); err != nil || ev.Type != EventDelta {
				t.Fatalf("first = %+v, %v", ev, err)
			}
			got := make(chan Event, 1)
			go func() {
				ev, _ := s.Recv() // blocks: the next chunk is an hour away
				got <- ev
			}()
			_ = s.Close()
			select {
			case ev := <-got:
				if ev.Type == EventDelta {
					t.Fatalf("delta after Close: %+v", ev)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Recv still blocked after Close")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if info, err := env.mock.Wait(ctx, o.ID); err != nil || !info.ClosedEarly {
				t.Fatalf("upstream: %+v, %v", info, err)
			}
		})
	}
}
