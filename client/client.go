package client

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/maula-ai/maula-chat/protocol"
)

// Options configure a Client. Set Token or APIKey.
type Options struct {
	// Token is a session JWT (from /auth/login or /auth/register), sent as a bearer token.
	Token string
	// APIKey is a tool API key (mk_<tool>_...), sent as X-API-Key; it chats with its tool only.
	APIKey string
	// Header holds extra headers for the upgrade request (e.g. a User-Agent).
	Header http.Header
	// Dialer dials the WebSocket; nil uses a default one. Its NetDialContext, Proxy and TLS
	// settings are kept; its Subprotocols are replaced by maula.v1.
	Dialer *websocket.Dialer

	// MaxReconnectAttempts bounds the redials after a drop before the Client gives up with
	// ErrConnectionLost; 0 means 10, negative disables reconnecting.
	MaxReconnectAttempts int
	// ReconnectBackoff is the first redial delay (default 100 ms); it doubles per failed
	// attempt up to MaxReconnectBackoff (default 5 s), with jitter. The defaults keep the
	// whole budget within the server's 30 s resume grace period.
	ReconnectBackoff    time.Duration
	MaxReconnectBackoff time.Duration
	// CancelTimeout is how long a cancelled chat waits for the server's chat.cancelled before
	// it ends locally (default 10 s).
	CancelTimeout time.Duration
	// WriteTimeout bounds every write (default 10 s).
	WriteTimeout time.Duration
	// ReadTimeout is how long the server may stay silent before the connection is considered
	// dead and redialled (default 70 s; the server pings every 25 s).
	ReadTimeout time.Duration
}

func (o *Options) defaults() {
	if o.MaxReconnectAttempts == 0 {
		o.MaxReconnectAttempts = 10
	}
	if o.ReconnectBackoff <= 0 {
		o.ReconnectBackoff = 100 * time.Millisecond
	}
	if o.MaxReconnectBackoff <= 0 {
		o.MaxReconnectBackoff = 5 * time.Second
	}
	if o.CancelTimeout <= 0 {
		o.CancelTimeout = 10 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 70 * time.Second
	}
}

// Stats are counters of a Client's life.
type Stats struct {
	Reconnects int64 // successful redials after a dropped connection
}

// Client is one connection to maula-chat's chat hub, redialled when it drops. It is safe for
// concurrent use. Close it when done.
type Client struct {
	url    string
	header http.Header
	o      Options
	dialer websocket.Dialer

	ctx      context.Context // cancelled by Close
	cancel   context.CancelFunc
	loopDone chan struct{} // closed when the supervisor has stopped and everything failed
	sendq    chan outFrame // drained by the current connection's writer

	idPrefix   string
	nextID     atomic.Uint64
	reconnects atomic.Int64

	mu      sync.Mutex
	ws      *websocket.Conn    // guarded by mu: the current connection, nil while redialling
	streams map[string]*Stream // guarded by mu: running chats by request id
	calls   map[string]*call   // guarded by mu: pending history/sessions/ping by id
	err     error              // guarded by mu: why the Client stopped; nil while it runs
}

// outFrame is one frame for the writer. s is set for chat.send, so the writer can record
// that the server may have seen it.
type outFrame struct {
	data []byte
	send *Stream
}

type call struct {
	data []byte
	ch   chan *frame // capacity 1: the answer
}

// Dial connects to the chat hub at url: "https://host", "http://host:8080/base",
// "wss://host/ai/chat"... (a URL without the /ai/chat path gets it appended). The first dial is
// not retried: its error says what is wrong (ErrUnauthorized for refused credentials).
func Dial(ctx context.Context, rawURL string, o Options) (*Client, error) {
	o.defaults()
	u, err := chatURL(rawURL)
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	for k, v := range o.Header {
		h[k] = append([]string(nil), v...)
	}
	switch {
	case o.Token != "":
		h.Set("Authorization", "Bearer "+o.Token)
	case o.APIKey != "":
		h.Set("X-API-Key", o.APIKey)
	}
	c := &Client{url: u, header: h, o: o, loopDone: make(chan struct{}), sendq: make(chan outFrame, 64),
		streams: map[string]*Stream{}, calls: map[string]*call{}}
	if o.Dialer != nil {
		c.dialer = *o.Dialer
	} else {
		c.dialer = websocket.Dialer{Proxy: http.ProxyFromEnvironment, HandshakeTimeout: 10 * time.Second,
			ReadBufferSize: 4096, WriteBufferSize: 4096}
	}
	c.dialer.Subprotocols = []string{protocol.Subprotocol}
	var b [6]byte
	_, _ = crand.Read(b[:])
	// Request ids must be unique among the user's running replies on every connection, so
	// each Client gets a random prefix.
	c.idPrefix = hex.EncodeToString(b[:])
	ws, err := c.dialOnce(ctx)
	if err != nil {
		return nil, err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.loop(ws)
	return c, nil
}

func chatURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("maula: bad server URL: %w", err)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	case "ws", "wss":
	default:
		return "", fmt.Errorf("maula: bad server URL %q: scheme must be http, https, ws or wss", raw)
	}
	if !strings.HasSuffix(u.Path, "/ai/chat") {
		u.Path = strings.TrimRight(u.Path, "/") + "/ai/chat"
	}
	return u.String(), nil
}

