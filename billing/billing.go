package billing

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/maula-ai/maula-chat/kv"
	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/providers"
	"github.com/maula-ai/maula-chat/store"
)

// Credit policies.
const (
	// PolicyPerCall spends one credit for each call that produced output (the seed counts
	// LLM API calls); a call that failed before its first token costs nothing.
	PolicyPerCall = "per_call"
	// PolicyPerCost spends ceil(cost / MicrosPerCredit) credits.
	PolicyPerCost = "per_cost"
)

// Outcome statuses reported by the hub.
const (
	StatusDone      = "done"
	StatusCancelled = "cancelled"
	StatusFailed    = "failed"
	StatusAbandoned = "abandoned"
)

// Errors callers test with errors.Is.
var (
	// ErrInsufficientCredits: the balance does not pay for even one output token (per_cost)
	// or one call (per_call).
	ErrInsufficientCredits = errors.New("billing: insufficient credits")
	// ErrNoSubscription: the user has no subscription and no default plan could open one.
	ErrNoSubscription = errors.New("billing: no subscription")
	// ErrBadRequest: the request is malformed (empty request id, bad status, ...).
	ErrBadRequest = errors.New("billing: bad request")
	// ErrUnknownPlan: the plan is not in the plan table.
	ErrUnknownPlan = errors.New("billing: unknown plan")
)

// PlanSource is what billing needs of the plan table: the credits a plan grants per period
// and the period's length. Declared here, where it is used; an adapter over package plans
// satisfies it.
type PlanSource interface {
	// Credits returns the aiCredits a plan grants each period; ok is false for an unknown plan.
	Credits(plan string) (credits int64, ok bool)
	// Period returns the plan's billing period (e.g. 30 days); 0 means monthly.
	Period(plan string) time.Duration
}

// PlanPricer is optionally implemented by a PlanSource to put the plan's price on the billing
// record written at a plan change; without it the record's amount is 0.
type PlanPricer interface {
	Price(plan string) (amount float64, currency string)
}

// Options configure a Service.
type Options struct {
	Mongo  *store.Store
	KV     kv.Store // realtime counters; nil disables them
	Prices *providers.PriceBook
	Plans  PlanSource
	// Policy is PolicyPerCall (default) or PolicyPerCost.
	Policy string
	// MicrosPerCredit is what one credit buys under per_cost (default 1000 = $0.001).
	MicrosPerCredit int64
	Log             *slog.Logger
	Now             func() time.Time
	// DefaultPlan opens a subscription for a user who has none on their first Reserve
	// (default "free"; "-" disables it, and such users get ErrNoSubscription).
	DefaultPlan string
	// Locking is "auto" (default: on when the server is FerretDB, whose updates are not atomic
	// under concurrency; see lock.go), "on" or "off".
	Locking string
	// DanglingAfter is the age after which RecoverDangling treats an unfinished step as
	// abandoned by a dead process (default 15 minutes: longer than any turn). RecoverDangling's
	// olderThan parameter-free form uses it.
	DanglingAfter time.Duration
	// Journal names this process's journal when it is the store's only writer (Locking
	// "local"): the hub's turns are then written many at a time (journal.go). Default
	// "local"; "-" writes every step as it happens. Two services over one store must not share
	// a name, and a name must not change (nor the journal be turned off) between a crash and
	// the next start: the start reads the batches of its own name only.
	Journal string
}

