package chat

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/maula-ai/maula-chat/protocol"
)

// An idle authenticated connection holds no goroutine and little memory (issue 9's target:
// 100,000 of them at 10 KiB each). The figures include the test's own client side of each
// socket, so they are an upper bound of the server's.
func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	if !pollSupported {
		t.Skip("without epoll every connection keeps a reader goroutine (idle_poll_other.go)")
	}
	const n = 400
	r := newRig(t, rigConfig{})
	_, tok := newUser()
	url := "ws" + r.srv.URL[len("http"):] + "/ai/chat"
	pool := &sync.Pool{}
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, ReadBufferSize: 128, WriteBufferSize: 128, WriteBufferPool: pool}
	h := map[string][]string{"Authorization": {"Bearer " + tok}}

	// Warm up: one connection, so lazily made state (the poller, pools) exists.
	warm, resp, err := d.Dial(url, h)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	defer warm.Close()
	g0, heap0 := settle(t, r.hub, 1)

	conns := make([]*websocket.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, resp, err := d.Dial(url, h)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		conns = append(conns, c)
	}
	g1, heap1 := settle(t, r.hub, n+1)
	perConn := float64(int64(heap1)-int64(heap0)) / n / 1024
	t.Logf("%d idle connections: %+d goroutines, %.2f KiB of heap and stacks each (client side included)", n, g1-g0, perConn)
	if g1-g0 > n/50 {
		t.Errorf("%d goroutines for %d idle connections: an idle connection must hold none", g1-g0, n)
	}
	if perConn > 8 && !raceEnabled {
		t.Errorf("%.1f KiB per idle connection, want well under 10", perConn)
	}

	// Idle connections still work: a ping frame gets its pong.
	if err := conns[n/2].WriteJSON(protocol.ClientFrame{Type: protocol.TypePing, ID: "p"}); err != nil {
		t.Fatal(err)
	}
	_ = conns[n/2].SetReadDeadline(time.Now().Add(5 * time.Second))
	var f struct{ Type, ID string }
	if err := conns[n/2].ReadJSON(&f); err != nil || f.Type != protocol.TypePong || f.ID != "p" {
		t.Fatalf("ping on an idle connection: %+v %v", f, err)
	}
}

// settle waits until the hub has want connections and the goroutine count is stable, then
// returns it and the live heap plus stacks after a collection.
func settle(t *testing.T, h *Hub, want int) (int, uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.Stats().Conns != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections registered, want %d", h.Stats().Conns, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	prev := -1
	for range 50 {
		time.Sleep(20 * time.Millisecond)
		if g := runtime.NumGoroutine(); g == prev {
			break
		} else {
			prev = g
		}
	}
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapAlloc + ms.StackInuse
}

