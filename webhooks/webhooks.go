// Package webhooks keeps the users' webhook subscriptions (the seed's <tool>-db.webhooks) and
// delivers their events: analysis.created, threshold.exceeded, chat.completed and credits.low.
//
// Events are not sent on the request path. Emitting one inserts a delivery per subscribed
// webhook into a queue collection (maula-auth-db.webhook_deliveries), so a restart loses
// nothing; a worker loop on every instance takes due deliveries, claims each attempt by
// inserting a claim document whose _id names the delivery, the attempt and a lease generation
// (an insert against a unique key is atomic on MongoDB and on FerretDB alike, so two instances
// never make one attempt twice), posts the body signed with HMAC-SHA256 over the timestamp and
// the body, and records the outcome: delivered, retried later per the webhook's retryPolicy
// (linear or exponential), or failed. Each webhook's stats count the attempts, and a run of
// failed attempts disables it. Destinations in loopback, link-local and private networks are
// refused when a webhook is saved and again at every connection, unless allowed.
package webhooks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/maula-ai/maula-chat/httpx"
	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/store"
	"github.com/maula-ai/maula-chat/tools"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Event types.
const (
	EventAnalysisCreated   = "analysis.created"
	EventThresholdExceeded = "threshold.exceeded"
	EventChatCompleted     = "chat.completed"
	EventCreditsLow        = "credits.low"
)

// Events lists every event type a webhook may subscribe to.
var Events = []string{EventAnalysisCreated, EventThresholdExceeded, EventChatCompleted, EventCreditsLow}

// Queue collections, in maula-auth-db: the pending deliveries, the claims of their attempts,
// and the log of finished deliveries (kept a week).
const (
	CollDeliveries  = "webhook_deliveries"
	CollClaims      = "webhook_claims"
	CollDeliveryLog = "webhook_delivery_log"
)

// Retry policy backoffs.
const (
	BackoffLinear      = "linear"
	BackoffExponential = "exponential"
)

// Defaults of Options and of a new webhook.
const (
	DefaultRetryBase    = 30 * time.Second
	DefaultDisableAfter = 20
	DefaultTimeout      = 10 * time.Second
	DefaultPoll         = time.Second
	DefaultWorkers      = 8
	DefaultMaxRetries   = 3
	DefaultThreshold    = 70
	MaxRetriesLimit     = 10
	MaxWebhooksPerTool  = 25
	maxHeaders          = 20
)

// Options configure a Service.
type Options struct {
	Mongo *store.Store
	Tools *tools.Registry
	// Identify returns the authenticated user of a request's context (false: none).
	Identify func(ctx context.Context) (bson.ObjectID, bool)
	Log      *slog.Logger
	// Now is the clock of delivery times and retry intervals (time.Now when nil).
	Now func() time.Time
	// AllowPrivate lets webhooks target loopback, link-local and private addresses
	// (MAULA_WEBHOOK_ALLOW_PRIVATE=1; for tests and closed networks).
	AllowPrivate bool
	// RetryBase is the first retry's delay: retry n waits RetryBase*n (linear) or
	// RetryBase*2^(n-1) (exponential).
	RetryBase time.Duration
	// DisableAfter is the run of consecutive failed attempts that disables a webhook.
	DisableAfter int
	// Timeout bounds one attempt (connect, send, answer headers, body).
	Timeout time.Duration
	// Poll is how often the worker looks for due deliveries when nothing woke it.
	Poll time.Duration
	// Workers is how many attempts run at once per instance.
	Workers int
	// Lease is how long a claimed attempt belongs to its claimer; after it another instance
	// may take the attempt over (the claimer died). Default 2 minutes; keep it well above
	// Timeout.
	Lease time.Duration
	// Client posts the deliveries (default: the SSRF-guarded client of newClient).
	Client *http.Client
	// Resolver checks webhook hosts when they are saved (net.DefaultResolver when nil).
	Resolver Resolver
}

