package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/maula-ai/maula-chat/client"
	"github.com/maula-ai/maula-chat/protocol"
)

// The SDK's added cost per delta: the same server writes the same chat.delta frames over
// loopback to (1) a bare gorilla/websocket read loop, (2) that loop plus decoding each frame
// into protocol.Delta, and (3) the SDK (decode, demultiplex, buffer, hand to the consumer
// goroutine through Stream.Next). The difference per op is what the SDK adds per delta.
//
//	go test -run '^$' -bench Delta -benchmem ./client/

const benchText = "The quick brown fox jumps over "

// deltaServer answers the first client frame (or, with raw, the upgrade) with n deltas.
func deltaServer(b *testing.B, n int, raw bool) *httptest.Server {
	up := websocket.Upgrader{Subprotocols: []string{protocol.Subprotocol}}
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		id := "raw"
		if !raw {
			var f protocol.ClientFrame
			if ws.ReadJSON(&f) != nil {
				return
			}
			id = f.ID
			_ = ws.WriteJSON(protocol.Started{Type: protocol.TypeChatStarted, ID: id, SessionID: "s", MessageID: "m", Provider: "claude", Model: "m"})
		}
		for i := 1; i <= n; i++ {
			msg := fmt.Appendf(nil, `{"type":"chat.delta","id":%q,"seq":%d,"text":%q}`, id, i, benchText)
			if ws.WriteMessage(websocket.TextMessage, msg) != nil {
				return
			}
		}
		if !raw {
			_ = ws.WriteJSON(protocol.Done{Type: protocol.TypeChatDone, ID: id, Seq: uint64(n), FinishReason: "stop"})
		}
		_, _, _ = ws.ReadMessage() // until the client goes
	}))
}

func wsURL(s *httptest.Server) string { return "ws" + strings.TrimPrefix(s.URL, "http") + "/ai/chat" }

func benchRaw(b *testing.B, decode bool) {
	srv := deltaServer(b, b.N, true)
	defer srv.Close()
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}
	ws, _, err := d.Dial(wsURL(srv), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer ws.Close()
	b.ReportAllocs()
	b.ResetTimer()
	total := 0
	for i := 0; i < b.N; i++ {
		_, data, err := ws.ReadMessage()
		if err != nil {
			b.Fatal(err)
		}
		if decode {
			var f protocol.Delta
			if err := json.Unmarshal(data, &f); err != nil {
				b.Fatal(err)
			}
			total += len(f.Text)
		} else {
			total += len(data)
		}
	}
	b.StopTimer()
	if total == 0 {
		b.Fatal("nothing read")
	}
}

func BenchmarkDeltaRawReadLoop(b *testing.B)      { benchRaw(b, false) }
func BenchmarkDeltaRawReadAndDecode(b *testing.B) { benchRaw(b, true) }

func BenchmarkDeltaSDK(b *testing.B) {
	srv := deltaServer(b, b.N, false)
	defer srv.Close()
	c, err := client.Dial(context.Background(), srv.URL, client.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ReportAllocs()
	b.ResetTimer()
	s, err := c.Chat(context.Background(), client.ChatRequest{Tool: "ipintel", Provider: "claude", Message: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for text := range s.Deltas() {
		if text != benchText {
			b.Fatalf("delta %q", text)
		}
		n++
	}
	b.StopTimer()
	if _, err := s.Result(); err != nil || n != b.N {
		b.Fatalf("%d deltas of %d: %v", n, b.N, err)
	}
}
