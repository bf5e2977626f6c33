package chat

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/maula-ai/maula-chat/httpx"
	"github.com/maula-ai/maula-chat/internal/testenv"
	"github.com/maula-ai/maula-chat/kv"
	"github.com/maula-ai/maula-chat/protocol"
	"github.com/maula-ai/maula-chat/providers"
	"github.com/maula-ai/maula-chat/providers/mockllm"
	"github.com/maula-ai/maula-chat/store"
	"github.com/maula-ai/maula-chat/tools"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// tokenAuth authenticates "Bearer u:<userhex>" (a session) and "Bearer k:<tool>:<userhex>" (a
// tool API key). The real auth service is exercised end to end in cmd/maula-chat's tests.
type tokenAuth struct{}

func (tokenAuth) parse(tok string) (Identity, error) {
	parts := strings.Split(tok, ":")
	var id Identity
	var hex string
	switch {
	case len(parts) == 2 && parts[0] == "u":
		hex = parts[1]
	case len(parts) == 3 && parts[0] == "k":
		id.Tool, hex = parts[1], parts[2]
	default:
		return id, errors.New("bad token")
	}
	oid, err := bson.ObjectIDFromHex(hex)
	if err != nil {
		return id, err
	}
	id.UserID = oid
	return id, nil
}

func (a tokenAuth) Authenticate(r *http.Request) (Identity, error) {
	id, err := a.parse(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	if err != nil {
		return id, httpx.Errorf(http.StatusUnauthorized, "unauthorized", "bad token")
	}
	return id, nil
}

func (a tokenAuth) AuthenticateToken(_ context.Context, tok string) (Identity, error) {
	return a.parse(tok)
}
func (tokenAuth) AllowChat(context.Context, Identity) (bool, time.Duration, error) {
	return true, 0, nil
}

// ledgerBiller keeps balances in memory with per_call rules: one credit per call that
// produced output.
type ledgerBiller struct {
	mu      sync.Mutex
	balance map[bson.ObjectID]int64
	settled map[string]Outcome
	initial int64
}

func newLedgerBiller(initial int64) *ledgerBiller {
	return &ledgerBiller{balance: map[bson.ObjectID]int64{}, settled: map[string]Outcome{}, initial: initial}
}

func (b *ledgerBiller) Reserve(_ context.Context, r ReserveRequest) (Reservation, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	bal, ok := b.balance[r.UserID]
	if !ok {
		bal = b.initial
	}
	if bal < 1 {
		return Reservation{}, ErrInsufficientCredits
	}
	b.balance[r.UserID] = bal - 1
	return Reservation{Handle: r, MaxTokens: r.MaxTokens, CreditsLeft: bal - 1}, nil
}

func (b *ledgerBiller) Settle(_ context.Context, res Reservation, o Outcome) (Settlement, error) {
	r := res.Handle.(ReserveRequest)
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, dup := b.settled[r.RequestID]; !dup {
		b.settled[r.RequestID] = o
		if !o.ProducedOutput {
			b.balance[r.UserID]++
		}
	}
	return Settlement{CreditsLeft: b.balance[r.UserID]}, nil
}

func (b *ledgerBiller) LiveCost(res Reservation, _, _ string, _ providers.Usage) (int64, int64) {
	return 0, res.CreditsLeft
}

func (b *ledgerBiller) outcomes() map[string]Outcome {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]Outcome{}
	for k, v := range b.settled {
		out[k] = v
	}
	return out
}

// rig is a hub on an httptest server with its stores and fake upstream.
type rig struct {
	hub   *Hub
	srv   *httptest.Server
	mock  *mockllm.Server
	mongo *store.Store
	bill  *ledgerBiller
	opts  mockllm.Options
}

type rigConfig struct {
	mock   mockllm.Options
	kv     kv.Store
	mongo  *store.Store
	tune   func(*Options)
	biller *ledgerBiller
}