// Service serves /api/{tool}/webhooks and delivers events.
type Service struct {
	o          Options
	deliveries *mongo.Collection
	claims     *mongo.Collection
	log        *mongo.Collection
	client     *http.Client
	resolver   Resolver
	instance   bson.ObjectID // names this instance in its claims

	// wake nudges the worker when this instance queued deliveries; capacity 1, sends never
	// block.
	wake chan struct{}

	// cache holds each (tool, user)'s active webhooks for a few seconds so emitting events
	// does not read the collection on every analysis. Guarded by cacheMu; entries are dropped
	// by this instance's own changes and expire after hookCacheTTL otherwise.
	cacheMu sync.Mutex
	cache   map[string]cachedHooks

	// lowClaimed holds, per user, the last UTC day whose credits.low marker this instance has
	// seen claimed: a user under the threshold reaches CreditsLow on every turn, and the
	// marker's insert would be one failed write each time. Bounded by the users; guarded by
	// lowMu.
	lowMu      sync.Mutex
	lowClaimed map[bson.ObjectID]string

	// cleanedAt is when the worker last removed old claims and finished deliveries; owned by
	// the worker loop (Run).
	cleanedAt time.Time
}

type cachedHooks struct {
	hooks []model.Webhook
	at    time.Time
}

// hookCacheTTL bounds how long another instance's webhook changes take to be seen.
const hookCacheTTL = 5 * time.Second

// New returns the service and creates the queue's indexes.
func New(ctx context.Context, o Options) (*Service, error) {
	if o.Mongo == nil || o.Tools == nil || o.Identify == nil {
		return nil, errors.New("webhooks: Mongo, Tools and Identify are required")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.RetryBase <= 0 {
		o.RetryBase = DefaultRetryBase
	}
	if o.DisableAfter <= 0 {
		o.DisableAfter = DefaultDisableAfter
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.Lease <= 0 {
		o.Lease = 2 * time.Minute
	}
	if o.Lease < 2*o.Timeout {
		o.Lease = 2 * o.Timeout
	}
	s := &Service{o: o, instance: bson.NewObjectID(), wake: make(chan struct{}, 1), cache: map[string]cachedHooks{}}
	db := o.Mongo.DB(store.AuthDB)
	s.deliveries, s.claims, s.log = db.Collection(CollDeliveries), db.Collection(CollClaims), db.Collection(CollDeliveryLog)
	s.client = o.Client
	if s.client == nil {
		s.client = newClient(o.Timeout, o.AllowPrivate)
	}
	s.resolver = o.Resolver
	if s.resolver == nil {
		s.resolver = net.DefaultResolver
	}
	if err := EnsureIndexes(ctx, s.deliveries, []Index{
		{"status_1_nextAttemptAt_1", bson.D{{Key: "status", Value: 1}, {Key: "nextAttemptAt", Value: 1}}},
	}); err != nil {
		return nil, err
	}
	if err := EnsureIndexes(ctx, s.log, []Index{{"updatedAt_1", bson.D{{Key: "updatedAt", Value: 1}}}, {"webhookId_1", bson.D{{Key: "webhookId", Value: 1}}}}); err != nil {
		return nil, err
	}
	if err := EnsureIndexes(ctx, s.claims, []Index{{"at_1", bson.D{{Key: "at", Value: 1}}}}); err != nil {
		return nil, err
	}
	return s, nil
}

// Index is a plain (non-unique) index to create.
type Index struct {
	Name string
	Keys bson.D
}

// EnsureIndexes creates the missing ones of idx on c, one at a time (FerretDB v1.24 panics
// when one createIndexes names several existing indexes).
func EnsureIndexes(ctx context.Context, c *mongo.Collection, idx []Index) error {
	have := map[string]bool{}
	specs, err := c.Indexes().ListSpecifications(ctx)
	var ce mongo.CommandError
	switch {
	case err == nil:
		for _, sp := range specs {
			have[sp.Name] = true
		}
	case errors.As(err, &ce) && ce.Code == 26: // NamespaceNotFound
	default:
		return fmt.Errorf("webhooks: list indexes of %s: %w", c.Name(), err)
	}
	for _, ix := range idx {
		if have[ix.Name] {
			continue
		}
		if _, err := c.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: ix.Keys, Options: options.Index().SetName(ix.Name)}); err != nil {
			return fmt.Errorf("webhooks: create index on %s: %w", c.Name(), err)
		}
	}
	return nil
}

