package chat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/maula-ai/maula-chat/httpx"
	"github.com/maula-ai/maula-chat/protocol"
)

// writeBufPool lends write buffers only while a connection writes, so idle connections hold
// none (gorilla/websocket#72).
var writeBufPool = &sync.Pool{}

func (h *Hub) upgrader() *websocket.Upgrader {
	return &websocket.Upgrader{
		ReadBufferSize:  1024,
		WriteBufferSize: 4096,
		WriteBufferPool: writeBufPool,
		Subprotocols:    []string{protocol.Subprotocol},
		// Origin is checked in ServeHTTP, where we know how the caller authenticated.
		CheckOrigin: func(*http.Request) bool { return true },
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			httpx.WriteError(w, status, "bad_upgrade", reason.Error())
		},
	}
}

// hasCredentials reports whether the upgrade request carries any credential.
func (h *Hub) hasCredentials(r *http.Request) bool {
	if r.Header.Get("Authorization") != "" || r.Header.Get("X-API-Key") != "" {
		return true
	}
	if h.o.CookieName != "" {
		if _, err := r.Cookie(h.o.CookieName); err == nil {
			return true
		}
	}
	return false
}

// originAllowed implements the cookie rule: the same origin, or one listed.
func (h *Hub) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, o := range h.o.AllowedOrigins {
		if strings.EqualFold(strings.TrimRight(o, "/"), origin) {
			return true
		}
	}
	return false
}

// ServeHTTP upgrades GET /ai/chat. Credentials are checked before the upgrade (401/403);
// without any, the first frame must be {"type":"auth","token":...} within AuthTimeout.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.draining.Load() {
		httpx.WriteError(w, http.StatusServiceUnavailable, protocol.CodeShuttingDown, "server shutting down; reconnect")
		return
	}
	var (
		id     Identity
		authed bool
	)
	if h.hasCredentials(r) {
		var err error
		id, err = h.o.Auth.Authenticate(r)
		if err != nil {
			httpx.Fail(w, r, err)
			return
		}
		if id.Cookie && !h.originAllowed(r) {
			httpx.WriteError(w, http.StatusForbidden, "origin_not_allowed", "this origin may not open the chat socket")
			return
		}
		authed = true
	}
	ws, err := h.upgrader().Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader wrote the error
	}
	h.connsWG.Add(1)
	defer h.connsWG.Done()
	c := newConn(h, ws)
	if !authed {
		if id, err = c.frameAuth(r.Context()); err != nil {
			c.closeWith(protocol.CloseAuthFailed, err.Error())
			c.ws.Close()
			return
		}
	}
	c.id = id
	c.run()
}

// conn is one client socket. The handler goroutine reads; one writer goroutine writes; turns
// and followers enqueue frames without blocking.
type conn struct {
	h  *Hub
	ws *websocket.Conn
	id Identity // set before run; read-only after
	q  *outQueue

	ctx    context.Context // cancelled when the reader exits
	cancel context.CancelFunc

	closing   atomic.Bool
	closeOnce sync.Once
	// flush asks the writer to write what is queued, then close with flushCode (shutdown).
	flush     chan struct{}
	flushOnce sync.Once
	flushCode int

	mu        sync.Mutex
	turns     map[string]*turn              // guarded by mu: turns attached to this connection, by request id
	followers map[string]context.CancelFunc // guarded by mu: resumed remote streams
}

func newConn(h *Hub, ws *websocket.Conn) *conn {
	ctx, cancel := context.WithCancel(h.baseCtx)
	return &conn{h: h, ws: ws, q: newOutQueue(h.o.QueueLimit), ctx: ctx, cancel: cancel, flush: make(chan struct{}),
		turns: map[string]*turn{}, followers: map[string]context.CancelFunc{}}
}

