// Package auth is maula-chat's identity layer over the seed's shared auth database
// (maula-auth-db): registration with a free subscription and 50 default tool API keys, login
// with bcrypt and optional TOTP, sessions as HS256 JWTs backed by `sessions` documents,
// API keys stored as SHA-256 hashes, rate limits on the kv primitives, admin checks, and the
// batched API request logs of each tool database.
//
// Validation is the hot path (every HTTP request and every WebSocket upgrade): a warm request
// costs one JWT signature check and one lookup in an in-process LRU. The LRU sits in front of
// the kv cache (Redis when shared) and the database, and every instance drops entries when any
// instance publishes a revocation on the kv pub/sub, so a logout holds everywhere at once.
//
// Nothing on the request path writes to MongoDB per request: key usage goes to kv counters
// flushed in batches, lastActiveAt is written at most once a minute per session, and API logs
// are queued and inserted in batches by one background loop.
package auth

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maula-ai/maula-chat/kv"
	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/plans"
	"github.com/maula-ai/maula-chat/store"
	"github.com/maula-ai/maula-chat/tools"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"golang.org/x/crypto/bcrypt"
)

// Options configure a Service. Mongo, KV and Tools are required; the rest have defaults.
type Options struct {
	Mongo *store.Store
	KV    kv.Store
	Tools *tools.Registry
	// Plans is the plan table; nil uses plans.Default().
	Plans *plans.Table
	Log   *slog.Logger
	// JWTSecret signs session tokens; empty loads (or creates once, mode 0600) DataDir/jwt-secret.
	JWTSecret string
	// JWTPreviousSecrets still verify tokens signed before a rotation (their kid names them);
	// new tokens are always signed with JWTSecret.
	JWTPreviousSecrets []string
	DataDir            string
	// BcryptCost for password hashes; 0 means bcrypt.DefaultCost+2 (12).
	BcryptCost  int
	AdminEmails []string
	// SMTPURL (smtp://user:pass@host:port) sends verification mail; empty logs the link.
	SMTPURL string
	// PublicURL is the external root for links in mail (including any proxy prefix); empty
	// derives it from the request and BasePath.
	PublicURL string
	// BasePath is the proxy prefix; it is the session cookie's Path.
	BasePath string
	// AllowedOrigins may send cookie-authenticated state-changing requests besides the
	// request's own host (the same list the chat socket uses).
	AllowedOrigins []string
	// Now is the clock (tests inject one); nil uses time.Now.
	Now func() time.Time

	// SessionTTL is a session token's lifetime (default 7 days).
	SessionTTL time.Duration
	// FlushInterval is how often key usage, lastActiveAt touches and API logs are written
	// (default 5 s).
	FlushInterval time.Duration
	// LoginAttempts per email+IP per LoginWindow before 429 (default 10 per 15 minutes).
	LoginAttempts int
	LoginWindow   time.Duration
	// Mailer replaces the SMTP/log mailer (tests capture mail with it).
	Mailer Mailer
	// LocalCacheSize bounds each in-process LRU (sessions, keys); default 10000.
	LocalCacheSize int
	// OnInvalidate, when set, is called after this instance applied an invalidation received on
	// the pub/sub channel (tests synchronise on it instead of sleeping).
	OnInvalidate func(kind, id string)
}

// Service is the auth subsystem of one instance. It is safe for concurrent use; its fields are
// set by New and never change, except where a comment names the owner.
type Service struct {
	o        Options
	log      *slog.Logger
	now      func() time.Time
	plans    *plans.Table
	keyring  *keyring
	verify   []byte // HMAC key of email verification tokens, derived from the JWT secret
	dummy    []byte // bcrypt hash compared when the email is unknown, so both answers take as long
	mailer   Mailer
	users    *mongo.Collection
	sessions *mongo.Collection
	keys     *mongo.Collection
	subs     *mongo.Collection
	// balances, when set (SetBalanceBarrier, before serving), is waited for before a
	// subscription is read, so that it holds every turn already answered.
	balances func(context.Context) error

	// The in-process caches are guarded by their own locks; entries are dropped by the pub/sub
	// loop (invalidations from every instance) and by this instance's own revocations.
	sessCache *lru[sessionEntry]
	keyCache  *lru[keyEntry]
	// tokCache remembers session tokens whose signature was verified, by SHA-256; it needs no
	// invalidation because revocation is checked on sessCache by session id every time.
	tokCache *lru[tokenInfo]

	// logs and touches are queues owned by the flush loop: request paths only do non-blocking
	// sends, the loop is the only reader.
	logs        chan toolLog
	touches     chan touch
	droppedLogs atomic.Int64 // API logs dropped on a full queue, reported by the flush loop

	bg        context.Context // done when Close begins
	stop      context.CancelFunc
	wg        sync.WaitGroup // the background loops, mail senders and delayed deletes
	closeOnce sync.Once
	closeErr  error
}

const (
	// invalidateChannel carries "<kind>:<id>" revocations to every instance.
	invalidateChannel = "auth:invalidate"
	// sessionCacheTTL is the kv session cache lifetime (the seed's 24 h).
	sessionCacheTTL = 24 * time.Hour
	// localTTL bounds how long an instance trusts its in-process copy without asking kv again:
	// the safety net should a pub/sub message ever be lost, and the cadence of the
	// lastActiveAt touch.
	localTTL = time.Minute
	// usageKey is the kv hash of pending API key usage counts (field: key id).
	usageKey = "apikey:usage"
)

// New opens the auth service: it loads or creates the JWT secret, subscribes to invalidations
// and starts the flush loop. Close stops it.
// SetBalanceBarrier makes GET /auth/me wait for f before it reads the subscription: billing's
// WaitApplied, whose batches of turns are answered before the subscription is written. Call
// it before serving.
func (s *Service) SetBalanceBarrier(f func(context.Context) error) { s.balances = f }

