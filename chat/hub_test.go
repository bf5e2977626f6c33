package chat

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/maula-ai/maula-chat/internal/testenv"
	"github.com/maula-ai/maula-chat/kv"
	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/protocol"
	"github.com/maula-ai/maula-chat/providers/mockllm"
	"go.mongodb.org/mongo-driver/v2/bson"
)

var paced = mockllm.Options{Chunks: 30, ChunkSize: 8, Delay: 3 * time.Millisecond, ErrorAfter: -1, ResetAfter: -1, InputTokens: 25}

func send(id, provider, msg string) protocol.ClientFrame {
	return protocol.ClientFrame{Type: protocol.TypeChatSend, ID: id, Tool: "ipintel", Provider: provider, Message: msg}
}

// Four turns at once on one socket, on four providers; one is cancelled, the others arrive
// whole, gapless, and stored.
func TestFourTurnsOneSocketCancelOne(t *testing.T) {
	r := newRig(t, rigConfig{mock: paced})
	user, tok := newUser()
	c := r.dial(t, tok)
	provs := map[string]string{"a": "claude", "b": "gpt", "c": "gemini", "d": "mistral"}
	for id, p := range provs {
		c.send(send(id, p, "What does a risk score of 87 mean?"))
	}
	c.waitFor("b", 10*time.Second, "a delta", func(fs []map[string]any) bool {
		for _, f := range fs {
			if f["type"] == protocol.TypeChatDelta {
				return true
			}
		}
		return false
	})
	c.send(protocol.ClientFrame{Type: protocol.TypeChatCancel, ID: "b"})
	want := mockllm.Text(paced)
	for id, p := range provs {
		fs, end := c.terminal(id)
		if fs[0]["type"] != protocol.TypeChatStarted || fs[0]["provider"] != p {
			t.Fatalf("%s: first frame %v, want chat.started from %s", id, fs[0], p)
		}
		text, last := deltaText(t, fs, 0)
		if id == "b" {
			if end["type"] != protocol.TypeChatCancelled {
				t.Fatalf("b ended with %v, want chat.cancelled", end)
			}
			if !strings.HasPrefix(want, text) || text == want {
				t.Fatalf("cancelled text %q is not a strict prefix of the upstream text", text)
			}
			continue
		}
		if end["type"] != protocol.TypeChatDone || end["finishReason"] != "stop" {
			t.Fatalf("%s ended with %v", id, end)
		}
		if text != want {
			t.Fatalf("%s text = %q, want %q", id, text, want)
		}
		if uint64(end["seq"].(float64)) != last {
			t.Fatalf("%s done seq %v, last delta %d", id, end["seq"], last)
		}
		usage := end["usage"].(map[string]any)
		if usage["output"].(float64) != float64(paced.OutputTokens()) || usage["input"].(float64) != 25 {
			t.Fatalf("%s usage %v", id, usage)
		}
	}
	// What chat.done reported is stored: every reply, and the cancelled one marked cancelled.
	var msgs []model.ChatMessage
	cur, err := r.mongo.DB("ipintel-db").Collection("chat_history").Find(context.Background(),
		bson.D{{Key: "userId", Value: user}, {Key: "role", Value: "assistant"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cur.All(context.Background(), &msgs); err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 4 {
		t.Fatalf("stored %d replies, want 4", len(msgs))
	}
	for _, m := range msgs {
		id := clientRequestID(m.RequestID)
		if id == "b" {
			if m.FinishReason != "cancelled" {
				t.Errorf("cancelled reply stored with finish %q", m.FinishReason)
			}
		} else if m.Message != want || m.Tokens.Output != int64(paced.OutputTokens()) {
			t.Errorf("%s stored %q / %d tokens", id, m.Message, m.Tokens.Output)
		}
	}
	// Billing saw each outcome once; the cancelled one produced output and is charged.
	out := r.bill.outcomes()
	if len(out) != 4 {
		t.Fatalf("settled %d turns, want 4", len(out))
	}
	for _, o := range out {
		if !o.ProducedOutput {
			t.Errorf("outcome %+v: produced no output", o)
		}
	}
}

// A conversation continues: the second turn's prompt carries the first turn's history.
func TestHistoryFeedsTheNextTurn(t *testing.T) {
	r := newRig(t, rigConfig{mock: paced})
	_, tok := newUser()
	c := r.dial(t, tok)
	c.send(send("one", "claude", "first question"))
	fs, _ := c.terminal("one")
	session := fs[0]["sessionId"].(string)
	f := send("two", "claude", "second question")
	f.SessionID = session
	c.send(f)
	c.terminal("two")
	c.send(protocol.ClientFrame{Type: protocol.TypeHistoryGet, ID: "h", Tool: "ipintel", SessionID: session})
	hs := c.waitFor("h", 5*time.Second, "history", func(fs []map[string]any) bool { return len(fs) > 0 })
	msgs := hs[0]["messages"].([]any)
	if len(msgs) != 4 {
		t.Fatalf("history has %d messages, want 4", len(msgs))
	}
	if msgs[0].(map[string]any)["message"] != "first question" || msgs[3].(map[string]any)["role"] != "assistant" {
		t.Fatalf("history out of order: %v", msgs)
	}
	c.send(protocol.ClientFrame{Type: protocol.TypeSessionsList, ID: "s", Tool: "ipintel"})
	ss := c.waitFor("s", 5*time.Second, "sessions", func(fs []map[string]any) bool { return len(fs) > 0 })
	list := ss[0]["sessions"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["sessionId"] != session {
		t.Fatalf("sessions = %v", list)
	}
}

// Kill the socket mid-stream and resume on another instance sharing Redis and MongoDB: the
// text arrives exactly once.
func TestResumeOnAnotherInstance(t *testing.T) {
	shared := testenv.Redis(t)
	mongo := sharedMongo
	slow := paced
	slow.Chunks, slow.Delay = 60, 5*time.Millisecond
	a := newRig(t, rigConfig{mock: slow, kv: shared, mongo: mongo})
	b := newRig(t, rigConfig{mock: slow, kv: shared, mongo: mongo})
	_, tok := newUser()
	c1 := a.dial(t, tok)
	c1.send(send("r", "claude", "stream me"))
	fs := c1.waitFor("r", 10*time.Second, "5 deltas", func(fs []map[string]any) bool {
		n := 0
		for _, f := range fs {
			if f["type"] == protocol.TypeChatDelta {
				n++
			}
		}
		return n >= 5
	})
	c1.ws.UnderlyingConn().Close() // the network drops: no close frame
	got, last := deltaText(t, fs, 0)
	c2 := b.dial(t, tok)
	c2.send(protocol.ClientFrame{Type: protocol.TypeChatResume, ID: "r", AfterSeq: last})
	rest, end := c2.terminal("r")
	more, _ := deltaText(t, rest, last)
	if end["type"] != protocol.TypeChatDone {
		t.Fatalf("resumed reply ended with %v", end)
	}
	if got+more != mockllm.Text(slow) {
		t.Fatalf("text after resume = %q\nwant %q", got+more, mockllm.Text(slow))
	}
}

// Disconnect is not cancel: the reply goes on, and a resume on the same instance after the
// reply finished still gets the rest from the buffer.
func TestResumeAfterTheEnd(t *testing.T) {
	r := newRig(t, rigConfig{mock: paced})
	_, tok := newUser()
	c1 := r.dial(t, tok)
	c1.send(send("x", "gpt", "hi"))
	c1.waitFor("x", 5*time.Second, "started", func(fs []map[string]any) bool { return len(fs) > 0 })
	c1.ws.UnderlyingConn().Close()
	// Wait until the turn has finished on the server (it went on without a socket).
	deadline := time.Now().Add(10 * time.Second)
	for r.hub.Stats().Turns > 0 {
		if time.Now().After(deadline) {
			t.Fatal("turn never finished")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c2 := r.dial(t, tok)
	c2.send(protocol.ClientFrame{Type: protocol.TypeChatResume, ID: "x"})
	fs, end := c2.terminal("x")
	text, _ := deltaText(t, fs, 0)
	if end["type"] != protocol.TypeChatDone || text != mockllm.Text(paced) {
		t.Fatalf("resume from 0 after the end: %v, text %q", end, text)
	}
}

// Nobody resumes: after the grace period the upstream is cancelled and billed as cancelled.
func TestAbandonedAfterGrace(t *testing.T) {
	slow := paced
	slow.Chunks, slow.Delay = 400, 10*time.Millisecond
	r := newRig(t, rigConfig{mock: slow, tune: func(o *Options) { o.Grace = 150 * time.Millisecond }})
	_, tok := newUser()
	c := r.dial(t, tok)
	c.send(send("g", "mistral", "hi"))
	c.waitFor("g", 5*time.Second, "a delta", func(fs []map[string]any) bool { return len(fs) > 1 })
	c.ws.UnderlyingConn().Close()
	deadline := time.Now().Add(10 * time.Second)
	for len(r.bill.outcomes()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("abandoned turn never settled")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, o := range r.bill.outcomes() {
		if o.Status != statusAbandoned || !o.ProducedOutput {
			t.Fatalf("outcome %+v, want abandoned with output", o)
		}
	}
	if total, early := r.mock.Stats(); total != 1 || early != 1 {
		t.Fatalf("upstream requests %d, closed early %d: want the upstream cancelled", total, early)
	}
}

// Cancel closes the upstream request promptly.
func TestCancelClosesUpstream(t *testing.T) {
	slow := paced
	slow.Chunks, slow.Delay = 1000, 5*time.Millisecond
	r := newRig(t, rigConfig{mock: slow})
	_, tok := newUser()
	c := r.dial(t, tok)
	c.send(send("k", "grok", "hi"))
	c.waitFor("k", 5*time.Second, "a delta", func(fs []map[string]any) bool { return len(fs) > 1 })
	c.send(protocol.ClientFrame{Type: protocol.TypeChatCancel, ID: "k"})
	_, end := c.terminal("k")
	if end["type"] != protocol.TypeChatCancelled {
		t.Fatalf("ended with %v", end)
	}
	if _, early := r.mock.Stats(); early != 1 {
		t.Fatalf("upstream closed early %d times, want 1", early)
	}
}

// One user can never read, resume, cancel or list another's conversation.
func TestUsersAreIsolated(t *testing.T) {
	slow := paced
	slow.Chunks, slow.Delay = 100, 5*time.Millisecond
	r := newRig(t, rigConfig{mock: slow})
	_, tokA := newUser()
	_, tokB := newUser()
	a := r.dial(t, tokA)
	b := r.dial(t, tokB)
	a.send(send("mine", "claude", "secret question"))
	fs := a.waitFor("mine", 5*time.Second, "started", func(fs []map[string]any) bool { return len(fs) > 0 })
	session := fs[0]["sessionId"].(string)
	b.send(protocol.ClientFrame{Type: protocol.TypeChatResume, ID: "mine"})
	b.send(protocol.ClientFrame{Type: protocol.TypeChatCancel, ID: "mine"})
	bs := b.waitFor("mine", 5*time.Second, "two errors", func(fs []map[string]any) bool { return len(fs) >= 2 })
	for _, f := range bs {
		if f["type"] != protocol.TypeChatError || f["code"] != protocol.CodeNotFound {
			t.Fatalf("other user got %v", f)
		}
	}
	_, end := a.terminal("mine")
	if end["type"] != protocol.TypeChatDone {
		t.Fatalf("owner's reply ended with %v after another user's cancel", end)
	}
	b.send(protocol.ClientFrame{Type: protocol.TypeHistoryGet, ID: "h", Tool: "ipintel", SessionID: session})
	b.send(protocol.ClientFrame{Type: protocol.TypeSessionsList, ID: "s", Tool: "ipintel"})
	h := b.waitFor("h", 5*time.Second, "history", func(fs []map[string]any) bool { return len(fs) > 0 })
	s := b.waitFor("s", 5*time.Second, "sessions", func(fs []map[string]any) bool { return len(fs) > 0 })
	if n := len(h[0]["messages"].([]any)); n != 0 {
		t.Fatalf("other user read %d messages", n)
	}
	if n := len(s[0]["sessions"].([]any)); n != 0 {
		t.Fatalf("other user listed %d sessions", n)
	}
}

func TestBadFramesKeepTheConnection(t *testing.T) {
	r := newRig(t, rigConfig{mock: paced})
	_, tok := newUser()
	c := r.dial(t, tok)
	for i, tc := range []struct {
		frame string
		code  string
	}{
		{`not json`, protocol.CodeBadRequest},
		{`{"type":"nope","id":"1"}`, protocol.CodeBadRequest},
		{`{"type":"chat.send","id":"2","tool":"ipintel","provider":"claude"}`, protocol.CodeBadRequest},
		{`{"type":"chat.send","id":"3","tool":"nosuch","provider":"claude","message":"x"}`, protocol.CodeNotFound},
		{`{"type":"chat.send","id":"4","tool":"ipintel","provider":"nosuch","message":"x"}`, protocol.CodeProviderUnavailable},
		{`{"type":"chat.send","id":"5","tool":"ipintel","provider":"claude","message":"x","maxTokens":"many"}`, protocol.CodeBadRequest},
		{`{"type":"chat.send","id":"6","tool":"ipintel","provider":"claude","message":"x","extra":1}`, protocol.CodeBadRequest},
		{`{"type":"chat.send","id":"7","tool":"ipintel","provider":"claude","message":"x","temperature":9}`, protocol.CodeBadRequest},
		{`{"type":"chat.resume","id":"8","afterSeq":3}`, protocol.CodeNotFound},
		{`{"type":"history.get","id":"9","tool":"ipintel","sessionId":"../../etc"}`, protocol.CodeBadRequest},
	} {
		if err := c.sendRaw([]byte(tc.frame)); err != nil {
			t.Fatal(err)
		}
		id := ""
		var m map[string]any
		if json.Unmarshal([]byte(tc.frame), &m) == nil {
			id, _ = m["id"].(string)
		}
		fs := c.waitFor(id, 5*time.Second, "an error", func(fs []map[string]any) bool {
			for _, f := range fs {
				if f["type"] == protocol.TypeChatError {
					return true
				}
			}
			return false
		})
		var got string
		for _, f := range fs {
			if f["type"] == protocol.TypeChatError {
				got = f["code"].(string)
			}
		}
		if got != tc.code {
			t.Errorf("frame %d %s: code %q, want %q", i, tc.frame, got, tc.code)
		}
	}
	c.send(protocol.ClientFrame{Type: protocol.TypePing, ID: "p"})
	c.waitFor("p", 5*time.Second, "pong", func(fs []map[string]any) bool { return len(fs) > 0 && fs[0]["type"] == protocol.TypePong })
	// Over the read limit: closed with 1009.
	big := `{"type":"ping","id":"` + strings.Repeat("x", 70<<10) + `"}`
	_ = c.sendRaw([]byte(big))
	<-c.done
	if c.closeCode != protocol.CloseTooBig {
		t.Fatalf("close code %d, want 1009", c.closeCode)
	}
}

// An API key of another tool cannot chat with this one.
func TestToolScopedKey(t *testing.T) {
	r := newRig(t, rigConfig{mock: paced})
	u, _ := newUser()
	c := r.dial(t, "k:fraudguard:"+u.Hex())
	c.send(send("s", "claude", "hi"))
	fs := c.waitFor("s", 5*time.Second, "error", func(fs []map[string]any) bool { return len(fs) > 0 })
	if fs[0]["code"] != protocol.CodeForbidden {
		t.Fatalf("got %v", fs[0])
	}
}

func TestFrameAuth(t *testing.T) {
	r := newRig(t, rigConfig{mock: paced, tune: func(o *Options) { o.AuthTimeout = 300 * time.Millisecond }})
	_, tok := newUser()
	ws, err := dialWS(r.srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	c := startClient(t, ws)
	c.send(protocol.ClientFrame{Type: protocol.TypeAuth, Token: tok})
	c.waitFor("", 5*time.Second, "auth.ok", func(fs []map[string]any) bool { return len(fs) > 0 && fs[0]["type"] == protocol.TypeAuthOK })
	c.send(protocol.ClientFrame{Type: protocol.TypePing, ID: "p"})
	c.waitFor("p", 5*time.Second, "pong", func(fs []map[string]any) bool { return len(fs) > 0 })

	for _, first := range []string{"", `{"type":"auth","token":"garbage"}`, `{"type":"ping"}`} {
		ws, err := dialWS(r.srv.URL, "")
		if err != nil {
			t.Fatal(err)
		}
		c := startClient(t, ws)
		if first != "" {
			_ = c.sendRaw([]byte(first))
		}
		<-c.done
		if c.closeCode != protocol.CloseAuthFailed {
			t.Errorf("first frame %q: close %d, want 4401", first, c.closeCode)
		}
	}
	if _, err := dialWS(r.srv.URL, "u:nothex"); err == nil {
		t.Error("bad bearer token upgraded")
	}
}

// A client that never reads is closed (4008) and the server's queue stays bounded.
func TestNeverReadingClientIsClosed(t *testing.T) {
	flood := mockllm.Options{Chunks: 4000, ChunkSize: 1024, ErrorAfter: -1, ResetAfter: -1, InputTokens: 5}
	r := newRig(t, rigConfig{mock: flood, tune: func(o *Options) { o.QueueLimit = 64 << 10; o.WriteTimeout = time.Second }})
	_, tok := newUser()
	ws, err := dialWS(r.srv.URL, tok)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteJSON(send("f", "claude", "flood me")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for r.hub.Stats().Conns > 0 {
		if time.Now().After(deadline) {
			t.Fatal("a client that never reads was never closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Closing the socket is not a cancel: the reply goes on (into the stream buffer) and is
	// settled once, with its output.
	for len(r.bill.outcomes()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the flooding reply was never settled after its socket was closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, o := range r.bill.outcomes() {
		if !o.ProducedOutput {
			t.Fatalf("outcome %+v: want output billed", o)
		}
	}
}

// The coalescing queue: a slow reader's deltas of one request merge, never drop, and never
// jump ahead of that request's other frames.
func TestQueueMergesDeltas(t *testing.T) {
	q := newOutQueue(1 << 20)
	q.mergeAt = 0 // as if the client were far behind
	q.pushDelta("a", 1, "he")
	q.pushDelta("b", 1, "x")
	q.pushDelta("a", 2, "ll")
	q.pushDelta("a", 3, "o")
	q.pushRaw("a", []byte(`{"type":"chat.usage"}`))
	q.pushDelta("a", 4, "!")
	items := q.take(nil)
	if len(items) != 4 {
		t.Fatalf("%d items, want 4", len(items))
	}
	if string(items[0].text) != "hello" || items[0].seq != 3 || string(items[1].text) != "x" {
		t.Fatalf("merged wrong: %q seq %d, %q", items[0].text, items[0].seq, items[1].text)
	}
	if string(items[3].text) != "!" || items[3].seq != 4 {
		t.Fatalf("delta after a raw frame merged across it: %+v", items[3])
	}
	fresh := newOutQueue(1 << 20)
	fresh.pushDelta("a", 1, "x")
	fresh.pushDelta("a", 2, "y")
	if n := len(fresh.take(nil)); n != 2 {
		t.Fatalf("a reader keeping up got %d frames for 2 deltas: merged without a backlog", n)
	}
	small := newOutQueue(100)
	if !small.pushDelta("a", 1, "x") || small.pushRaw("", make([]byte, 200)) {
		t.Fatal("queue over its cap not reported")
	}
}

// 10,000 random and malformed frames: no panic, the connection stays, and no goroutine of
// the hub outlives it.
func TestFuzzFramesNoLeak(t *testing.T) {
	r := newRig(t, rigConfig{mock: mockllm.Options{Chunks: 2, ChunkSize: 4, ErrorAfter: -1, ResetAfter: -1, InputTokens: 1}})
	_, tok := newUser()
	c := r.dial(t, tok)
	rng := rand.New(rand.NewPCG(1, 2))
	types := []string{"chat.send", "chat.cancel", "chat.resume", "history.get", "sessions.list", "ping", "auth", "", "x"}
	fields := []string{"id", "tool", "sessionId", "provider", "model", "message", "analysisId", "maxTokens", "temperature", "afterSeq", "before", "limit", "token"}
	values := []any{"", "ipintel", "claude", "echo", -1, 0, 1e300, 3.5, true, nil, []any{1}, map[string]any{"a": 1}, "2026-01-01T00:00:00Z", "zz", strings.Repeat("é", 50)}
	for i := range 10000 {
		var b []byte
		switch rng.IntN(4) {
		case 0:
			b = make([]byte, rng.IntN(64))
			for j := range b {
				b[j] = byte(rng.IntN(256))
			}
		default:
			m := map[string]any{"type": types[rng.IntN(len(types))]}
			for range rng.IntN(5) {
				m[fields[rng.IntN(len(fields))]] = values[rng.IntN(len(values))]
			}
			if m["type"] == "chat.send" {
				m["id"] = "f" + string(rune('a'+i%26)) // few ids: duplicates on purpose
			}
			b, _ = json.Marshal(m)
		}
		if err := c.sendRaw(b); err != nil {
			t.Fatalf("frame %d: connection lost: %v", i, err)
		}
	}
	c.send(protocol.ClientFrame{Type: protocol.TypePing, ID: "alive"})
	c.waitFor("alive", 20*time.Second, "pong", func(fs []map[string]any) bool { return len(fs) > 0 })
	c.ws.Close()
	<-c.done
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.hub.Shutdown(ctx)
	if leaked := hubGoroutines(); leaked != "" {
		t.Fatalf("hub goroutines left after shutdown:\n%s", leaked)
	}
}

// hubGoroutines returns the stacks of live goroutines running this package's code, after
// giving exiting ones a moment to finish.
func hubGoroutines() string {
	var found string
	for range 100 {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		found = ""
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "maula-chat/chat.") && !strings.Contains(g, "chat.TestFuzzFramesNoLeak") && !strings.Contains(g, "testing.tRunner") {
				found += g + "\n\n"
			}
		}
		if found == "" {
			return ""
		}
		time.Sleep(20 * time.Millisecond)
	}
	return found
}

var _ = websocket.CloseMessage
var _ kv.Store
