package chat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
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
		// The smallest gorilla allows (a control frame's payload): frames are read straight into
		// the message, and an idle connection keeps this buffer, not a bigger one.
		ReadBufferSize:  128,
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
// without any, the first frame must be {"type":"auth","token":...} within AuthTimeout. Once
// authenticated the connection is handed to the hub's poller and ServeHTTP returns, so the
// HTTP server's goroutine and its per-request state go away: an idle connection holds no
// goroutine (see conn).
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
	hj := &hijacker{ResponseWriter: w}
	ws, err := h.upgrader().Upgrade(hj, r, nil)
	if err != nil {
		return // the upgrader wrote the error
	}
	h.connsWG.Add(1) // done when the connection is torn down (conn.finish)
	c := newConn(h, ws, hj.fc)
	if !authed {
		if id, err = c.frameAuth(r.Context()); err != nil {
			c.closeWith(protocol.CloseAuthFailed, err.Error())
			return
		}
	}
	c.id = id
	c.start()
}

// conn is one client socket. While idle it has no goroutine: the hub's poller watches its
// socket and starts a reader goroutine when something arrives (readable → readReady), which
// parks again once the socket is empty; a writer goroutine runs only while frames are queued
// (outQueue starts it); the hub's keepalive wheel pings it and times it out. Turns and
// followers enqueue frames without blocking.
type conn struct {
	h  *Hub
	ws *websocket.Conn
	fc *frameConn
	id Identity // set before start; read-only after
	q  *outQueue

	ctx    context.Context // cancelled when the connection ends
	cancel context.CancelFunc

	closeOnce sync.Once
	endOnce   sync.Once

	// rmu orders the successive reader goroutines and the end of the connection.
	rmu     sync.Mutex
	reading bool // guarded by rmu: a reader goroutine runs
	gone    bool // guarded by rmu: the connection ended; finish runs once no reader does
	fin     sync.Once

	lastRead atomic.Int64 // unix nanoseconds of the last frame or pong read

	// The keepalive wheel's, guarded by its mutex (lastPing: by its goroutine).
	wprev, wnext *conn
	wslot        int
	wgone        bool
	lastPing     int64

	pollID uint64 // the poller's registration id

	mu        sync.Mutex
	turns     map[string]*turn              // guarded by mu: turns attached to this connection, by request id
	followers map[string]context.CancelFunc // guarded by mu: resumed remote streams
}

func newConn(h *Hub, ws *websocket.Conn, fc *frameConn) *conn {
	ctx, cancel := context.WithCancel(h.baseCtx)
	c := &conn{h: h, ws: ws, fc: fc, ctx: ctx, cancel: cancel, wslot: -1}
	c.q = newOutQueue(h.o.QueueLimit)
	c.q.startWriter = c.startWriter
	return c
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

// start registers the authenticated connection with its shard, the keepalive wheel and the
// poller, which starts a reader as soon as the client sends something.
func (c *conn) start() {
	c.ws.SetReadLimit(c.h.o.ReadLimit)
	c.ws.SetPongHandler(c.pong)
	c.fc.idleOK = true
	now := time.Now()
	c.lastRead.Store(now.UnixNano())
	s := c.h.shardFor(c.id.UserID)
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	c.h.keep.add(c, now)
	// Frames that came with the auth frame wait in fc's buffer, where the poller cannot see
	// them: read them now. (Checked before add, after which a reader may run.)
	pending := c.fc.buf != nil
	if c.fc.raw == nil {
		c.readable() // not a socket the poller can watch (TLS): a reader that never parks
		return
	}
	if err := c.h.poll.add(c); err != nil {
		c.end()
		return
	}
	if pending {
		c.readable()
	}
}

// pong runs on the reader when a pong arrives: the client is alive.
func (c *conn) pong(string) error {
	now := time.Now()
	c.lastRead.Store(now.UnixNano())
	return c.ws.SetReadDeadline(now.Add(c.h.o.PongWait))
}

// readable starts the reader goroutine: the poller saw data (or the end) on the socket.
func (c *conn) readable() {
	c.rmu.Lock()
	if c.reading || c.gone {
		c.rmu.Unlock()
		return
	}
	c.reading = true
	c.h.connsWG.Add(1)
	c.rmu.Unlock()
	go c.readReady()
}

// readReady reads and dispatches what the client sent until the socket is empty, then parks
// the connection with the poller again; on a read error the connection ends.
func (c *conn) readReady() {
	defer c.h.connsWG.Done()
	_ = c.ws.SetReadDeadline(time.Now().Add(c.h.o.PongWait))
	for {
		mt, data, idle, err := c.readMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				c.closeWith(protocol.CloseTooBig, "frame over the read limit")
			}
			c.readerDone(true)
			return
		}
		if idle {
			c.readerDone(false)
			return
		}
		c.lastRead.Store(time.Now().UnixNano())
		_ = c.ws.SetReadDeadline(time.Now().Add(c.h.o.PongWait))
		if mt != websocket.TextMessage {
			c.sendError("", protocol.CodeBadRequest, "frames are JSON text", false, 0)
			continue
		}
		c.dispatch(data)
	}
}