// errPermanent marks dial failures that a redial cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func (c *Client) dialOnce(ctx context.Context) (*websocket.Conn, error) {
	ws, resp, err := c.dialer.DialContext(ctx, c.url, c.header)
	if err == nil {
		return ws, nil
	}
	if resp == nil {
		return nil, fmt.Errorf("maula: dial %s: %w", c.url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	msg := resp.Status
	if json.Unmarshal(body, &e) == nil && e.Error.Code != "" {
		msg = e.Error.Code + ": " + e.Error.Message
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return nil, &permanentError{fmt.Errorf("%w: %s", ErrUnauthorized, msg)}
	case http.StatusForbidden:
		return nil, &permanentError{fmt.Errorf("%w: %s", ErrForbidden, msg)}
	case http.StatusNotFound, http.StatusBadRequest:
		return nil, &permanentError{fmt.Errorf("maula: dial %s: %s", c.url, msg)}
	}
	return nil, fmt.Errorf("maula: dial %s: %s", c.url, msg)
}

// loop is the supervisor: it serves one connection at a time and redials after a drop.
func (c *Client) loop(ws *websocket.Conn) {
	var err error
	for {
		err = c.serve(ws)
		if c.ctx.Err() != nil {
			err = ErrClosed
			break
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) && !reconnectable(ce.Code) {
			err = &CloseError{Code: ce.Code, Reason: ce.Text}
			break
		}
		if c.o.MaxReconnectAttempts < 0 {
			err = fmt.Errorf("%w: %w", ErrConnectionLost, err)
			break
		}
		if ws, err = c.redial(err); err != nil {
			if c.ctx.Err() != nil {
				err = ErrClosed
			}
			break
		}
		c.reconnects.Add(1)
	}
	c.stop(err)
}

// reconnectable reports whether a close code from the server invites a redial: everything
// but authentication and policy failures.
func reconnectable(code int) bool {
	switch code {
	case protocol.CloseAuthFailed, protocol.CloseForbidden, protocol.ClosePolicy:
		return false
	}
	return true
}

func (c *Client) redial(cause error) (*websocket.Conn, error) {
	delay := c.o.ReconnectBackoff
	last := cause
	for attempt := 0; attempt < c.o.MaxReconnectAttempts; attempt++ {
		// Full jitter on the first attempt, half jitter after: clients dropped together by one
		// server restart must not come back in lockstep.
		d := rand.N(delay + 1)
		if attempt > 0 {
			d = delay/2 + rand.N(delay/2+1)
		}
		t := time.NewTimer(d)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return nil, ErrClosed
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		ws, err := c.dialOnce(ctx)
		cancel()
		if err == nil {
			return ws, nil
		}
		var pe *permanentError
		if errors.As(err, &pe) {
			return nil, pe.err
		}
		last = err
		delay = min(delay*2, c.o.MaxReconnectBackoff)
	}
	return nil, fmt.Errorf("%w after %d attempts: %w", ErrConnectionLost, c.o.MaxReconnectAttempts, last)
}

// serve runs one connection: it re-subscribes what was running, starts the writer and reads
// until the connection ends. It returns why it ended.
func (c *Client) serve(ws *websocket.Conn) error {
	c.mu.Lock()
	c.ws = ws
	resub := c.resubscribeLocked()
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.ws = nil
		c.mu.Unlock()
		ws.Close()
	}()
	if c.ctx.Err() != nil { // Close ran before c.ws was set: it could not close this one
		return ErrClosed
	}
	// Written before the writer starts, so this goroutine is still the only writer.
	for _, data := range resub {
		_ = ws.SetWriteDeadline(time.Now().Add(c.o.WriteTimeout))
		if err := ws.WriteMessage(websocket.TextMessage, data); err != nil {
			return err
		}
	}
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go c.writeLoop(ws, stop, writerDone)
	err := c.readLoop(ws, writerDone)
	close(stop)
	ws.Close()
	<-writerDone
	return err
}

