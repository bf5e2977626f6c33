package bench

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// relay is the physical floor of a WebSocket chat server: it forwards each chat.send to the
// upstream and each delta back as a chat.delta frame, then chat.done. No auth, no storage, no
// billing, no resume: what any such server must at least do, written plainly, for comparison.
type relay struct {
	URL      string
	upstream string
	srv      *http.Server
}

func startRelay(upstreamURL string) (*relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &relay{URL: "ws://" + ln.Addr().String() + "/ai/chat", upstream: upstreamURL}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve)}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

func (r *relay) close() { _ = r.srv.Close() }

var relayUpgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 4096,
	CheckOrigin: func(*http.Request) bool { return true }}

func (r *relay) serve(w http.ResponseWriter, req *http.Request) {
	ws, err := relayUpgrader.Upgrade(w, req, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wmu sync.Mutex // one writer at a time
	write := func(b []byte) {
		wmu.Lock()
		defer wmu.Unlock()
		_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_ = ws.WriteMessage(websocket.TextMessage, b)
	}
	for {
		var f struct {
			Type string `json:"type"`
			ID   string `json:"id"`
		}
		if err := ws.ReadJSON(&f); err != nil {
			return
		}
		if f.Type != "chat.send" {
			continue
		}
		go func(id string) {
			seq := 0
			idJSON, _ := json.Marshal(id)
			_, err := streamDirect(ctx, r.upstream, "", func(text string, _ time.Time) {
				seq++
				t, _ := json.Marshal(text)
				write([]byte(`{"type":"chat.delta","id":` + string(idJSON) + `,"seq":` + strconv.Itoa(seq) + `,"text":` + string(t) + `}`))
			})
			if err != nil {
				write([]byte(`{"type":"chat.error","id":` + string(idJSON) + `,"code":"provider_error"}`))
				return
			}
			write([]byte(`{"type":"chat.done","id":` + string(idJSON) + `,"seq":` + strconv.Itoa(seq) + `}`))
		}(f.ID)
	}
}