// readMessage is gorilla's ReadMessage that tells frameConn's idleFrame apart.
func (c *conn) readMessage() (mt int, data []byte, idle bool, err error) {
	mt, r, err := c.ws.NextReader()
	if err != nil {
		return 0, nil, false, err
	}
	if c.fc.takeIdle() {
		return 0, nil, true, nil
	}
	data, err = io.ReadAll(r)
	return mt, data, false, err
}

// readerDone ends the reader goroutine: with failed, the connection ends; otherwise the socket
// is empty and the poller watches it again.
func (c *conn) readerDone(failed bool) {
	if failed {
		c.end()
	}
	c.rmu.Lock()
	c.reading = false
	gone := c.gone
	c.rmu.Unlock()
	if gone {
		c.fin.Do(c.finish)
		return
	}
	// Re-armed after reading is cleared: an event right after re-arming starts a new reader.
	if err := c.h.poll.arm(c); err != nil {
		c.end()
	}
}

// end tears the connection down without a close frame (see closeWith for one): it refuses
// further frames, cancels its context and closes the socket, which stops a reader or writer
// in the middle of I/O. The rest (finish) waits until no reader runs, and runs on a goroutine
// of its own: end's callers include turns holding their lock, which finish's detach takes.
// From any goroutine, any number of times.
func (c *conn) end() {
	c.endOnce.Do(func() {
		c.q.close()
		c.cancel()
		c.ws.Close()
		c.rmu.Lock()
		c.gone = true
		reading := c.reading
		c.rmu.Unlock()
		if !reading {
			go c.fin.Do(c.finish)
		}
	})
}

// finish unregisters the ended connection and detaches its turns and followers. It runs once,
// when no reader runs, so no dispatch can attach a turn afterwards.
func (c *conn) finish() {
	c.h.poll.remove(c)
	c.h.keep.remove(c)
	s := c.h.shardFor(c.id.UserID)
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.detachAll()
	c.h.connsWG.Done()
}

// startWriter runs the writer goroutine; outQueue calls it, under its lock, when frames are
// queued and no writer runs.
func (c *conn) startWriter() {
	c.h.connsWG.Add(1)
	go c.writeLoop()
}

// writerBufs are a writer's batch and encoding buffer. A writer runs only while frames are
// queued, so during a stream one starts for almost every delta: the buffers come from a pool
// rather than being allocated again each time, and an idle connection holds none.
type writerBufs struct {
	batch []outItem
	buf   []byte
}

var writerPool = sync.Pool{New: func() any { return new(writerBufs) }}

// writeLoop is the only writer of the socket: it takes everything queued and writes each
// frame as its own message, with a deadline on every write, until the queue is empty.
func (c *conn) writeLoop() {
	defer c.h.connsWG.Done()
	wb := writerPool.Get().(*writerBufs)
	defer func() {
		clear(wb.batch)
		if cap(wb.buf) > 64<<10 || cap(wb.batch) > 1024 {
			*wb = writerBufs{} // do not keep a huge buffer after a burst
		}
		writerPool.Put(wb)
	}()
	for {
		var flush int
		wb.batch, flush = c.q.next(wb.batch)
		if len(wb.batch) == 0 {
			if flush != 0 {
				c.closeWith(flush, "server shutting down")
			}
			return
		}
		if !c.writeBatch(wb.batch, &wb.buf) {
			c.end()
			return
		}
		clear(wb.batch)
	}
}

// writeBatch writes each queued frame as its own message; false when a write failed.
func (c *conn) writeBatch(batch []outItem, buf *[]byte) bool {
	for i := range batch {
		it := &batch[i]
		if it.ping {
			if c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.h.o.WriteTimeout)) != nil {
				return false
			}
			continue
		}
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

// ping queues a ping for the writer (the keepalive wheel's call).
func (c *conn) ping() { c.q.pushPing() }

// closeAfterFlush has the writer send what is queued, then close with code: at shutdown the
// last frames of cancelled replies must reach the client before 1001.
func (c *conn) closeAfterFlush(code int) { c.q.flush(code) }

// closeWith sends a close frame with code and reason, then ends the connection. Safe to call
// from any goroutine, more than once.
func (c *conn) closeWith(code int, reason string) {
	c.closeOnce.Do(func() {
		c.q.close()
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
		c.end()
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
	c.mu.Lock()
	if c.turns == nil { // made on the first frame: idle connections hold no maps
		c.turns, c.followers = map[string]*turn{}, map[string]context.CancelFunc{}
	}
	c.mu.Unlock()
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
	c.turns, c.followers = nil, nil
	c.mu.Unlock()
	for _, t := range turns {
		t.detach(c)
	}
	for _, stop := range followers {
		stop() // the follower publishes its own detach as it exits
	}
}