// resubscribeLocked lists the frames that continue, on a new connection, what the old one was
// doing: chat.resume from the last seq delivered for every chat whose chat.send may have
// reached the server (and chat.cancel again for cancelled ones), and every pending call.
// Streams' reader-side fields are read here safely: serve runs on the reader's goroutine.
func (c *Client) resubscribeLocked() [][]byte {
	var out [][]byte
	for id, s := range c.streams {
		if !s.sent {
			continue // its chat.send is still queued and goes out on this connection
		}
		s.resuming = true
		out = append(out, resumeFrame(id, s.lastSeq))
		if s.cancelled {
			out = append(out, cancelFrame(id))
		}
	}
	for _, cl := range c.calls {
		out = append(out, cl.data)
	}
	return out
}

// writeLoop is the connection's only writer after serve's re-subscription.
func (c *Client) writeLoop(ws *websocket.Conn, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case <-stop:
			return
		case f := <-c.sendq:
			if f.send != nil {
				c.mu.Lock()
				f.send.sent = true
				c.mu.Unlock()
			}
			_ = ws.SetWriteDeadline(time.Now().Add(c.o.WriteTimeout))
			if err := ws.WriteMessage(websocket.TextMessage, f.data); err != nil {
				ws.Close() // unblocks the reader, which ends this connection
				return
			}
		}
	}
}

// readLoop is the connection's reader: it decodes each frame and hands it to its stream or
// call. It never blocks on a consumer.
func (c *Client) readLoop(ws *websocket.Conn, writerDone <-chan struct{}) error {
	ws.SetReadLimit(16 << 20)
	deadline := func() { _ = ws.SetReadDeadline(time.Now().Add(c.o.ReadTimeout)) }
	deadline()
	ws.SetPingHandler(func(data string) error {
		deadline()
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(c.o.WriteTimeout))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	var buf bytes.Buffer
	for {
		_, r, err := ws.NextReader()
		if err != nil {
			return err
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			return err
		}
		deadline()
		f := new(frame)
		if err := json.Unmarshal(buf.Bytes(), f); err != nil {
			continue // not a frame of this protocol version; nothing to route it to
		}
		c.route(f, writerDone)
		if buf.Cap() > 1<<20 {
			buf = bytes.Buffer{} // do not keep a huge history frame's buffer
		}
	}
}

func (c *Client) route(f *frame, writerDone <-chan struct{}) {
	switch f.Type {
	case protocol.TypeChatStarted, protocol.TypeChatDelta, protocol.TypeChatUsage, protocol.TypeChatDone,
		protocol.TypeChatCancelled, protocol.TypeChatError, protocol.TypeHistory, protocol.TypeSessions, protocol.TypePong:
	default:
		return // auth.ok, or a frame type newer than this SDK
	}
	c.mu.Lock()
	s := c.streams[f.ID]
	cl := c.calls[f.ID]
	c.mu.Unlock()
	switch {
	case s != nil:
		s.handle(f, writerDone)
	case cl != nil:
		select {
		case cl.ch <- f:
		default: // already answered (a re-sent call answered twice)
		}
	}
}

// enqueue hands a frame to the writer, waiting while the queue is full.
func (c *Client) enqueue(ctx context.Context, f outFrame) error {
	select {
	case c.sendq <- f:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.loopDone:
		return c.Err()
	}
}

// stop ends the Client for good: every running chat and call fails with err.
func (c *Client) stop(err error) {
	c.mu.Lock()
	c.err = err
	streams := c.streams
	c.streams = map[string]*Stream{}
	c.calls = map[string]*call{}
	c.mu.Unlock()
	for _, s := range streams {
		s.finish(nil, err)
	}
	c.cancel()
	close(c.loopDone)
}

// Err reports why the Client stopped (ErrClosed after Close), or nil while it runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Stats returns the Client's counters.
func (c *Client) Stats() Stats { return Stats{Reconnects: c.reconnects.Load()} }

// Close says goodbye to the server (close 1000), ends every running chat with ErrClosed and
// waits for the Client's goroutines to end. Replies still running on the server continue
// there until the resume grace period ends; cancel their contexts first to stop them.
func (c *Client) Close() error {
	c.cancel()
	c.mu.Lock()
	ws := c.ws
	c.mu.Unlock()
	if ws != nil {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
			time.Now().Add(time.Second))
		ws.Close()
	}
	<-c.loopDone
	return nil
}

