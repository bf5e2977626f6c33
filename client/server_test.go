package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/maula-ai/maula-chat/client"
	"github.com/maula-ai/maula-chat/internal/testserver"
	"github.com/maula-ai/maula-chat/protocol"
	"github.com/maula-ai/maula-chat/providers/mockllm"
	"go.uber.org/goleak"
)

// slowMock streams long enough (40 chunks × 10 ms) for a reply to be cancelled or cut mid-way.
var slowMock = mockllm.Options{Chunks: 40, ChunkSize: 6, Delay: 10 * time.Millisecond, ErrorAfter: -1, ResetAfter: -1, InputTokens: 40}

var userSeq atomic.Int64

// account is a registered user.
type account struct {
	Token   string
	APIKeys map[string]string // tool → key text
}

// register creates a fresh user on the real server (each test its own, so plan limits and
// credits never leak between tests).
func register(t testing.TB, base string) account {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"email": fmt.Sprintf("sdk%d-%d@example.com", time.Now().UnixNano(), userSeq.Add(1)),
		"password": "correct horse battery", "name": "SDK test"})
	resp, err := http.Post(base+"/auth/register", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Token   string `json:"token"`
		APIKeys []struct {
			ToolName string `json:"toolName"`
			Key      string `json:"key"`
		} `json:"apiKeys"`
	}
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("register: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	a := account{Token: out.Token, APIKeys: map[string]string{}}
	for _, k := range out.APIKeys {
		a.APIKeys[k.ToolName] = k.Key
	}
	return a
}

// leakCheck snapshots the goroutines now and, at cleanup, fails on any new one still alive
// (after the Client was closed). The test process also serves the fake upstream, whose
// keep-alive connections are not ours.
func leakCheck(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, ignore,
			goleak.IgnoreAnyFunction("net/http.(*conn).serve"),
			goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
			goleak.IgnoreAnyFunction("github.com/maula-ai/maula-chat/providers/mockllm.(*Server).ServeHTTP"))
	})
}

func dial(t *testing.T, base string, o client.Options) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, base, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readAll(s *client.Stream) string {
	var b strings.Builder
	for t := range s.Deltas() {
		b.WriteString(t)
	}
	return b.String()
}

