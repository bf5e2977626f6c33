package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/maula-ai/maula-chat/config"
	"github.com/maula-ai/maula-chat/protocol"
	"github.com/maula-ai/maula-chat/providers/mockllm"
)

// e2e is the whole binary's server, in process, on a loopback port, with the fake upstream
// behind every provider.
type e2e struct {
	base string
	mock *mockllm.Server
	opts mockllm.Options
	stop func() error
}

func startE2E(t *testing.T, env map[string]string) *e2e {
	t.Helper()
	opts := mockllm.Options{Chunks: 12, ChunkSize: 6, Delay: time.Millisecond, ErrorAfter: -1, ResetAfter: -1, InputTokens: 40}
	mock := mockllm.New(opts)
	up := httptest.NewServer(mock)
	t.Cleanup(up.Close)
	t.Setenv("ANTHROPIC_API_KEY", "test")
	t.Setenv("ANTHROPIC_BASE_URL", up.URL)
	t.Setenv("OPENAI_API_KEY", "test")
	t.Setenv("OPENAI_BASE_URL", up.URL+"/v1")
	t.Setenv("MAULA_ECHO_PROVIDER", "1")
	vars := map[string]string{"MAULA_DATA_DIR": t.TempDir(), "MAULA_BCRYPT_COST": "4"}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := config.Load(nil, func(k string) string { return vars[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { errc <- serveOn(ctx, cfg, log, ln, func(s string) { ready <- s }) }()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("server stopped at start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("server not ready in 60 s")
	}
	e := &e2e{base: "http://" + ln.Addr().String(), mock: mock, opts: opts}
	stopped := false
	e.stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-errc
	}
	t.Cleanup(func() { _ = e.stop() })
	return e
}

func (e *e2e) do(t *testing.T, method, path, token string, body any) (int, map[string]any) {
	t.Helper()
	code, _, out := doJSON(t, method, e.base+path, token, body)
	return code, out
}

// doJSON sends body as JSON with a bearer token (when given) and decodes the JSON answer; the
// tests of this package share it.
func doJSON(t testing.TB, method, url, token string, body any) (int, http.Header, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, resp.Header, out
}

func (e *e2e) register(t *testing.T, email string) string {
	t.Helper()
	code, out := e.do(t, "POST", "/auth/register", "", map[string]string{"email": email, "password": "correct horse battery", "name": "E2E"})
	if code != http.StatusCreated {
		t.Fatalf("register: %d %v", code, out)
	}
	return out["token"].(string)
}

func (e *e2e) dial(t *testing.T, token string) (*websocket.Conn, error) {
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	c, resp, err := d.Dial("ws"+strings.TrimPrefix(e.base, "http")+"/ai/chat", h)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	return c, err
}

// readUntilEnd reads frames of id until its terminal frame.
func readUntilEnd(t *testing.T, c *websocket.Conn, id string) (string, map[string]any) {
	t.Helper()
	var text strings.Builder
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		var m map[string]any
		if err := c.ReadJSON(&m); err != nil {
			t.Fatalf("reading %s: %v", id, err)
		}
		if m["id"] != id {
			continue
		}
		switch m["type"] {
		case protocol.TypeChatDelta:
			text.WriteString(m["text"].(string))
		case protocol.TypeChatDone, protocol.TypeChatCancelled, protocol.TypeChatError:
			return text.String(), m
		}
	}
}

// The seed's "User Chats with AI" flow through the real auth, billing and hub: register, chat,
// see the reply stored and the credit spent; log out and be refused.
func TestChatEndToEnd(t *testing.T) {
	e := startE2E(t, nil)
	token := e.register(t, "e2e@example.com")
	code, sub := e.do(t, "GET", "/auth/me", token, nil)
	if code != http.StatusOK {
		t.Fatalf("/auth/me: %d %v", code, sub)
	}
	c, err := e.dial(t, token)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteJSON(protocol.ClientFrame{Type: protocol.TypeChatSend, ID: "q1", Tool: "ipintel", Provider: "claude", Message: "Is 203.0.113.7 risky?"}); err != nil {
		t.Fatal(err)
	}
	text, end := readUntilEnd(t, c, "q1")
	if end["type"] != protocol.TypeChatDone {
		t.Fatalf("turn ended with %v", end)
	}
	if text != mockllm.Text(e.opts) {
		t.Fatalf("text %q, want %q", text, mockllm.Text(e.opts))
	}
	if end["costMicros"].(float64) <= 0 {
		t.Fatalf("a priced model cost nothing: %v", end)
	}
	first := end["creditsLeft"].(float64)
	if err := c.WriteJSON(protocol.ClientFrame{Type: protocol.TypeChatSend, ID: "q2", Tool: "ipintel", Provider: "gpt", Message: "and now?"}); err != nil {
		t.Fatal(err)
	}
	_, end2 := readUntilEnd(t, c, "q2")
	if end2["creditsLeft"].(float64) != first-1 {
		t.Fatalf("credits %v after %v: per_call charges one per reply", end2["creditsLeft"], first)
	}
	// The conversation is listed over REST.
	code, list := e.do(t, "GET", "/api/ipintel/chat/sessions", token, nil)
	if code != http.StatusOK || len(list["sessions"].([]any)) != 2 {
		t.Fatalf("sessions: %d %v", code, list)
	}
	// After logout the token opens no socket.
	if code, _ := e.do(t, "POST", "/auth/logout", token, nil); code >= 300 {
		t.Fatalf("logout: %d", code)
	}
	if _, err := e.dial(t, token); err == nil {
		t.Fatal("a logged-out token opened the chat socket")
	}
	if err := e.stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}