// Service is the billing service. It is safe for concurrent use and holds no balance in
// memory: every instance shares the state in MongoDB.
type Service struct {
	o         Options
	log       *slog.Logger
	now       func() time.Time
	subs      *mongo.Collection // maula-auth-db.subscriptions
	ledger    *mongo.Collection // maula-auth-db.credit_ledger
	bills     *mongo.Collection // maula-auth-db.billing
	users     *mongo.Collection // maula-auth-db.users: only subscription.* on a plan change
	rollups   [numLevels]*mongo.Collection
	locking   bool               // serialize shared-document writes (FerretDB); set once by New
	localOnly bool               // Locking "local": the process-wide mutex is the whole lock; set once by New
	shared    *store.SharedLocks // nil when locking is off; set once by New
	// periodEnd caches each user's nextBillingDate (bson.ObjectID → time.Time) so that the lazy
	// rollover check costs no read on the hot path. Owned by this Service; a stale value only
	// delays the check to the next failed reserve, never skips it (see reserveOnce).
	periodEnd sync.Map
	// subIDs caches each user's subscription _id (bson.ObjectID → bson.ObjectID) so that, on
	// FerretDB, subscriptions are read and written by _id. Owned by readSub; a stale id (the
	// subscription was replaced) is detected by the read and looked up again.
	subIDs sync.Map
	// shadow holds, with locking "local", each user's subscription as the last updateSub
	// returned it (bson.ObjectID → *subDoc, never modified once stored). Written only under
	// the user's lock (onSub), read there (currentSub) and, without it, by reserveEarly, which
	// counts the early writes not yet in it (early.go).
	shadow sync.Map
	// early counts, per user, the reservations answered before they were written
	// (bson.ObjectID → *earlyUser; early.go); earlyJobs are those writes. earlyClosed (owned
	// by earlyMu) is set by WaitEarly: no write may start after it.
	early       sync.Map
	earlyJobs   sync.WaitGroup
	earlyMu     sync.RWMutex
	earlyClosed bool
	earlyHurry  chan struct{} // closed by WaitEarly: early writes waiting for their settle go now
	pairWait    time.Duration // see the const pairWait; set once by New (tests may change it first)
	// earlyFault fails early writes in tests; nil otherwise.
	earlyFault func(ReserveRequest) error
	// journalFault fails a journal's writes in tests (journal.go); nil otherwise.
	journalFault func(step string) error
	// rollupQ batches the rollup writes of turns settled concurrently (see record).
	rollupQ groupCommit[*Entry]
	// reports is the cost report's day views (report.go); set once by New.
	reports *reportCache
	// j writes the hub's turns many at a time (journal.go); nil unless locking is "local".
	// Set once by New.
	j *journal
}

