package mockllm

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTextIsChunks(t *testing.T) {
	o := Options{Chunks: 40, ChunkSize: 9}
	var b strings.Builder
	for i := 0; i < o.Chunks; i++ {
		b.WriteString(ChunkText(o, i))
	}
	if b.String() != Text(o) || len(Text(o)) != 360 {
		t.Fatalf("chunks do not add up to Text")
	}
	big := Options{Chunks: 1, ChunkSize: 70000}
	if len(Text(big)) != 70000 || !strings.HasPrefix(Text(big), Pattern) {
		t.Fatal("large text wrong")
	}
}

// TestNonStreaming checks the non-streaming answer of each endpoint, with
// options given in the query.
func TestNonStreaming(t *testing.T) {
	srv := httptest.NewServer(New(Options{}))
	defer srv.Close()
	o := DefaultOptions
	o.Chunks, o.ChunkSize = 3, 5
	q := "?chunks=3&size=5&cache_read=7"
	cases := []struct {
		path, body string
		text       func(m map[string]any) string
	}{
		{"/v1/messages" + q, `{"model":"claude-x","stream":false}`, func(m map[string]any) string {
			return m["content"].([]any)[0].(map[string]any)["text"].(string)
		}},
		{"/v1/chat/completions" + q, `{"model":"gpt-x"}`, func(m map[string]any) string {
			return m["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"].(string)
		}},
		{"/v1beta/models/gemini-x:generateContent" + q, `{}`, func(m map[string]any) string {
			return m["candidates"].([]any)[0].(map[string]any)["content"].(map[string]any)["parts"].([]any)[0].(map[string]any)["text"].(string)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := http.Post(srv.URL+tc.path, "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var m map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
				t.Fatal(err)
			}
			if got := tc.text(m); got != Text(o) {
				t.Fatalf("text = %q, want %q", got, Text(o))
			}
		})
	}
}

func TestEarlyCloseRecorded(t *testing.T) {
	m := New(Options{})
	srv := httptest.NewServer(m)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"m","stream":true}`))
	req.Header.Set(HeaderName, "chunks=1000&delay=10ms&id=early")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := io.ReadAtLeast(resp.Body, buf, 1); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	cancel()
	resp.Body.Close()
	info, err := m.Wait(context.Background(), "early")
	if err != nil {
		t.Fatal(err)
	}
	if !info.ClosedEarly || info.ClosedAt.Sub(at) > 100*time.Millisecond || info.ChunksSent >= 1000 {
		t.Fatalf("info = %+v", info)
	}
	if total, early := m.Stats(); total != 1 || early != 1 {
		t.Fatalf("stats = %d, %d", total, early)
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestBadOptions(t *testing.T) {
	srv := httptest.NewServer(New(Options{}))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/messages?chunks=x", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status = %d", resp.StatusCode)
	}
}