func (c *conn) frameAuth(ctx context.Context) (Identity, error) {
	c.ws.SetReadLimit(c.h.o.ReadLimit)
	_ = c.ws.SetReadDeadline(time.Now().Add(c.h.o.AuthTimeout))
	_, data, err := c.ws.ReadMessage()
	if err != nil {
		return Identity{}, errors.New("no auth frame in time")
	}
	var f protocol.ClientFrame
	if json.Unmarshal(data, &f) != nil || f.Type != protocol.TypeAuth || f.Token == "" {
		return Identity{}, errors.New("first frame must be auth")
	}
	actx, cancel := context.WithTimeout(ctx, c.h.o.AuthTimeout)
	defer cancel()
	id, err := c.h.o.Auth.AuthenticateToken(actx, f.Token)
	if err != nil {
		return Identity{}, errors.New("authentication failed")
	}
	_ = c.ws.SetWriteDeadline(time.Now().Add(c.h.o.WriteTimeout))
	_ = c.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"auth.ok"}`))
	return id, nil
}

// run registers the connection, starts its writer and reads until the socket ends.
func (c *conn) run() {
	s := c.h.shardFor(c.id.UserID)
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	writerDone := make(chan struct{})
	go func() { defer close(writerDone); c.writeLoop() }()

	c.readLoop()

	c.cancel()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.detachAll()
	<-writerDone
	c.ws.Close()
}

func (c *conn) readLoop() {
	c.ws.SetReadLimit(c.h.o.ReadLimit)
	_ = c.ws.SetReadDeadline(time.Now().Add(c.h.o.PongWait))
	c.ws.SetPongHandler(func(string) error {
		return c.ws.SetReadDeadline(time.Now().Add(c.h.o.PongWait))
	})
	for {
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				c.closeWith(protocol.CloseTooBig, "frame over the read limit")
			}
			return
		}
		_ = c.ws.SetReadDeadline(time.Now().Add(c.h.o.PongWait))
		if mt != websocket.TextMessage {
			c.sendError("", protocol.CodeBadRequest, "frames are JSON text", false, 0)
			continue
		}
		c.dispatch(data)
	}
}

// writeLoop is the only writer of the socket: it waits for queued frames, takes them all,
// and writes each as its own message, with a deadline on every write.
func (c *conn) writeLoop() {
	ping := time.NewTicker(c.h.o.PingInterval)
	defer ping.Stop()
	var (
		batch []outItem
		buf   []byte
	)
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-ping.C:
			if c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.h.o.WriteTimeout)) != nil {
				c.abort()
				return
			}
		case <-c.flush:
			batch = c.q.take(batch)
			if c.writeBatch(batch, &buf) {
				c.closeWith(c.flushCode, "server shutting down")
			} else {
				c.abort()
			}
			return
		case <-c.q.wake:
			batch = c.q.take(batch)
			if !c.writeBatch(batch, &buf) {
				c.abort()
				return
			}
			clear(batch)
			if cap(buf) > 64<<10 {
				buf = nil // do not keep a huge buffer after a burst
			}
		}
	}
}

// writeBatch writes each queued frame as its own message; false when a write failed.
func (c *conn) writeBatch(batch []outItem, buf *[]byte) bool {
	for i := range batch {
		it := &batch[i]
		msg := it.raw
		if it.reqID != "" {
			*buf = appendDelta((*buf)[:0], it.reqID, it.seq, it.text)
			msg = *buf
		}
		_ = c.ws.SetWriteDeadline(time.Now().Add(c.h.o.WriteTimeout))
		if err := c.ws.WriteMessage(websocket.TextMessage, msg); err != nil {
			return false
		}
	}
	return true
}

// closeAfterFlush has the writer send what is queued, then close with code: at shutdown the
// last frames of cancelled replies must reach the client before 1001.
func (c *conn) closeAfterFlush(code int) {
	c.flushOnce.Do(func() {
		c.flushCode = code
		close(c.flush)
	})
}

// abort ends the connection after a failed write.
func (c *conn) abort() {
	c.q.close()
	c.cancel()
	c.ws.Close() // unblocks the reader
}

// closeWith sends a close frame with code and reason, then closes the socket. Safe to call
// from any goroutine, more than once.
func (c *conn) closeWith(code int, reason string) {
	c.closeOnce.Do(func() {
		c.closing.Store(true)
		c.q.close()
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
		c.cancel()
		c.ws.Close()
	})
}

// enqueueRaw queues a pre-encoded frame; over the queue's cap the client is too slow: 4008.
func (c *conn) enqueueRaw(reqID string, raw []byte) {
	if !c.q.pushRaw(reqID, raw) {
		c.closeWith(protocol.CloseSlowConsumer, "client reads too slowly")
	}
}

func (c *conn) enqueueDelta(reqID string, seq uint64, text string) {
	if !c.q.pushDelta(reqID, seq, text) {
		c.closeWith(protocol.CloseSlowConsumer, "client reads too slowly")
	}
}

func (c *conn) send(reqID string, v any) { c.enqueueRaw(reqID, mustJSON(v)) }

func (c *conn) sendError(reqID, code, msg string, retryable bool, retryAfter time.Duration) {
	c.send(reqID, protocol.Error{Type: protocol.TypeChatError, ID: reqID, Code: code, Message: msg,
		Retryable: retryable, RetryAfterMs: retryAfter.Milliseconds()})
}

// dispatch handles one client frame. Bad frames get chat.error bad_request; the connection
// stays up.
func (c *conn) dispatch(data []byte) {
	var f protocol.ClientFrame
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		// Echo the id when the frame has a readable one, so the client can match the error.
		var idOnly struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(data, &idOnly)
		c.sendError(truncate(idOnly.ID, 128), protocol.CodeBadRequest, "invalid frame: "+jsonProblem(err), false, 0)
		return
	}
	if len(f.ID) > 128 {
		c.sendError("", protocol.CodeBadRequest, "id longer than 128 characters", false, 0)
		return
	}
	switch f.Type {
	case protocol.TypePing:
		c.send("", protocol.Pong{Type: protocol.TypePong, ID: f.ID})
	case protocol.TypeChatSend:
		c.h.startTurn(c, &f)
	case protocol.TypeChatCancel:
		c.h.cancelRequest(c, f.ID)
	case protocol.TypeChatResume:
		c.h.resume(c, f.ID, f.AfterSeq)
	case protocol.TypeHistoryGet:
		c.h.historyFrame(c, &f)
	case protocol.TypeSessionsList:
		c.h.sessionsFrame(c, &f)
	case protocol.TypeAuth:
		c.sendError(f.ID, protocol.CodeBadRequest, "already authenticated", false, 0)
	case "":
		c.sendError(f.ID, protocol.CodeBadRequest, "frame has no type", false, 0)
	default:
		c.sendError(f.ID, protocol.CodeBadRequest, "unknown frame type "+truncate(f.Type, 40), false, 0)
	}
}

func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return "field " + te.Field + " must be " + te.Type.String()
	}
	return truncate(strings.TrimPrefix(err.Error(), "json: "), 120)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// detachAll runs when the socket is gone: its turns go on for the grace period (or are
// cancelled when they asked for cancel-on-disconnect), and its followers stop.
func (c *conn) detachAll() {
	c.mu.Lock()
	turns := make([]*turn, 0, len(c.turns))
	for _, t := range c.turns {
		turns = append(turns, t)
	}
	followers := c.followers
	c.turns, c.followers = map[string]*turn{}, map[string]context.CancelFunc{}
	c.mu.Unlock()
	for _, t := range turns {
		t.detach(c)
	}
	for _, stop := range followers {
		stop() // the follower publishes its own detach as it exits
	}
}
