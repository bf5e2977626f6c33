package chat

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/protocol"
	"github.com/maula-ai/maula-chat/providers/mockllm"
)

// failingHistory is a chat_history that refuses every write, and counts what it was asked.
type failingHistory struct {
	mu    sync.Mutex
	calls int
	docs  int
}

var errHistoryDown = errors.New("chat_history unavailable")

func (f *failingHistory) insertMany(_ context.Context, _ string, docs []any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.docs += len(docs)
	return errHistoryDown
}

func (f *failingHistory) counts() (calls, docs int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, f.docs
}

// breakHistory points the rig's hub at a failing chat_history. Called before any socket is
// dialled: the turns that read h.rec start after it.
func breakHistory(r *rig) *failingHistory {
	f := &failingHistory{}
	r.hub.rec.close()
	r.hub.rec = newRecorderTo(f, r.hub.o.Log)
	return f
}

// settledOutcome returns the outcome the biller settled the user's turn id with.
func settledOutcome(t *testing.T, b *ledgerBiller, userHex, id string) Outcome {
	t.Helper()
	for rid, o := range b.outcomes() {
		if strings.HasPrefix(rid, userHex+":"+id+":") {
			return o
		}
	}
	t.Fatalf("turn %s was not settled", id)
	return Outcome{}
}

// When chat_history refuses a turn's messages, the reply ends with a retryable chat.error,
// never with chat.done or chat.cancelled (whose figures are those of stored messages), and it
// is settled so that nothing is charged: failed, without output, under every credit policy.
// A turn with nothing to store does not touch the store and ends as before.
func TestUnstoredTurnEndsInErrorAndIsNotCharged(t *testing.T) {
	// endless streams until cancelled (an hour of deltas), so the cancel below always lands.
	endless := mockllm.Options{Chunks: 1 << 20, ChunkSize: 8, Delay: 3 * time.Millisecond, ErrorAfter: -1, ResetAfter: -1, InputTokens: 25}
	cases := []struct {
		name       string
		mock       mockllm.Options
		cancel     bool   // cancel after the first delta
		wantCode   string // of the chat.error ending the reply
		wantStored bool   // whether the store was asked at all
		wantDeltas bool
	}{
		{name: "done", mock: paced, wantCode: protocol.CodeInternal, wantStored: true, wantDeltas: true},
		{name: "cancelled", mock: endless, cancel: true, wantCode: protocol.CodeInternal, wantStored: true, wantDeltas: true},
		{name: "provider failed mid-stream", mock: mockllm.Options{Chunks: 10, ChunkSize: 8, ErrorAfter: 3, ResetAfter: -1, InputTokens: 25},
			wantCode: protocol.CodeInternal, wantStored: true, wantDeltas: true},
		{name: "provider failed before the first token", mock: mockllm.Options{Chunks: 10, ChunkSize: 8, Status: 400, ErrorAfter: -1, ResetAfter: -1, InputTokens: 25},
			wantCode: protocol.CodeProviderError, wantStored: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Registered first, so it runs last: after the client closed and the hub shut down.
			t.Cleanup(func() {
				if leaked := hubGoroutines(); leaked != "" {
					t.Errorf("hub goroutines left after shutdown:\n%s", leaked)
				}
			})
			const initial = 1000
			bill := newLedgerBiller(initial)
			r := newRig(t, rigConfig{mock: tc.mock, biller: bill})
			hist := breakHistory(r)
			user, tok := newUser()
			c := r.dial(t, tok)
			c.send(send("r1", "claude", "Why is 203.0.113.7 high risk?"))
			if tc.cancel {
				c.waitFor("r1", 20*time.Second, "a delta", func(fs []map[string]any) bool {
					return len(fs) > 1 && fs[1]["type"] == protocol.TypeChatDelta
				})
				c.send(protocol.ClientFrame{Type: protocol.TypeChatCancel, ID: "r1"})
			}
			fs, end := c.terminal("r1")

			for _, f := range fs {
				if f["type"] == protocol.TypeChatDone || f["type"] == protocol.TypeChatCancelled {
					t.Fatalf("the reply was reported as stored: %v", f)
				}
			}
			if end["type"] != protocol.TypeChatError || end["code"] != tc.wantCode {
				t.Fatalf("ended with %v, want chat.error %s", end, tc.wantCode)
			}
			if tc.wantCode == protocol.CodeInternal && end["retryable"] != true {
				t.Fatalf("chat.error %v is not retryable", end)
			}
			assertKeysWithin(t, end)
			_, last := deltaText(t, fs, 0)
			if tc.wantDeltas != (last > 0) {
				t.Fatalf("%d deltas before the end, want some: %v", last, tc.wantDeltas)
			}
			if seq, _ := end["seq"].(float64); uint64(seq) != last {
				t.Fatalf("chat.error seq %v, last delta %d", end["seq"], last)
			}

			calls, docs := hist.counts()
			if tc.wantStored != (calls > 0) {
				t.Fatalf("the store was asked %d times, want asked: %v", calls, tc.wantStored)
			}
			if tc.wantStored && docs != 2 {
				t.Fatalf("the store was given %d messages, want the user's and the reply", docs)
			}

			// Settled once, as a failed turn without output: billing charges that nothing
			// under per_call and per_cost alike (docs/billing.md), and the hold is returned.
			o := settledOutcome(t, bill, user.Hex(), "r1")
			if o.Status != statusFailed || o.ProducedOutput {
				t.Fatalf("settled with %+v, want failed and no output (nothing charged)", o)
			}
			// The ledger keeps what the client saw: output was sent, the reply was not stored.
			if wantReason := fmt.Sprintf("output sent: %v", tc.wantDeltas); tc.wantStored && !strings.Contains(o.Reason, wantReason) {
				t.Fatalf("settled with reason %q, want it to say %q", o.Reason, wantReason)
			}
			if tc.wantDeltas && o.Usage.Output == 0 {
				t.Fatalf("settled with usage %+v: the provider's usage is lost", o.Usage)
			}
			bill.mu.Lock()
			balance := bill.balance[user]
			bill.mu.Unlock()
			if balance != initial {
				t.Fatalf("balance %d after the turn, want %d: the user was charged", balance, initial)
			}

			// The connection is still up for the next message.
			c.send(protocol.ClientFrame{Type: protocol.TypePing, ID: "alive"})
			c.waitFor("alive", 10*time.Second, "pong", func(fs []map[string]any) bool { return len(fs) > 0 })
		})
	}
}