// TestAgainstServer runs the SDK against the real binary with the fake upstream; the
// subtests share one server (starting one costs seconds) and each registers its own user.
func TestAgainstServer(t *testing.T) {
	srv := testserver.Start(t, slowMock)
	want := mockllm.Text(slowMock)

	t.Run("ThreeChatsCancelOne", func(t *testing.T) {
		leakCheck(t)
		acct := register(t, srv.URL)
		c := dial(t, srv.URL, client.Options{Token: acct.Token})
		ctx := context.Background()
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		streams := make([]*client.Stream, 3)
		for i := range streams {
			sctx := ctx
			if i == 1 {
				sctx = cctx
			}
			s, err := c.Chat(sctx, client.ChatRequest{Tool: "ipintel", Provider: "claude", Message: fmt.Sprintf("question %d", i)})
			if err != nil {
				t.Fatal(err)
			}
			streams[i] = s
		}
		var wg sync.WaitGroup
		texts := make([]string, 3)
		for i, s := range streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var b strings.Builder
				for text := range s.Deltas() {
					b.WriteString(text)
					if i == 1 && b.Len() > 0 {
						cancel() // after the first delta: mid-reply
					}
				}
				texts[i] = b.String()
			}()
		}
		wg.Wait()
		for i, s := range streams {
			res, err := s.Result()
			if i == 1 {
				if !errors.Is(err, context.Canceled) || !res.Cancelled {
					t.Fatalf("cancelled chat: %+v, %v", res, err)
				}
				if len(texts[1]) == 0 || len(texts[1]) >= len(want) || !strings.HasPrefix(want, texts[1]) {
					t.Fatalf("cancelled chat got %d bytes of %d: %q", len(texts[1]), len(want), texts[1])
				}
				if res.Usage.Output == 0 || res.CostMicros == 0 {
					t.Errorf("cancelled chat billed nothing: %+v", res)
				}
				continue
			}
			if err != nil {
				t.Fatalf("chat %d: %v", i, err)
			}
			if texts[i] != want {
				t.Fatalf("chat %d text %q, want %q", i, texts[i], want)
			}
			if res.FinishReason != "stop" || res.SessionID == "" || res.MessageID == "" || res.CostMicros <= 0 ||
				res.Usage.Output != int64(slowMock.OutputTokens()) || res.Seq != uint64(slowMock.Chunks) {
				t.Fatalf("chat %d result %+v", i, res)
			}
			if res.CreditsLeft <= 0 {
				t.Errorf("credits left %d", res.CreditsLeft)
			}
		}
		// What was said is stored: the conversation and its two messages.
		res0, _ := streams[0].Result()
		list, err := c.Sessions(ctx, "ipintel", client.Page{})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, s := range list.Sessions {
			found = found || s.SessionID == res0.SessionID
		}
		if !found {
			t.Fatalf("session %s not in %+v", res0.SessionID, list.Sessions)
		}
		h, err := c.History(ctx, "ipintel", res0.SessionID, client.Page{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(h.Messages) != 2 || h.Messages[0].Role != "user" || h.Messages[1].Message != want {
			t.Fatalf("history %+v", h.Messages)
		}
		// Continue the conversation.
		s, err := c.Chat(ctx, client.ChatRequest{Tool: "ipintel", Provider: "gpt", Message: "and then?", SessionID: res0.SessionID})
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(s); got != want {
			t.Fatalf("follow-up text %q", got)
		}
		if res, err := s.Result(); err != nil || res.SessionID != res0.SessionID {
			t.Fatalf("follow-up %+v %v", res, err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Chat(ctx, client.ChatRequest{Tool: "ipintel", Provider: "claude", Message: "x"}); !errors.Is(err, client.ErrClosed) {
			t.Fatalf("chat after close: %v", err)
		}
	})

	t.Run("DisconnectMidReplyResumes", func(t *testing.T) {
		leakCheck(t)
		acct := register(t, srv.URL)
		var mu sync.Mutex
		var conns []net.Conn
		d := &websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				mu.Lock()
				conns = append(conns, nc)
				mu.Unlock()
			}
			return nc, err
		}}
		c := dial(t, srv.URL, client.Options{Token: acct.Token, Dialer: d})
		ctx := context.Background()
		s1, err := c.Chat(ctx, client.ChatRequest{Tool: "ipintel", Provider: "claude", Message: "first"})
		if err != nil {
			t.Fatal(err)
		}
		s2, err := c.Chat(ctx, client.ChatRequest{Tool: "fraudguard", Provider: "mistral", Message: "second"})
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		cut := false
		for text := range s1.Deltas() {
			b.WriteString(text)
			if !cut && b.Len() >= 3*slowMock.ChunkSize {
				cut = true
				mu.Lock()
				conns[0].Close() // the network drops mid-reply
				mu.Unlock()
			}
		}
		if got := b.String(); got != want {
			t.Fatalf("after the drop: got %d bytes %q, want %d bytes", len(got), got, len(want))
		}
		if got := readAll(s2); got != want {
			t.Fatalf("second chat after the drop: %q", got)
		}
		for _, s := range []*client.Stream{s1, s2} {
			if res, err := s.Result(); err != nil || res.Seq != uint64(slowMock.Chunks) {
				t.Fatalf("result %+v %v", res, err)
			}
		}
		if n := c.Stats().Reconnects; n != 1 {
			t.Fatalf("%d reconnects, want 1", n)
		}
		c.Close()
	})

	t.Run("Unauthorized", func(t *testing.T) {
		_, err := client.Dial(context.Background(), srv.URL, client.Options{Token: "not-a-token"})
		if !errors.Is(err, client.ErrUnauthorized) {
			t.Fatalf("got %v, want ErrUnauthorized", err)
		}
	})

	t.Run("APIKeyOfAnotherTool", func(t *testing.T) {
		acct := register(t, srv.URL)
		c := dial(t, srv.URL, client.Options{APIKey: acct.APIKeys["fraudguard"]})
		s, err := c.Chat(context.Background(), client.ChatRequest{Tool: "ipintel", Provider: "claude", Message: "x"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Result(); !errors.Is(err, client.ErrForbidden) {
			t.Fatalf("got %v, want ErrForbidden", err)
		}
		s, err = c.Chat(context.Background(), client.ChatRequest{Tool: "fraudguard", Provider: "nosuch", Message: "x"})
		if err != nil {
			t.Fatal(err)
		}
		var pe *client.ProviderError
		if _, err := s.Result(); !errors.As(err, &pe) || pe.Code != protocol.CodeProviderUnavailable {
			t.Fatalf("got %v, want a ProviderError", err)
		}
	})
}

// TestLimits: a plan with one credit and two messages a minute, on its own server.
func TestLimits(t *testing.T) {
	plan := `{"plans":[{"name":"free","aiCredits":1,"maxAPIRequests":1000,"maxTools":50,"supportLevel":"basic",
"chatMessagesPerMinute":2,"apiKeyRequestsPerMinute":60,"apiKeyRequestsPerDay":1000,"analysisRetentionDays":7,
"price":0,"currency":"USD","interval":"monthly"}]}`
	path := filepath.Join(t.TempDir(), "plans.json")
	if err := os.WriteFile(path, []byte(plan), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := testserver.Start(t, testserver.DefaultMock, "MAULA_PLANS="+path)
	leakCheck(t)
	acct := register(t, srv.URL)
	c := dial(t, srv.URL, client.Options{Token: acct.Token})
	ctx := context.Background()
	chat := func() (*client.Result, error) {
		s, err := c.Chat(ctx, client.ChatRequest{Tool: "ipintel", Provider: "claude", Message: "hello"})
		if err != nil {
			t.Fatal(err)
		}
		readAll(s)
		return s.Result()
	}
	if res, err := chat(); err != nil || res.CreditsLeft != 0 {
		t.Fatalf("first chat: %+v %v", res, err)
	}
	_, err := chat()
	if !errors.Is(err, client.ErrInsufficientCredits) {
		t.Fatalf("second chat: %v, want ErrInsufficientCredits", err)
	}
	_, err = chat()
	var rl *client.RateLimitError
	if !errors.As(err, &rl) || rl.RetryAfter <= 0 || rl.RetryAfter > time.Minute {
		t.Fatalf("third chat: %v, want a RateLimitError with RetryAfter", err)
	}
	c.Close()
}
