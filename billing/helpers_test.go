package billing

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/maula-ai/maula-chat/internal/testenv"
	"github.com/maula-ai/maula-chat/kv"
	"github.com/maula-ai/maula-chat/providers"
	"github.com/maula-ai/maula-chat/store"
)

// fakePlans is the plan table of the tests.
type fakePlans map[string]int64

func (p fakePlans) Credits(plan string) (int64, bool) { c, ok := p[plan]; return c, ok }
func (p fakePlans) Period(string) time.Duration       { return 30 * 24 * time.Hour }

var testPlans = fakePlans{"free": 50, "pro": 1000, "enterprise": 100000}

// clock is a settable test clock shared by the services of one test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func newClock() *clock               { return &clock{t: time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)} }

type env struct {
	mongo *store.Store
	clk   *clock
	kv    kv.Store
}

// journalNames gives each service of the package's tests its own journal: they share one
// store, and a journal belongs to one service.
var journalNames atomic.Int64

var (
	sharedOnce  sync.Once
	sharedMongo *store.Store
)

// newEnv returns a Mongo for the test. One embedded FerretDB is shared by the package's tests
// (starting one costs seconds); tests use their own users, so they do not interfere.
func newEnv(t testing.TB) *env {
	t.Helper()
	sharedOnce.Do(func() { sharedMongo = testenv.Mongo(&onceTB{t}) })
	if sharedMongo == nil {
		t.Fatal("no test Mongo")
	}
	return &env{mongo: sharedMongo, clk: newClock(), kv: kv.NewMemory()}
}

// onceTB keeps the shared store alive past the first test's cleanup.
type onceTB struct{ testing.TB }

func (o *onceTB) Cleanup(func()) {}
func (o *onceTB) TempDir() string {
	d, err := osMkdirTemp()
	if err != nil {
		o.Fatal(err)
	}
	return d
}

func (e *env) service(t testing.TB, policy string, mpc int64) *Service {
	t.Helper()
	return e.serviceLocking(t, policy, mpc, "local")
}

// serviceLocking is service with a locking mode: "local" (one process is the only writer, as
// with the default embedded store) or "on" (the shared lease lock, for several instances).
func (e *env) serviceLocking(t testing.TB, policy string, mpc int64, locking string) *Service {
	t.Helper()
	return e.serviceJournal(t, policy, mpc, locking, fmt.Sprintf("test-%d", journalNames.Add(1)))
}

// serviceJournal is serviceLocking with the journal named: a second service with the name
// of one that died stands for the same process started again.
func (e *env) serviceJournal(t testing.TB, policy string, mpc int64, locking, journal string) *Service {
	t.Helper()
	s, err := New(context.Background(), Options{Mongo: e.mongo, KV: e.kv, Prices: providers.DefaultPrices(),
		Plans: testPlans, Policy: policy, MicrosPerCredit: mpc, Now: e.clk.Now, Locking: locking, Journal: journal})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newUser opens a subscription on plan "free" and sets the balance to b through a grant, so
// that the ledger accounts for every credit.
func newUser(t testing.TB, s *Service, b int64) bson.ObjectID {
	t.Helper()
	ctx := context.Background()
	u := bson.NewObjectID()
	if _, err := s.EnsureSubscription(ctx, u, "free"); err != nil {
		t.Fatal(err)
	}
	if d := b - testPlans["free"]; d != 0 {
		if err := s.Grant(ctx, u, d, "test balance"); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := s.Balance(ctx, u); got != b {
		t.Fatalf("balance %d, want %d", got, b)
	}
	return u
}

// ledgerSum is the sum of the applied ledger entries of a user: it must equal the balance.
func ledgerSum(t testing.TB, s *Service, u bson.ObjectID) (sum int64, pending int) {
	t.Helper()
	cur, err := s.ledger.Find(context.Background(), bson.D{{Key: "userId", Value: u}})
	if err != nil {
		t.Fatal(err)
	}
	var es []Entry
	if err := cur.All(context.Background(), &es); err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		switch e.State {
		case StateApplied:
			sum += e.Credits
		case StatePending:
			pending++
		}
	}
	return sum, pending
}

func checkLedger(t testing.TB, s *Service, u bson.ObjectID) int64 {
	t.Helper()
	bal, err := s.Balance(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	sum, pending := ledgerSum(t, s, u)
	if sum != bal || pending != 0 {
		t.Fatalf("ledger sum %d (pending %d) != balance %d", sum, pending, bal)
	}
	if bal < 0 {
		t.Fatalf("negative balance %d", bal)
	}
	return bal
}