func newRig(t *testing.T, rc rigConfig) *rig {
	t.Helper()
	if rc.mongo == nil {
		rc.mongo = sharedMongo
	}
	if rc.kv == nil {
		rc.kv = kv.NewMemory()
	}
	if rc.biller == nil {
		rc.biller = newLedgerBiller(1000)
	}
	reg, mock := testenv.MockLLM(t, rc.mock)
	o := Options{Auth: tokenAuth{}, Billing: rc.biller, Providers: reg, Prices: reg.Prices(), Mongo: rc.mongo,
		KV: rc.kv, Tools: tools.Default(), Grace: 5 * time.Second}
	if rc.tune != nil {
		rc.tune(&o)
	}
	hub, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /ai/chat", hub)
	srv := httptest.NewServer(mux)
	r := &rig{hub: hub, srv: srv, mock: mock, mongo: rc.mongo, bill: rc.biller, opts: rc.mock}
	t.Cleanup(func() {
		srv.CloseClientConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		hub.Shutdown(ctx)
		srv.Close()
	})
	return r
}

// client is a test WebSocket client that sorts incoming frames by request id.
type client struct {
	t         *testing.T
	ws        *websocket.Conn
	mu        sync.Mutex
	byID      map[string][]map[string]any
	all       []map[string]any
	wake      chan struct{}
	done      chan struct{}
	closeCode int
}

func (r *rig) dial(t *testing.T, token string) *client {
	t.Helper()
	c, err := dialWS(r.srv.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	return startClient(t, c)
}

func dialWS(base, token string) (*websocket.Conn, error) {
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	c, resp, err := d.Dial("ws"+strings.TrimPrefix(base, "http")+"/ai/chat", h)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	return c, err
}

func startClient(t *testing.T, ws *websocket.Conn) *client {
	c := &client{t: t, ws: ws, byID: map[string][]map[string]any{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					c.mu.Lock()
					c.closeCode = ce.Code
					c.mu.Unlock()
				}
				c.signal()
				return
			}
			var m map[string]any
			if err := json.Unmarshal(data, &m); err != nil {
				t.Errorf("server sent invalid JSON %q", data)
				continue
			}
			id, _ := m["id"].(string)
			c.mu.Lock()
			c.byID[id] = append(c.byID[id], m)
			c.all = append(c.all, m)
			c.mu.Unlock()
			c.signal()
		}
	}()
	t.Cleanup(func() { ws.Close(); <-c.done })
	return c
}

func (c *client) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *client) send(v any) {
	c.t.Helper()
	if err := c.ws.WriteJSON(v); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) sendRaw(b []byte) error { return c.ws.WriteMessage(websocket.TextMessage, b) }

// waitFor waits until pred holds over the frames of id, or fails after d.
func (c *client) waitFor(id string, d time.Duration, what string, pred func([]map[string]any) bool) []map[string]any {
	c.t.Helper()
	deadline := time.After(d)
	for {
		c.mu.Lock()
		frames := append([]map[string]any(nil), c.byID[id]...)
		c.mu.Unlock()
		if pred(frames) {
			return frames
		}
		select {
		case <-c.wake:
		case <-c.done:
			c.mu.Lock()
			frames = append([]map[string]any(nil), c.byID[id]...)
			c.mu.Unlock()
			if pred(frames) {
				return frames
			}
			c.t.Fatalf("connection ended waiting for %s of %q; frames: %v", what, id, frames)
		case <-deadline:
			c.t.Fatalf("timed out waiting for %s of %q; frames: %v", what, id, frames)
		}
	}
}

func isTerminal(m map[string]any) bool {
	switch m["type"] {
	case protocol.TypeChatDone, protocol.TypeChatCancelled, protocol.TypeChatError:
		return true
	}
	return false
}

func hasTerminal(fs []map[string]any) bool {
	return len(fs) > 0 && isTerminal(fs[len(fs)-1])
}

func (c *client) terminal(id string) ([]map[string]any, map[string]any) {
	c.t.Helper()
	fs := c.waitFor(id, 20*time.Second, "the end", hasTerminal)
	return fs, fs[len(fs)-1]
}

// text joins the deltas of frames and checks their seq rise by one from after+1.
func deltaText(t *testing.T, fs []map[string]any, after uint64) (string, uint64) {
	t.Helper()
	var b strings.Builder
	seq := after
	for _, f := range fs {
		if f["type"] != protocol.TypeChatDelta {
			continue
		}
		s := uint64(f["seq"].(float64))
		if s != seq+1 {
			t.Fatalf("seq %d after %d: not gapless", s, seq)
		}
		seq = s
		b.WriteString(f["text"].(string))
	}
	return b.String(), seq
}

func newUser() (bson.ObjectID, string) {
	u := bson.NewObjectID()
	return u, "u:" + u.Hex()
}
