package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/maula-ai/maula-chat/internal/testserver"
	"github.com/maula-ai/maula-chat/protocol"
	"github.com/maula-ai/maula-chat/providers/mockllm"
)

// Bad settings stop the start with exit code 2 and one line naming the setting.
func TestBadSettingsExit2(t *testing.T) {
	bin := testserver.Binary(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	unwritable := t.TempDir() + "/file"
	if err := os.WriteFile(unwritable, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, setting string
		env           []string
	}{
		{"unparsable mongo uri", "MONGODB_URI", []string{"MONGODB_URI=not-a-uri"}},
		{"port in use", "MAULA_ADDR", []string{"MAULA_ADDR=" + busy.Addr().String()}},
		{"data dir is a file", "MAULA_DATA_DIR", []string{"MAULA_DATA_DIR=" + unwritable}},
		{"bad redis url", "REDIS_URL", []string{"REDIS_URL=http://x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, "serve")
			cmd.Env = append(os.Environ(), "MAULA_ADDR=127.0.0.1:0", "MAULA_DATA_DIR="+t.TempDir())
			cmd.Env = append(cmd.Env, tc.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("exit: %v, want code 2; stderr:\n%s", err, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			last := lines[len(lines)-1]
			if !strings.Contains(last, tc.setting) {
				t.Fatalf("last line %q does not name %s", last, tc.setting)
			}
		})
	}
}

// SIGTERM while a reply streams: the process exits 0 within 10 s, the client hears 1001, and
// the stored messages are there after a restart on the same data dir.
func TestSIGTERMUnderLoadThenRestart(t *testing.T) {
	slow := mockllm.Options{Chunks: 2000, ChunkSize: 8, Delay: 5 * time.Millisecond, ErrorAfter: -1, ResetAfter: -1, InputTokens: 10}
	s := testserver.Start(t, slow, "MAULA_SHUTDOWN_TIMEOUT=2s")
	tok := registerAt(t, s.URL, "sigterm@example.com")
	ws := dialAt(t, s.URL, tok)
	defer ws.Close()
	if err := ws.WriteJSON(protocol.ClientFrame{Type: protocol.TypeChatSend, ID: "long", Tool: "ipintel", Provider: "claude", Message: "keep talking"}); err != nil {
		t.Fatal(err)
	}
	var session string
	for session == "" {
		var m map[string]any
		if err := ws.ReadJSON(&m); err != nil {
			t.Fatal(err)
		}
		if m["type"] == protocol.TypeChatStarted {
			session = m["sessionId"].(string)
		}
	}
	start := time.Now()
	if err := s.Stop(); err != nil {
		t.Fatalf("after SIGTERM: %v, want exit 0", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %s to stop", d)
	}
	// The client was told: the reply ended (cancelled by the shutdown), then close 1001.
	var ended bool
	for {
		var m map[string]any
		err := ws.ReadJSON(&m)
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			if ce.Code != protocol.CloseGoingAway {
				t.Fatalf("close code %d, want 1001", ce.Code)
			}
			break
		}
		if err != nil {
			t.Fatalf("read after SIGTERM: %v", err)
		}
		if m["type"] == protocol.TypeChatCancelled || m["type"] == protocol.TypeChatDone {
			ended = true
		}
	}
	if !ended {
		t.Fatal("the running reply never ended before the socket closed")
	}
	// Restart on the same data dir: the cancelled reply was stored before it was reported.
	s2 := testserver.StartOn(t, slow, s.DataDir)
	tok2 := loginAt(t, s2.URL, "sigterm@example.com")
	req, _ := http.NewRequest("GET", s2.URL+"/api/ipintel/chat/sessions/"+session+"/messages", nil)
	req.Header.Set("Authorization", "Bearer "+tok2)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Messages []protocol.ChatMessage `json:"messages"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if len(out.Messages) != 2 || out.Messages[1].FinishReason != "cancelled" || out.Messages[1].Message == "" {
		t.Fatalf("after restart: %+v", out.Messages)
	}
}

func registerAt(t *testing.T, base, email string) string {
	t.Helper()
	return tokenFrom(t, "register", base+"/auth/register", map[string]string{"email": email, "password": "correct horse battery", "name": "T"})
}

func loginAt(t *testing.T, base, email string) string {
	t.Helper()
	return tokenFrom(t, "login", base+"/auth/login", map[string]string{"email": email, "password": "correct horse battery"})
}

func tokenFrom(t *testing.T, what, url string, body any) string {
	t.Helper()
	code, _, out := doJSON(t, "POST", url, "", body)
	tok, _ := out["token"].(string)
	if tok == "" {
		t.Fatalf("%s: %d %v", what, code, out)
	}
	return tok
}

func dialAt(t *testing.T, base, tok string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}
	ws, resp, err := d.Dial("ws"+strings.TrimPrefix(base, "http")+"/ai/chat", http.Header{"Authorization": {"Bearer " + tok}})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

// With the embedded store in its process, the server runs twice as many Ps as CPUs (the
// store's work then shares the CPUs with the turns at the kernel's finer grain); GOMAXPROCS
// in the environment is left as set.
func TestEmbeddedStoreGOMAXPROCS(t *testing.T) {
	cases := []struct {
		name string
		env  []string
		want int
	}{
		{"default", nil, 2 * runtime.GOMAXPROCS(0)},
		{"set", []string{"GOMAXPROCS=3"}, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.env == nil && os.Getenv("GOMAXPROCS") != "" {
				t.Skip("GOMAXPROCS is set for the tests, so for the server too")
			}
			s := testserver.Start(t, mockllm.Options{}, c.env...)
			resp, err := http.Get(s.URL + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			var got int
			for line := range strings.Lines(string(body)) {
				if v, ok := strings.CutPrefix(line, "go_sched_gomaxprocs_threads "); ok {
					got, _ = strconv.Atoi(strings.TrimSpace(v))
				}
			}
			if got != c.want {
				t.Fatalf("GOMAXPROCS %d, want %d", got, c.want)
			}
		})
	}
}
