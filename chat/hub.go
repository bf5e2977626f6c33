// Package chat is the realtime heart of maula-chat: the WebSocket hub at GET /ai/chat speaking
// protocol v1 (package protocol, docs/protocol.md), the chat turn of the seed's "User Chats
// with AI" flow (tool context and history → prompt → credits → provider stream → stored
// messages → settled credits), cancel, and resume after a dropped connection on any instance.
// It reaches authentication, money and storage through the small interfaces declared here.
package chat

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maula-ai/maula-chat/kv"
	"github.com/maula-ai/maula-chat/providers"
	"github.com/maula-ai/maula-chat/store"
	"github.com/maula-ai/maula-chat/tools"
	"github.com/prometheus/client_golang/prometheus"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// Identity is who is chatting, as the hub needs it.
type Identity struct {
	UserID bson.ObjectID
	// Tool is an API key's scope; "" lets a session use every tool.
	Tool string
	// Plan names the user's plan, for the per-user message rate.
	Plan string
	// Cookie is true when the browser's session cookie authenticated the upgrade, so the
	// Origin must be allowed.
	Cookie bool
}

// CanUse reports whether the identity may chat with a tool.
func (id Identity) CanUse(tool string) bool { return id.Tool == "" || id.Tool == tool }

// Authenticator checks credentials and the per-user message rate.
type Authenticator interface {
	// Authenticate checks the upgrade request's credentials; its errors carry an HTTP status
	// (*httpx.APIError).
	Authenticate(r *http.Request) (Identity, error)
	// AuthenticateToken checks a first-frame token (session JWT or tool API key).
	AuthenticateToken(ctx context.Context, token string) (Identity, error)
	// AllowChat counts one message against the user's plan rate.
	AllowChat(ctx context.Context, id Identity) (ok bool, retryAfter time.Duration, err error)
}

// ReserveRequest asks the biller to hold credits for a turn.
type ReserveRequest struct {
	RequestID               string
	UserID                  bson.ObjectID
	Tool, Provider, Model   string
	PromptTokens, MaxTokens int64
}

// Reservation is what the biller held; Handle is the biller's own.
type Reservation struct {
	Handle      any
	MaxTokens   int64 // possibly lowered to what the balance pays for
	CapLowered  bool
	CreditsLeft int64
}

// Outcome is how a turn ended, for settlement.
type Outcome struct {
	Usage          providers.Usage
	Provider       string // who actually served the call (after a fallback)
	Model          string
	ProducedOutput bool
	Status         string // done | cancelled | failed | abandoned
	At             time.Time
	// Reason says why the outcome differs from what the client saw; billing keeps it on the
	// turn's settle entry.
	Reason string
}

// Settlement is what a turn cost.
type Settlement struct {
	CostMicros  int64
	Credits     int64
	CreditsLeft int64
}

// ErrInsufficientCredits is returned by Biller.Reserve when the balance cannot pay for a call.
var ErrInsufficientCredits = errors.New("insufficient credits")

// Biller holds, charges and refunds credits.
type Biller interface {
	Reserve(ctx context.Context, r ReserveRequest) (Reservation, error)
	Settle(ctx context.Context, res Reservation, o Outcome) (Settlement, error)
	// LiveCost prices usage so far without I/O, for chat.usage frames.
	LiveCost(res Reservation, provider, model string, u providers.Usage) (costMicros, creditsLeft int64)
}

// CompletedTurn describes a reply that ended (done or cancelled) for event subscribers.
type CompletedTurn struct {
	UserID                          bson.ObjectID
	Plan, Tool, SessionID, ID       string // ID: the client's request id
	Provider, Model, Status, Finish string
	Usage                           providers.Usage
	CostMicros, CreditsLeft         int64
}

// Events hears of finished turns (the webhooks' chat.completed and credits.low). It is called
// after the terminal frame was sent, so it never delays the client.
type Events interface {
	TurnCompleted(ctx context.Context, t CompletedTurn)
}

// Streamer is the provider registry.
type Streamer interface {
	Stream(ctx context.Context, provider string, req *providers.Request) (providers.Stream, error)
	List() []providers.ProviderInfo
}

// Options configure a Hub.
type Options struct {
	Auth      Authenticator
	Billing   Biller
	Providers Streamer
	Prices    *providers.PriceBook
	Events    Events // optional
	Mongo     *store.Store
	KV        kv.Store
	Tools     *tools.Registry
	Log       *slog.Logger

	AllowedOrigins   []string              // besides the same origin, for cookie-authenticated upgrades
	CookieName       string                // the browser session cookie; its presence means "credentials given"
	ReadLimit        int64                 // largest client frame; default 64 KiB (over it: close 1009)
	QueueLimit       int                   // bytes queued per connection before closing 4008; default 1 MiB
	MaxTurnsPerConn  int                   // default 4
	MaxTurnsPerUser  int                   // default 16
	Grace            time.Duration         // how long a reply outlives its dropped socket; default 30 s
	Unrecorded       bool                  // store no messages (MAULA_RECORDING=off, benchmarks only)
	WriteTimeout     time.Duration         // default 15 s
	PingInterval     time.Duration         // default 25 s
	PongWait         time.Duration         // default 60 s
	AuthTimeout      time.Duration         // first-frame auth; default 5 s
	HistoryTokens    int                   // token budget of history in a prompt; default 6000
	DefaultMaxTokens int                   // default output cap; default 1024
	InstanceID       string                // distinguishes instances in control messages
	Metrics          prometheus.Registerer // where the hub's series go; nil: nowhere
}