// Routes mounts the webhook routes on mux behind require (which authenticates and checks that
// an API key belongs to the path's tool and may write).
func (s *Service) Routes(mux *http.ServeMux, require func(http.Handler) http.Handler) {
	mux.Handle("POST /api/{tool}/webhooks", require(s.handle(s.create)))
	mux.Handle("GET /api/{tool}/webhooks", require(s.handle(s.list)))
	mux.Handle("GET /api/{tool}/webhooks/{id}", require(s.handle(s.get)))
	mux.Handle("PATCH /api/{tool}/webhooks/{id}", require(s.handle(s.patch)))
	mux.Handle("DELETE /api/{tool}/webhooks/{id}", require(s.handle(s.delete)))
}

func (s *Service) handle(f func(w http.ResponseWriter, r *http.Request, c call) error) http.Handler {
	route := httpx.ToolRoute[bson.ObjectID, tools.Tool]{
		Identify: func(r *http.Request) (bson.ObjectID, bool) { return s.o.Identify(r.Context()) },
		Tool:     s.o.Tools.Get,
	}
	return route.Handle(func(w http.ResponseWriter, r *http.Request, uid bson.ObjectID, t tools.Tool) error {
		err := f(w, r, call{user: uid, tool: t.ID, coll: s.o.Mongo.DB(t.Database()).Collection(model.CollWebhooks)})
		var de *destinationError
		if errors.As(err, &de) {
			err = &httpx.APIError{Status: http.StatusBadRequest, Code: "blocked_destination", Message: de.msg, Err: err}
		}
		return err
	})
}

// call is one request's user and tool.
type call struct {
	user bson.ObjectID
	tool string
	coll *mongo.Collection
}

// RetryPolicyInput is the retryPolicy of a create or update.
type RetryPolicyInput struct {
	MaxRetries *int   `json:"maxRetries"`
	Backoff    string `json:"backoff"`
}

// Input is the body of POST and PATCH /api/{tool}/webhooks: every field is optional on PATCH;
// url and events are required on POST.
type Input struct {
	URL         *string           `json:"url"`
	Events      []string          `json:"events"`
	Headers     map[string]string `json:"headers"`
	RetryPolicy *RetryPolicyInput `json:"retryPolicy"`
	Threshold   *float64          `json:"threshold"`
	IsActive    *bool             `json:"isActive"`
}