func New(ctx context.Context, o Options) (*Service, error) {
	if o.Mongo == nil || o.KV == nil || o.Tools == nil {
		return nil, errors.New("auth: Mongo, KV and Tools are required")
	}
	if o.Plans == nil {
		o.Plans = plans.Default()
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.BcryptCost == 0 {
		o.BcryptCost = 12
	}
	if o.BcryptCost < bcrypt.MinCost || o.BcryptCost > bcrypt.MaxCost {
		return nil, fmt.Errorf("auth: bcrypt cost %d out of range", o.BcryptCost)
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = 7 * 24 * time.Hour
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 5 * time.Second
	}
	if o.LoginAttempts <= 0 {
		o.LoginAttempts = 10
	}
	if o.LoginWindow <= 0 {
		o.LoginWindow = 15 * time.Minute
	}
	if o.LocalCacheSize <= 0 {
		o.LocalCacheSize = 10000
	}
	for i, e := range o.AdminEmails {
		o.AdminEmails[i] = strings.ToLower(strings.TrimSpace(e))
	}
	secret := o.JWTSecret
	if secret == "" {
		var err error
		if secret, err = loadOrCreateSecret(o.DataDir); err != nil {
			return nil, err
		}
	}
	kr, err := newKeyring(secret, o.JWTPreviousSecrets)
	if err != nil {
		return nil, err
	}
	// A dummy hash at the configured cost: comparing against it costs what a real compare does.
	pw := make([]byte, 16)
	_, _ = rand.Read(pw)
	dummy, err := bcrypt.GenerateFromPassword(pw, o.BcryptCost)
	if err != nil {
		return nil, fmt.Errorf("auth: dummy hash: %w", err)
	}
	db := o.Mongo.DB(model.AuthDB)
	s := &Service{
		o: o, log: o.Log, now: o.Now, plans: o.Plans, keyring: kr,
		verify: deriveKey(secret, "maula-email-verify"), dummy: dummy,
		users: db.Collection(model.CollUsers), sessions: db.Collection(model.CollSessions),
		keys: db.Collection(model.CollAPIKeys), subs: db.Collection(model.CollSubscriptions),
		sessCache: newLRU[sessionEntry](o.LocalCacheSize),
		keyCache:  newLRU[keyEntry](o.LocalCacheSize),
		tokCache:  newLRU[tokenInfo](o.LocalCacheSize),
		logs:      make(chan toolLog, 4096),
		touches:   make(chan touch, 4096),
	}
	s.mailer = o.Mailer
	if s.mailer == nil {
		if s.mailer, err = newMailer(o.SMTPURL, o.Log); err != nil {
			return nil, err
		}
	}
	// The subscription must be live before New returns: a revocation published by another
	// instance right after must reach this one.
	bg, stop := context.WithCancel(context.Background())
	inval, err := o.KV.Subscribe(bg, invalidateChannel)
	if err != nil {
		stop()
		return nil, fmt.Errorf("auth: subscribe to invalidations: %w", err)
	}
	s.bg, s.stop = bg, stop
	s.wg.Add(2)
	go s.invalidationLoop(inval)
	go s.flushLoop(bg)
	return s, nil
}

// Close stops the background loops and flushes pending key usage, session touches and API
// logs within ctx. It is idempotent. Call it after the HTTP server has drained and before the
// stores close.
func (s *Service) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.stop()
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			s.closeErr = fmt.Errorf("auth: close: %w", ctx.Err())
			return
		}
		s.closeErr = s.Flush(ctx)
	})
	return s.closeErr
}

// stopped is closed when Close begins.
func (s *Service) stopped() <-chan struct{} { return s.bg.Done() }

// Plans returns the plan table in force.
func (s *Service) Plans() *plans.Table { return s.plans }

// flushLoop is the single writer of batched state: key usage, lastActiveAt and API logs.
func (s *Service) flushLoop(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(s.o.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := s.Flush(fctx); err != nil {
				s.log.Warn("auth flush failed; will retry", "err", err)
			}
			cancel()
		}
	}
}

// Flush writes what is pending now: key usage counters, lastActiveAt touches and API logs.
// The flush loop calls it on its tick and Close at the end; tests call it to avoid waiting.
func (s *Service) Flush(ctx context.Context) error {
	return errors.Join(s.flushUsage(ctx), s.flushTouches(ctx), s.flushLogs(ctx))
}

// invalidationLoop applies revocations published by any instance (this one included).
func (s *Service) invalidationLoop(in <-chan []byte) {
	defer s.wg.Done()
	for msg := range in {
		kind, id, ok := strings.Cut(string(msg), ":")
		if !ok {
			continue
		}
		switch kind {
		case "session":
			s.sessCache.Tombstone(id)
		case "key":
			s.keyCache.Tombstone(id)
		case "user":
			s.sessCache.RemoveIf(func(e sessionEntry) bool { return e.UserID == id })
			s.keyCache.RemoveIf(func(e keyEntry) bool { return e.UserID == id })
		default:
			continue
		}
		if s.o.OnInvalidate != nil {
			s.o.OnInvalidate(kind, id)
		}
	}
}

// publishInvalidation tells every instance to drop kind:id from its in-process cache.
func (s *Service) publishInvalidation(ctx context.Context, kind, id string) error {
	if err := s.o.KV.Publish(ctx, invalidateChannel, []byte(kind+":"+id)); err != nil {
		return fmt.Errorf("publish %s invalidation: %w", kind, err)
	}
	return nil
}