func (o *Options) defaults() {
	def := func(p *time.Duration, d time.Duration) {
		if *p <= 0 {
			*p = d
		}
	}
	defInt := func(p *int, d int) {
		if *p <= 0 {
			*p = d
		}
	}
	if o.ReadLimit <= 0 {
		o.ReadLimit = 64 << 10
	}
	defInt(&o.QueueLimit, 1<<20)
	defInt(&o.MaxTurnsPerConn, 4)
	defInt(&o.MaxTurnsPerUser, 16)
	defInt(&o.HistoryTokens, 6000)
	defInt(&o.DefaultMaxTokens, 1024)
	def(&o.Grace, 30*time.Second)
	def(&o.WriteTimeout, 15*time.Second)
	def(&o.PingInterval, 25*time.Second)
	def(&o.PongWait, 60*time.Second)
	def(&o.AuthTimeout, 5*time.Second)
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.InstanceID == "" {
		o.InstanceID = bson.NewObjectID().Hex()
	}
}

const numShards = 32

// shard holds a slice of the hub's connections and turns, keyed by user.
type shard struct {
	mu    sync.Mutex
	conns map[*conn]struct{}    // guarded by mu
	turns map[turnKey]*turn     // guarded by mu
	users map[bson.ObjectID]int // guarded by mu: running turns per user
}

type turnKey struct {
	user bson.ObjectID
	id   string
}

// Hub serves chat sockets. Its shards own the live connections and turns.
type Hub struct {
	o         Options
	shards    [numShards]shard
	seed      maphash.Seed
	m         *metrics
	rec       *recorder
	draining  atomic.Bool
	shutOnce  sync.Once
	turnsWG   sync.WaitGroup // running turns
	connsWG   sync.WaitGroup // open connections and their reader and writer goroutines
	poll      *poller        // watches idle connections' sockets
	keep      *keepalive     // pings connections and times them out
	stopCtl   context.CancelFunc
	ctlDone   chan struct{}
	baseCtx   context.Context // parent of every turn; cancelled at the end of Shutdown
	cancelAll context.CancelFunc
}

// New starts a hub: its recorder and its subscription to the cross-instance control channel.
func New(ctx context.Context, o Options) (*Hub, error) {
	o.defaults()
	h := &Hub{o: o, seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i] = shard{conns: map[*conn]struct{}{}, turns: map[turnKey]*turn{}, users: map[bson.ObjectID]int{}}
	}
	h.baseCtx, h.cancelAll = context.WithCancel(context.Background())
	poll, err := newPoller()
	if err != nil {
		return nil, fmt.Errorf("chat: poller: %w", err)
	}
	h.poll = poll
	h.rec = newRecorder(o.Mongo, o.Log, o.HistoryTokens)
	h.m = newMetrics(o.Metrics)
	cctx, cancel := context.WithCancel(context.Background())
	h.stopCtl = cancel
	if err := h.startControl(cctx); err != nil {
		cancel()
		h.rec.close()
		h.poll.stop()
		return nil, err
	}
	h.keep = newKeepalive(o.PingInterval, o.PongWait)
	return h, nil
}

func (h *Hub) shardFor(user bson.ObjectID) *shard {
	return &h.shards[maphash.Bytes(h.seed, user[:])%numShards]
}

// Shutdown refuses new turns, lets running ones finish until ctx is nearly done, cancels the
// rest (they are stored and billed), and closes every socket with 1001.
func (h *Hub) Shutdown(ctx context.Context) {
	h.shutOnce.Do(func() { h.shutdown(ctx) })
}

func (h *Hub) shutdown(ctx context.Context) {
	h.draining.Store(true)
	done := make(chan struct{})
	go func() { h.turnsWG.Wait(); close(done) }()
	// Leave a margin before the deadline to cancel, store and bill what is still running.
	wait := ctx
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		wait, cancel = context.WithDeadline(ctx, dl.Add(-time.Until(dl)/4))
		defer cancel()
	}
	select {
	case <-done:
	case <-wait.Done():
		h.forEachTurn(func(t *turn) { t.cancel(statusCancelled) })
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	h.forEachConn(func(c *conn) { c.closeAfterFlush(1001) })
	cdone := make(chan struct{})
	go func() { h.connsWG.Wait(); close(cdone) }()
	select {
	case <-cdone:
	case <-ctx.Done():
		// Out of time: drop the connections still open (and any that registered late).
		h.forEachConn(func(c *conn) { c.end() })
	}
	h.keep.stop()
	h.poll.stop()
	h.cancelAll()
	h.stopCtl()
	<-h.ctlDone
	h.rec.close()
}

func (h *Hub) forEachConn(f func(*conn)) {
	var all []*conn
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		for c := range s.conns {
			all = append(all, c)
		}
		s.mu.Unlock()
	}
	for _, c := range all { // outside the locks: closing may unregister
		f(c)
	}
}

func (h *Hub) forEachTurn(f func(*turn)) {
	var all []*turn
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		for _, t := range s.turns {
			all = append(all, t)
		}
		s.mu.Unlock()
	}
	for _, t := range all {
		f(t)
	}
}

// Stats are the hub's live counts, for metrics and tests.
type Stats struct{ Conns, Turns int }

// Stats counts open connections and running turns.
func (h *Hub) Stats() Stats {
	var st Stats
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		st.Conns += len(s.conns)
		st.Turns += len(s.turns)
		s.mu.Unlock()
	}
	return st
}
