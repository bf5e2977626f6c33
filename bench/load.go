package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// target is what a load runs against.
type target int

const (
	targetDirect target = iota // HTTP streaming straight to the fake upstream
	targetRelay                // the minimal WebSocket relay
	targetFull                 // maula-chat: auth, context and history, credits, recording
)

func (t target) String() string { return [...]string{"direct", "relay", "maula-chat"}[t] }

// loadSpec describes one open-loop load: conc workers, each starting a request every period
// (whether or not the previous one was slow: latency counts from the scheduled start, so
// queueing is not hidden), perWorker requests each.
type loadSpec struct {
	target    target
	conc      int
	perWorker int
	period    time.Duration
	stall     time.Duration // a gap above this is a stall
	want      string        // the exact text each reply must carry
	wsURL     string        // relay or maula-chat socket
	upstream  string        // direct
	tokens    []string      // maula-chat session tokens, one per worker (reused round robin)
	sources   int           // spread connections over this many 127.0.0.x source addresses
}

// loadResult aggregates a load's measurements.
type loadResult struct {
	TTFT, Gaps   Hist
	Requests     int
	Deltas       int
	Stalls, Lost int
	Errors       int
	FirstErr     string
	Elapsed      time.Duration
}

func (r *loadResult) merge(o *loadResult) {
	r.TTFT.Merge(&o.TTFT)
	r.Gaps.Merge(&o.Gaps)
	r.Requests += o.Requests
	r.Deltas += o.Deltas
	r.Stalls += o.Stalls
	r.Lost += o.Lost
	r.Errors += o.Errors
	if r.FirstErr == "" {
		r.FirstErr = o.FirstErr
	}
}

func runLoad(ctx context.Context, sp loadSpec) *loadResult {
	total := &loadResult{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now().Add(200 * time.Millisecond)
	for w := range sp.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &loadResult{}
			// Stagger workers over one period so requests do not all start at once.
			offset := time.Duration(int64(sp.period) * int64(w) / int64(max(sp.conc, 1)))
			worker(ctx, sp, w, start.Add(offset), r)
			mu.Lock()
			total.merge(r)
			mu.Unlock()
		}()
	}
	wg.Wait()
	total.Elapsed = time.Since(start)
	return total
}

func (r *loadResult) fail(err error) {
	r.Errors++
	if r.FirstErr == "" {
		r.FirstErr = err.Error()
	}
}

func worker(ctx context.Context, sp loadSpec, w int, start time.Time, r *loadResult) {
	var ws *websocket.Conn
	if sp.target != targetDirect {
		var err error
		token := ""
		if len(sp.tokens) > 0 {
			token = sp.tokens[w%len(sp.tokens)]
		}
		ws, err = dial(ctx, sp.wsURL, token, w, sp.sources)
		if err != nil {
			r.fail(err)
			return
		}
		defer ws.Close()
	}
	for k := range sp.perWorker {
		sched := start.Add(time.Duration(k) * sp.period)
		if d := time.Until(sched); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return
			}
		}
		var (
			first, last time.Time
			text        strings.Builder
			n           int
		)
		onDelta := func(t string, at time.Time) {
			if n == 0 {
				first = at
			} else {
				g := at.Sub(last)
				r.Gaps.Add(g)
				if sp.stall > 0 && g > sp.stall {
					r.Stalls++
				}
			}
			last = at
			n++
			text.WriteString(t)
		}
		var err error
		if sp.target == targetDirect {
			_, err = streamDirect(ctx, sp.upstream, "", onDelta)
		} else {
			err = wsTurn(ws, fmt.Sprintf("w%d-%d", w, k), onDelta)
		}
		r.Requests++
		if err != nil {
			r.fail(err)
			continue
		}
		r.Deltas += n
		if n > 0 {
			r.TTFT.Add(first.Sub(sched))
		}
		if sp.want != "" && text.String() != sp.want {
			r.Lost++
		}
	}
}

// dial opens a socket, from source address 127.0.0.(2+w%sources) when sources > 1, so that
// many connections do not run out of ephemeral ports of one address.
func dial(ctx context.Context, url, token string, w, sources int) (*websocket.Conn, error) {
	d := websocket.Dialer{Subprotocols: []string{"maula.v1"}, ReadBufferSize: 4096, WriteBufferSize: 1024, HandshakeTimeout: 30 * time.Second}
	if sources > 1 {
		local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+w%sources))}
		nd := &net.Dialer{LocalAddr: local, Timeout: 30 * time.Second}
		d.NetDialContext = nd.DialContext
	}
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	ws, resp, err := d.DialContext(ctx, url, h)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	return ws, err
}

// wsTurn sends one chat.send and reads its frames until the end.
func wsTurn(ws *websocket.Conn, id string, onDelta func(string, time.Time)) error {
	send := map[string]any{"type": "chat.send", "id": id, "tool": "ipintel", "provider": "gpt", "message": "bench question"}
	if err := ws.WriteJSON(send); err != nil {
		return err
	}
	var f struct {
		Type string `json:"type"`
		ID   string `json:"id"`
		Text string `json:"text"`
		Code string `json:"code"`
		Msg  string `json:"message"`
	}
	_ = ws.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return err
		}
		at := time.Now()
		f.Text, f.Type = "", ""
		if err := json.Unmarshal(data, &f); err != nil {
			return err
		}
		switch f.Type {
		case "chat.delta":
			onDelta(f.Text, at)
		case "chat.done":
			return nil
		case "chat.error", "chat.cancelled":
			return fmt.Errorf("%s %s: %s", f.Type, f.Code, f.Msg)
		}
	}
}