// Frames sent right behind the auth frame, before auth.ok, are read although the poller never
// sees them arrive: they came with the auth frame.
func TestFramesBehindTheAuthFrame(t *testing.T) {
	r := newRig(t, rigConfig{})
	_, tok := newUser()
	ws, err := dialWS(r.srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	nc := ws.NetConn()
	// Both frames in one write, so they reach the server together.
	var b []byte
	for _, f := range []protocol.ClientFrame{{Type: protocol.TypeAuth, Token: tok}, {Type: protocol.TypePing, ID: "p"}} {
		b = append(b, maskedText(mustJSON(f))...)
	}
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	c := startClient(t, ws)
	c.waitFor("p", 5*time.Second, "pong", func(fs []map[string]any) bool { return len(fs) > 0 && fs[0]["type"] == protocol.TypePong })
}

// maskedText is a client's final text frame carrying payload, masked with a zero key.
func maskedText(payload []byte) []byte { return maskedFrame(0x81, payload) }

// maskedFrame is a client frame (first byte b0: FIN and opcode) with a zero masking key.
func maskedFrame(b0 byte, payload []byte) []byte {
	f := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n <= 0xffff:
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	default:
		f = append(f, 0x80|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	return append(append(f, 0, 0, 0, 0), payload...)
}

// Frames of every length form (7-bit, 16-bit, 64-bit), fragmented messages with a ping between
// their fragments, arriving in random pieces with pauses: every message is read once, in order,
// whatever the poller and frameConn see of it.
func TestFramesArriveInPieces(t *testing.T) {
	r := newRig(t, rigConfig{})
	_, tok := newUser()
	ws, err := dialWS(r.srv.URL, tok)
	if err != nil {
		t.Fatal(err)
	}
	c := startClient(t, ws)
	ping := func(id string, size int) []byte { // a ping frame padded with spaces to size bytes
		b := []byte(`{"type":"ping","id":"` + id + `"}`)
		return append(b, bytes.Repeat([]byte(" "), max(size-len(b), 0))...)
	}
	var frames [][]byte
	var ids []string
	for i, size := range []int{10, 125, 126, 127, 1000, 65535, 65536, 3} {
		id := fmt.Sprintf("p%d", i)
		ids = append(ids, id)
		msg := ping(id, size)
		if i%2 == 1 { // in three fragments, a control ping between the first two
			a, b := len(msg)/3, 2*len(msg)/3
			frames = append(frames, maskedFrame(0x01, msg[:a]), maskedFrame(0x89, []byte("hi")),
				maskedFrame(0x00, msg[a:b]), maskedFrame(0x80, msg[b:]))
		} else {
			frames = append(frames, maskedText(msg))
		}
	}
	// Each frame in random pieces, with pauses after its first byte, before its last and after
	// it: the server meets an empty socket mid-header, one byte short of a frame's end, between
	// fragments and between messages, where frameConn must know exactly where frames end.
	rng := rand.New(rand.NewPCG(3, 4))
	write := func(b []byte) {
		if _, err := ws.NetConn().Write(b); err != nil {
			t.Fatal(err)
		}
	}
	pause := func() { time.Sleep(2 * time.Millisecond) }
	for _, f := range frames {
		write(f[:1])
		pause()
		for mid := f[1 : len(f)-1]; len(mid) > 0; {
			k := min(len(mid), 1+rng.IntN(40))
			if rng.IntN(8) == 0 {
				k = min(len(mid), 1+rng.IntN(20000))
			}
			write(mid[:k])
			mid = mid[k:]
		}
		pause()
		write(f[len(f)-1:])
		pause()
	}
	for _, id := range ids {
		c.waitFor(id, 10*time.Second, "pong", func(fs []map[string]any) bool { return len(fs) > 0 })
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.all) != len(ids) {
		t.Fatalf("%d frames for %d pings: %v", len(c.all), len(ids), c.all)
	}
	for i, f := range c.all {
		if f["type"] != protocol.TypePong || f["id"] != ids[i] {
			t.Fatalf("frame %d: %v, want the pong of %s", i, f, ids[i])
		}
	}
}

// The keepalive wheel pings every connection each PingInterval, and ends one that read nothing,
// not even a pong, for PongWait; one that answers stays.
func TestKeepalivePingsAndTimesOut(t *testing.T) {
	r := newRig(t, rigConfig{tune: func(o *Options) { o.PingInterval = 100 * time.Millisecond; o.PongWait = 300 * time.Millisecond }})
	_, tok := newUser()
	silent, err := dialWS(r.srv.URL, tok) // never reads, so never answers a ping
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	ws, err := dialWS(r.srv.URL, tok)
	if err != nil {
		t.Fatal(err)
	}
	var pings atomic.Int32
	ws.SetPingHandler(func(s string) error {
		pings.Add(1)
		return ws.WriteControl(websocket.PongMessage, []byte(s), time.Now().Add(time.Second))
	})
	alive := startClient(t, ws)
	deadline := time.Now().Add(5 * time.Second)
	for r.hub.Stats().Conns != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open; the silent one was never timed out", r.hub.Stats().Conns)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(400 * time.Millisecond) // past PongWait again: the answering one stays
	if n := r.hub.Stats().Conns; n != 1 {
		t.Fatalf("%d connections open, want the answering one", n)
	}
	if n := pings.Load(); n < 3 {
		t.Fatalf("%d pings in over 0.7 s at a 100 ms interval", n)
	}
	alive.send(protocol.ClientFrame{Type: protocol.TypePing, ID: "p"})
	alive.waitFor("p", 5*time.Second, "pong", func(fs []map[string]any) bool { return len(fs) > 0 })
}