// New opens the service and creates, idempotently, the indexes billing adds to the schema.
func New(ctx context.Context, o Options) (*Service, error) {
	if o.Mongo == nil || o.Prices == nil {
		return nil, errors.New("billing: Mongo and Prices are required")
	}
	switch o.Policy {
	case "":
		o.Policy = PolicyPerCall
	case PolicyPerCall, PolicyPerCost:
	default:
		return nil, fmt.Errorf("billing: unknown policy %q", o.Policy)
	}
	if o.MicrosPerCredit <= 0 {
		o.MicrosPerCredit = 1000
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DefaultPlan == "" {
		o.DefaultPlan = "free"
	}
	if o.DanglingAfter <= 0 {
		o.DanglingAfter = 15 * time.Minute
	}
	db := o.Mongo.DB(model.AuthDB)
	s := &Service{
		o: o, log: o.Log, now: o.Now,
		subs:   db.Collection(model.CollSubscriptions),
		ledger: db.Collection(model.CollLedger),
		bills:  db.Collection(model.CollBilling),
		users:  db.Collection(model.CollUsers),

		earlyHurry: make(chan struct{}),
		pairWait:   pairWait,
	}
	var err error
	s.localOnly = o.Locking == "local"
	if s.locking, err = store.NeedsLocking(ctx, o.Mongo, o.Locking); err != nil {
		return nil, err
	}
	if s.locking {
		s.shared = store.NewSharedLocks(o.Mongo, s.localOnly, o.Log)
	}
	for l := range numLevels {
		s.rollups[l] = db.Collection(levelColl[l])
	}
	s.reports = newReportCache(s)
	if err := ensureIndexes(ctx, o.Mongo); err != nil {
		return nil, err
	}
	// The rollup levels are created just above: index their _id lookups now (store/idindex.go).
	if _, err := o.Mongo.IndexIDs(ctx); err != nil {
		return nil, err
	}
	if s.localOnly && o.Journal != "-" {
		name := o.Journal
		if name == "" {
			name = "local"
		}
		if err := s.openJournal(ctx, name); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// ensureIndexes creates the indexes billing needs beyond store.Schema: the unique keys of the
// coarser rollup levels, the per-user rollup lookup and the ledger's recovery scan. Each is
// created only when missing (FerretDB rejects some repeated createIndexes).
func ensureIndexes(ctx context.Context, ms *store.Store) error {
	db := ms.DB(model.AuthDB)
	want := []struct {
		coll, name string
		ix         mongo.IndexModel
	}{
		{model.CollCostRollups, "userId_day", mongo.IndexModel{Keys: bson.D{{Key: "userId", Value: 1}, {Key: "day", Value: 1}}, Options: options.Index().SetName("userId_day")}},
		{levelColl[levelTool], "day_provider_model_tool_unique", mongo.IndexModel{Keys: bson.D{{Key: "day", Value: 1}, {Key: "provider", Value: 1}, {Key: "model", Value: 1}, {Key: "tool", Value: 1}}, Options: options.Index().SetName("day_provider_model_tool_unique").SetUnique(true)}},
		{levelColl[levelModel], "day_provider_model_unique", mongo.IndexModel{Keys: bson.D{{Key: "day", Value: 1}, {Key: "provider", Value: 1}, {Key: "model", Value: 1}}, Options: options.Index().SetName("day_provider_model_unique").SetUnique(true)}},
		{levelColl[levelUser], "day_userId_unique", mongo.IndexModel{Keys: bson.D{{Key: "day", Value: 1}, {Key: "userId", Value: 1}}, Options: options.Index().SetName("day_userId_unique").SetUnique(true)}},
		{model.CollLedger, "state_createdAt", mongo.IndexModel{Keys: bson.D{{Key: "state", Value: 1}, {Key: "createdAt", Value: 1}}, Options: options.Index().SetName("state_createdAt")}},
	}
	for _, w := range want {
		c := db.Collection(w.coll)
		name := w.name
		specs, err := c.Indexes().ListSpecifications(ctx)
		var ce mongo.CommandError
		if err != nil && !(errors.As(err, &ce) && ce.Code == 26) { // 26: NamespaceNotFound
			return fmt.Errorf("billing: list indexes of %s: %w", w.coll, err)
		}
		found := false
		for _, sp := range specs {
			found = found || sp.Name == name
		}
		if found {
			continue
		}
		if _, err := c.Indexes().CreateOne(ctx, w.ix); err != nil && !isIndexExists(err) {
			return fmt.Errorf("billing: create index %s on %s: %w", name, w.coll, err)
		}
	}
	return nil
}

func isIndexExists(err error) bool {
	var ce mongo.CommandError
	// 85 IndexOptionsConflict, 86 IndexKeySpecsConflict, 68 IndexAlreadyExists: another
	// instance created it between our list and create.
	return errors.As(err, &ce) && (ce.Code == 85 || ce.Code == 86 || ce.Code == 68)
}

// Policy returns the credit policy in force.
func (s *Service) Policy() string { return s.o.Policy }

var safeKey = regexp.MustCompile(`^[A-Za-z0-9_:-]{1,96}$`)

// holdKey is the field name under the subscription's holds map for a request id or an
// operation id. Ids that are not safe as a field name (dots, $, long) are hashed.
func holdKey(prefix, id string) string {
	if safeKey.MatchString(id) {
		return prefix + id
	}
	h := sha256.Sum256([]byte(id))
	return prefix + "h" + hex.EncodeToString(h[:12])
}

// dayOf is the UTC day of t as YYYY-MM-DD, the rollups' day key.
func dayOf(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// midnight is the start of t's UTC day, the analytics documents' date.
func midnight(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// ceilDiv returns ceil(a/b) for a ≥ 0, b > 0.
func ceilDiv(a, b int64) int64 {
	if a <= 0 {
		return 0
	}
	return (a + b - 1) / b
}

func isDup(err error) bool { return mongo.IsDuplicateKeyError(err) }