// newID returns a request id unique among this user's requests.
func (c *Client) newID(kind string) string {
	return kind + "-" + c.idPrefix + "-" + fmt.Sprint(c.nextID.Add(1))
}

// roundTrip sends a request frame and waits for the frame answering it.
func (c *Client) roundTrip(ctx context.Context, id string, data []byte) (*frame, error) {
	cl := &call{data: data, ch: make(chan *frame, 1)}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	c.calls[id] = cl
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.calls, id)
		c.mu.Unlock()
	}()
	if err := c.enqueue(ctx, outFrame{data: cl.data}); err != nil {
		return nil, err
	}
	select {
	case f := <-cl.ch:
		if f.Type == protocol.TypeChatError {
			return nil, errorFromFrame(f)
		}
		return f, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.loopDone:
		return nil, c.Err()
	}
}

// Page selects a page of history or sessions: items before Before (zero: the newest), at most
// Limit of them (0: the server's default, 50).
type Page struct {
	Before time.Time
	Limit  int
}

func (p Page) before() string {
	if p.Before.IsZero() {
		return ""
	}
	return p.Before.UTC().Format(time.RFC3339Nano)
}

// History returns a page of a conversation's stored messages, oldest first.
func (c *Client) History(ctx context.Context, tool, sessionID string, p Page) (*protocol.History, error) {
	id := c.newID("h")
	f, err := c.roundTrip(ctx, id, historyFrame(id, tool, sessionID, p))
	if err != nil {
		return nil, fmt.Errorf("history of %s/%s: %w", tool, sessionID, err)
	}
	return &protocol.History{Type: f.Type, ID: f.ID, Tool: f.Tool, SessionID: f.SessionID, Messages: f.Messages, HasMore: f.HasMore}, nil
}

// Sessions returns a page of the user's conversations with a tool, newest first.
func (c *Client) Sessions(ctx context.Context, tool string, p Page) (*protocol.Sessions, error) {
	id := c.newID("s")
	f, err := c.roundTrip(ctx, id, sessionsFrame(id, tool, p))
	if err != nil {
		return nil, fmt.Errorf("sessions of %s: %w", tool, err)
	}
	return &protocol.Sessions{Type: f.Type, ID: f.ID, Tool: f.Tool, Sessions: f.Sessions, HasMore: f.HasMore}, nil
}

// Ping measures a round trip to the hub.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	id := c.newID("p")
	start := time.Now()
	if _, err := c.roundTrip(ctx, id, pingFrame(id)); err != nil {
		return 0, fmt.Errorf("ping: %w", err)
	}
	return time.Since(start), nil
}

func historyFrame(id, tool, sessionID string, p Page) []byte {
	return mustJSON(protocol.ClientFrame{Type: protocol.TypeHistoryGet, ID: id, Tool: tool, SessionID: sessionID,
		Before: p.before(), Limit: p.Limit})
}

func sessionsFrame(id, tool string, p Page) []byte {
	return mustJSON(protocol.ClientFrame{Type: protocol.TypeSessionsList, ID: id, Tool: tool, Before: p.before(), Limit: p.Limit})
}

func pingFrame(id string) []byte {
	return mustJSON(protocol.ClientFrame{Type: protocol.TypePing, ID: id})
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("client: encode %T: %v", v, err)) // only our own frame types get here
	}
	return b
}

// frame is the union of the server's frames; Type says which fields apply.
type frame struct {
	Type         string                 `json:"type"`
	ID           string                 `json:"id"`
	Seq          uint64                 `json:"seq"`
	Text         string                 `json:"text"`
	SessionID    string                 `json:"sessionId"`
	MessageID    string                 `json:"messageId"`
	Provider     string                 `json:"provider"`
	Model        string                 `json:"model"`
	FinishReason string                 `json:"finishReason"`
	Usage        protocol.Usage         `json:"usage"`
	CostUSD      float64                `json:"costUsd"`
	CostMicros   int64                  `json:"costMicros"`
	CreditsLeft  int64                  `json:"creditsLeft"`
	Code         string                 `json:"code"`
	Message      string                 `json:"message"`
	Retryable    bool                   `json:"retryable"`
	RetryAfterMs int64                  `json:"retryAfterMs"`
	Tool         string                 `json:"tool"`
	Messages     []protocol.ChatMessage `json:"messages"`
	Sessions     []protocol.SessionInfo `json:"sessions"`
	HasMore      bool                   `json:"hasMore"`
}
