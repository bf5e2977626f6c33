package chat

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/protocol"
)

// blockingEvents holds every TurnCompleted until released.
type blockingEvents struct {
	told    chan CompletedTurn
	release chan struct{}
}

func (b *blockingEvents) TurnCompleted(_ context.Context, t CompletedTurn) {
	b.told <- t
	<-b.release
}

// The listeners of a finished turn (webhooks: reads, queue writes) run after the turn gave its
// id back: a client may reuse the id at once after chat.done, even while they still work.
func TestTurnIDIsFreeWhileListenersRun(t *testing.T) {
	ev := &blockingEvents{told: make(chan CompletedTurn, 2), release: make(chan struct{})}
	r := newRig(t, rigConfig{mock: paced, tune: func(o *Options) { o.Events = ev }})
	t.Cleanup(func() {
		select {
		case <-ev.release:
		default:
			close(ev.release)
		}
	})
	user, tok := newUser()
	c := r.dial(t, tok)
	c.send(send("r1", "claude", "first"))
	if _, end := c.terminal("r1"); end["type"] != protocol.TypeChatDone {
		t.Fatalf("first turn ended with %v", end)
	}
	select {
	case got := <-ev.told:
		if got.ID != "r1" || got.Status != statusDone {
			t.Fatalf("listener told %+v", got)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the listener was never told of the turn")
	}
	// The listener is still blocked: the id must be free already.
	c.send(send("r1", "claude", "second"))
	fs := c.waitFor("r1", 20*time.Second, "the second end", func(fs []map[string]any) bool {
		n := 0
		for _, f := range fs {
			if hasTerminal([]map[string]any{f}) {
				n++
			}
		}
		return n == 2
	})
	if end := fs[len(fs)-1]; end["type"] != protocol.TypeChatDone {
		t.Fatalf("the id reused after chat.done ended with %v, want chat.done", end)
	}
	close(ev.release)

	// The resume buffer holds the second reply, not the first one's frames.
	var started []string
	for _, f := range fs {
		if f["type"] == protocol.TypeChatStarted {
			started = append(started, f["messageId"].(string))
		}
	}
	entries, err := r.hub.o.KV.Read(context.Background(), streamKey(user, "r1"), 0, 1, 0)
	if err != nil || len(started) != 2 || len(entries) != 1 {
		t.Fatalf("started %v, buffer %v, %v", started, entries, err)
	}
	if !strings.Contains(string(entries[0].Data), started[1]) {
		t.Fatalf("the buffer begins with %q, want the second reply (message %s)", entries[0].Data, started[1])
	}
}

// A buffer under the id that does not end with a terminal frame belongs to a reply still
// running on another instance (the duplicate check is per instance): it is not dropped.
func TestReusedIDKeepsABufferStillGrowing(t *testing.T) {
	r := newRig(t, rigConfig{mock: paced})
	user, tok := newUser()
	foreign := []byte{entryStarted, '{', '}'}
	if err := r.hub.o.KV.Append(context.Background(), streamKey(user, "r1"), 1, foreign, time.Minute); err != nil {
		t.Fatal(err)
	}
	c := r.dial(t, tok)
	c.send(send("r1", "claude", "hello"))
	c.terminal("r1")
	es, err := r.hub.o.KV.Read(context.Background(), streamKey(user, "r1"), 0, 1, 0)
	if err != nil || len(es) != 1 || string(es[0].Data) != string(foreign) {
		t.Fatalf("the other instance's buffer was replaced: %v %v", es, err)
	}
}