var headerName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,63}$`)

// reservedHeaders are set by the delivery itself and may not be customised.
var reservedHeaders = map[string]bool{
	"Host": true, "Content-Length": true, "Content-Type": true, "Transfer-Encoding": true,
	"Connection": true, "Te": true, "Upgrade": true, "Trailer": true, "Keep-Alive": true,
	"Proxy-Authorization": true, "Proxy-Connection": true,
}

func badField(field, format string, args ...any) error {
	return &httpx.APIError{Status: http.StatusBadRequest, Code: "invalid_field", Message: field + ": " + fmt.Sprintf(format, args...)}
}

// validate checks in and fills w (the stored webhook) with its fields; create is true for
// POST, where url and events are required.
func (s *Service) validate(ctx context.Context, in *Input, w *model.Webhook, create bool) error {
	if in.URL != nil {
		u, err := s.checkURL(ctx, strings.TrimSpace(*in.URL))
		if err != nil {
			return err
		}
		w.URL = u.String()
	} else if create {
		return badField("url", "is required")
	}
	if in.Events != nil || create {
		if len(in.Events) == 0 {
			return badField("events", "must name at least one of %s", strings.Join(Events, ", "))
		}
		var evs []string
		for _, e := range in.Events {
			if !slices.Contains(Events, e) {
				return badField("events", "unknown event %q; want %s", e, strings.Join(Events, ", "))
			}
			if !slices.Contains(evs, e) {
				evs = append(evs, e)
			}
		}
		w.Events = evs
	}
	if in.Headers != nil {
		if len(in.Headers) > maxHeaders {
			return badField("headers", "at most %d headers", maxHeaders)
		}
		h := make(map[string]string, len(in.Headers))
		for k, v := range in.Headers {
			ck := http.CanonicalHeaderKey(k)
			switch {
			case !headerName.MatchString(k):
				return badField("headers", "%q is not a valid header name", k)
			case reservedHeaders[ck] || strings.HasPrefix(ck, "X-Maula-"):
				return badField("headers", "%s is set by the delivery and may not be customised", ck)
			case len(v) > 1024 || strings.ContainsAny(v, "\r\n\x00"):
				return badField("headers", "the value of %s must be one line of at most 1024 bytes", ck)
			}
			h[ck] = v
		}
		w.Headers = h
	} else if create {
		w.Headers = map[string]string{}
	}
	if in.RetryPolicy != nil || create {
		rp := model.RetryPolicy{MaxRetries: DefaultMaxRetries, Backoff: BackoffExponential}
		if p := in.RetryPolicy; p != nil {
			if p.MaxRetries != nil {
				if *p.MaxRetries < 0 || *p.MaxRetries > MaxRetriesLimit {
					return badField("retryPolicy.maxRetries", "must be between 0 and %d", MaxRetriesLimit)
				}
				rp.MaxRetries = *p.MaxRetries
			}
			switch p.Backoff {
			case "":
			case BackoffLinear, BackoffExponential:
				rp.Backoff = p.Backoff
			default:
				return badField("retryPolicy.backoff", "must be linear or exponential")
			}
		}
		w.RetryPolicy = rp
	}
	if in.Threshold != nil {
		if *in.Threshold < 0 || *in.Threshold > 100 {
			return badField("threshold", "must be between 0 and 100")
		}
		w.Threshold = *in.Threshold
	} else if create {
		w.Threshold = DefaultThreshold
	}
	return nil
}

// view is a webhook as the API shows it (never its secret).
type view struct {
	model.Webhook
	Tool string `json:"tool"`
}

func (s *Service) create(w http.ResponseWriter, r *http.Request, c call) error {
	var in Input
	if err := httpx.Decode(w, r, &in, 0); err != nil {
		return err
	}
	now := s.o.Now().UTC()
	hook := model.Webhook{ID: bson.NewObjectID(), UserID: c.user, IsActive: true, CreatedAt: now}
	if err := s.validate(r.Context(), &in, &hook, true); err != nil {
		return err
	}
	if in.IsActive != nil {
		hook.IsActive = *in.IsActive
	}
	n, err := c.coll.CountDocuments(r.Context(), bson.D{{Key: "userId", Value: c.user}})
	if err != nil {
		return fmt.Errorf("webhooks: count: %w", err)
	}
	if n >= MaxWebhooksPerTool {
		return httpx.Errorf(http.StatusConflict, "too_many_webhooks", "at most %d webhooks per tool", MaxWebhooksPerTool)
	}
	if hook.Secret, err = newSecret(); err != nil {
		return err
	}
	if _, err := c.coll.InsertOne(r.Context(), hook); err != nil {
		return fmt.Errorf("webhooks: insert: %w", err)
	}
	s.forget(c.tool, c.user)
	httpx.WriteJSON(w, http.StatusCreated, map[string]any{"webhook": view{hook, c.tool}, "secret": hook.Secret})
	return nil
}

func (s *Service) list(w http.ResponseWriter, r *http.Request, c call) error {
	cur, err := c.coll.Find(r.Context(), bson.D{{Key: "userId", Value: c.user}}, options.Find().SetSort(bson.D{{Key: "createdAt", Value: 1}}).SetLimit(MaxWebhooksPerTool*2))
	if err != nil {
		return fmt.Errorf("webhooks: list: %w", err)
	}
	var hooks []model.Webhook
	if err := cur.All(r.Context(), &hooks); err != nil {
		return fmt.Errorf("webhooks: list: %w", err)
	}
	out := make([]view, 0, len(hooks))
	for _, h := range hooks {
		out = append(out, view{h, c.tool})
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"webhooks": out})
	return nil
}

var errNotFound = httpx.Errorf(http.StatusNotFound, "not_found", "no such webhook")

func (s *Service) find(ctx context.Context, c call, id string) (model.Webhook, error) {
	var h model.Webhook
	oid, err := bson.ObjectIDFromHex(id)
	if err != nil {
		return h, errNotFound
	}
	err = c.coll.FindOne(ctx, bson.D{{Key: "_id", Value: oid}, {Key: "userId", Value: c.user}}).Decode(&h)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return h, errNotFound
	}
	if err != nil {
		return h, fmt.Errorf("webhooks: find: %w", err)
	}
	return h, nil
}

func (s *Service) get(w http.ResponseWriter, r *http.Request, c call) error {
	h, err := s.find(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"webhook": view{h, c.tool}})
	return nil
}

func (s *Service) patch(w http.ResponseWriter, r *http.Request, c call) error {
	var in Input
	if err := httpx.Decode(w, r, &in, 0); err != nil {
		return err
	}
	h, err := s.find(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := s.validate(r.Context(), &in, &h, false); err != nil {
		return err
	}
	now := s.o.Now().UTC()
	set := bson.D{{Key: "url", Value: h.URL}, {Key: "events", Value: h.Events}, {Key: "headers", Value: h.Headers},
		{Key: "retryPolicy", Value: h.RetryPolicy}, {Key: "threshold", Value: h.Threshold}, {Key: "updatedAt", Value: now}}
	update := bson.D{}
	if in.IsActive != nil {
		h.IsActive = *in.IsActive
		set = append(set, bson.E{Key: "isActive", Value: h.IsActive})
		if h.IsActive {
			// Re-enabling starts a new run of failures.
			h.ConsecutiveFailures, h.DisabledAt, h.DisabledReason = 0, nil, ""
			set = append(set, bson.E{Key: "consecutiveFailures", Value: 0})
			update = append(update, bson.E{Key: "$unset", Value: bson.D{{Key: "disabledAt", Value: ""}, {Key: "disabledReason", Value: ""}}})
		}
	}
	update = append(bson.D{{Key: "$set", Value: set}}, update...)
	h.UpdatedAt = &now
	res, err := c.coll.UpdateOne(r.Context(), bson.D{{Key: "_id", Value: h.ID}, {Key: "userId", Value: c.user}}, update)
	if err != nil {
		return fmt.Errorf("webhooks: update: %w", err)
	}
	if res.MatchedCount == 0 {
		return errNotFound
	}
	s.forget(c.tool, c.user)
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"webhook": view{h, c.tool}})
	return nil
}

func (s *Service) delete(w http.ResponseWriter, r *http.Request, c call) error {
	oid, err := bson.ObjectIDFromHex(r.PathValue("id"))
	if err != nil {
		return errNotFound
	}
	res, err := c.coll.DeleteOne(r.Context(), bson.D{{Key: "_id", Value: oid}, {Key: "userId", Value: c.user}})
	if err != nil {
		return fmt.Errorf("webhooks: delete: %w", err)
	}
	if res.DeletedCount == 0 {
		return errNotFound
	}
	s.forget(c.tool, c.user)
	// Its pending deliveries are cancelled when the worker reaches them.
	httpx.WriteJSON(w, http.StatusOK, map[string]bool{"deleted": true})
	return nil
}

func cacheKey(tool string, user bson.ObjectID) string { return tool + "|" + user.Hex() }

// forget drops the cached webhooks of (tool, user) after a change made here.
func (s *Service) forget(tool string, user bson.ObjectID) {
	s.cacheMu.Lock()
	delete(s.cache, cacheKey(tool, user))
	s.cacheMu.Unlock()
}

// activeHooks returns the user's active webhooks of tool, from the cache when fresh.
func (s *Service) activeHooks(ctx context.Context, tool string, user bson.ObjectID) ([]model.Webhook, error) {
	k := cacheKey(tool, user)
	s.cacheMu.Lock()
	e, ok := s.cache[k]
	s.cacheMu.Unlock()
	if ok && time.Since(e.at) < hookCacheTTL {
		return e.hooks, nil
	}
	t, known := s.o.Tools.Get(tool)
	if !known {
		return nil, fmt.Errorf("webhooks: unknown tool %q", tool)
	}
	cur, err := s.o.Mongo.DB(t.Database()).Collection(model.CollWebhooks).Find(ctx,
		bson.D{{Key: "userId", Value: user}, {Key: "isActive", Value: true}})
	if err != nil {
		return nil, fmt.Errorf("webhooks: find active: %w", err)
	}
	var hooks []model.Webhook
	if err := cur.All(ctx, &hooks); err != nil {
		return nil, fmt.Errorf("webhooks: find active: %w", err)
	}
	s.cacheMu.Lock()
	if len(s.cache) > 10000 {
		clear(s.cache)
	}
	s.cache[k] = cachedHooks{hooks: hooks, at: time.Now()}
	s.cacheMu.Unlock()
	return hooks, nil
}
