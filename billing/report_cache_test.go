package billing

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/maula-ai/maula-chat/providers"
)

// cacheTurn records one settled turn into the rollups the way settle does.
func cacheTurn(t *testing.T, s *Service, at time.Time, p pairKey, tool string, user bson.ObjectID, u providers.Usage) {
	t.Helper()
	c, err := s.o.Prices.Cost(p.provider, p.model, u, at)
	if err != nil {
		t.Fatal(err)
	}
	e := &Entry{ID: bson.NewObjectID(), RequestID: bson.NewObjectID().Hex(), Phase: PhaseSettle, State: StateApplied, UserID: user,
		Tool: tool, Provider: p.provider, Model: p.model, CostMicros: c.Micros, PriceID: c.PriceID, Status: StatusDone, Output: true,
		Usage: &UsageDoc{Input: u.Input, Output: u.Output, CacheRead: u.CacheRead, CacheWrite: u.CacheWrite, Reasoning: u.Reasoning},
		At:    at, Day: dayOf(at)}
	if err := s.record(context.Background(), e); err != nil {
		t.Fatal(err)
	}
}

// scanned is the report of q read by scanning its level: the reference the cache must equal.
// reportPairs and reportTools are the priced models and the tools the report tests spread
// their turns over.
var (
	reportPairs = []pairKey{{"claude", "claude-sonnet-4-5"}, {"gpt", "gpt-5"}, {"gemini", "gemini-2.5-flash"}}
	reportTools = []string{"ipintel", "fraudguard", "botshield"}
)

// newUsers returns n new user ids.
func newUsers(n int) []bson.ObjectID {
	users := make([]bson.ObjectID, n)
	for i := range users {
		users[i] = bson.NewObjectID()
	}
	return users
}

// randUsage draws a turn's usage from r: cache reads in about half the turns, and cache writes
// too when cacheWrites is set.
func randUsage(r *rand.Rand, cacheWrites bool) providers.Usage {
	u := providers.Usage{Input: r.Int64N(4000), Output: 1 + r.Int64N(900), CacheRead: r.Int64N(2) * r.Int64N(3000)}
	if cacheWrites {
		u.CacheWrite = r.Int64N(2) * r.Int64N(500)
	}
	u.Reasoning = r.Int64N(50)
	return u
}

func scanned(t *testing.T, s *Service, q CostQuery) *CostReport {
	t.Helper()
	rep := &CostReport{GroupBy: q.GroupBy, Rows: []CostRow{}}
	agg := newCostAgg(q.GroupBy)
	if err := s.costsScan(context.Background(), q, q.level(), agg, &rep.Read); err != nil {
		t.Fatal(err)
	}
	agg.fill(rep)
	rep.order(q)
	return rep
}

func sameReport(a, b *CostReport) bool {
	return reflect.DeepEqual(a.Rows, b.Rows) && a.Totals == b.Totals
}

// TestCostsCache: the cached report equals a scan of its level after every kind of write a
// day can receive: open days followed by _id, a pair and a tool never seen, a late write into a
// closed day (after the recheck, or at once with Fresh; only Fresh once the day is settled),
// levels that disagree, eviction, and documents without derived ids.
func TestCostsCache(t *testing.T) {
	e := newEnv(t)
	e.clk.t = time.Date(2027, 3, 10, 12, 0, 0, 0, time.UTC)
	ctx := context.Background()
	s := e.service(t, PolicyPerCall, 0)
	r := rand.New(rand.NewPCG(3, 9))
	users, pairs, tools := newUsers(5), reportPairs, reportTools
	turn := func(at time.Time, p pairKey, tool string) {
		user := users[r.IntN(len(users))]
		cacheTurn(t, s, at, p, tool, user, randUsage(r, true))
	}
	for d := 1; d <= 8; d++ {
		for range 6 {
			turn(time.Date(2027, 3, d, r.IntN(24), 0, 0, 0, time.UTC), pairs[r.IntN(len(pairs))], tools[r.IntN(len(tools))])
		}
	}
	today := func(p pairKey, tool string) { turn(time.Date(2027, 3, 10, r.IntN(12), 0, 0, 0, time.UTC), p, tool) }
	for range 5 {
		today(pairs[r.IntN(len(pairs))], tools[r.IntN(len(tools))])
	}
	from, to := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(2027, 3, 10, 0, 0, 0, 0, time.UTC)
	var check func(what string, gb []string, fresh bool) ReadStats
	checkIn := func(t *testing.T, s *Service) {
		check = func(what string, gb []string, fresh bool) ReadStats {
			t.Helper()
			q := CostQuery{From: from, To: to, GroupBy: gb, Fresh: fresh}
			got, err := s.Costs(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if want := scanned(t, s, q); !sameReport(got, want) {
				t.Fatalf("%s %v: cached report\n%+v\n%+v\nscan\n%+v\n%+v", what, gb, got.Totals, got.Rows, want.Totals, want.Rows)
			}
			return got.Read
		}
	}
	checkIn(t, s)
	groupings := [][]string{{DimProvider}, {DimModel}, {DimDay}, {DimTool}, {DimUser}, {DimTool, DimDay}, {DimUser, DimDay}, {DimProvider, DimModel}}
	known := len(s.reportCache().pairs)
	for _, gb := range groupings {
		check("cold", gb, false)
		// Warm: the closed days from memory, today's model level read by _id (which answers a
		// model-level report's today), nothing scanned.
		cached := 10
		if (&CostQuery{GroupBy: gb}).level() == levelModel {
			cached = 9
		}
		if rd := check("warm", gb, false); rd.Scans != 0 || rd.CachedDays != cached || rd.Lookups != known {
			t.Fatalf("warm %v read %v, want %d cached days, %d lookups, no scan", gb, rd, cached, known)
		}
	}

	// Today moves on: the tool view follows by _id, a pair never used before included; the user
	// view is scanned again.
	today(pairs[0], tools[0])
	today(pairs[1], tools[2])
	today(pairKey{"mistral", "mistral-small-latest"}, tools[1])
	if rd := check("today", []string{DimTool}, false); rd.Scans != 0 {
		t.Fatalf("today's tool view scanned: %v", rd)
	}
	if rd := check("today", []string{DimUser}, false); rd.Scans != 1 {
		t.Fatalf("today's user view: %v", rd)
	}
	check("today", []string{DimProvider, DimModel}, false)
	// A tool never seen today: the sums disagree, the day is scanned.
	today(pairs[2], "idverify")
	if rd := check("new tool", []string{DimTool, DimDay}, false); rd.Scans != 1 {
		t.Fatalf("a tool never seen: %v", rd)
	}
	check("new tool", []string{DimTool}, false)

	// A late write into a closed day: trusted until the recheck, or Fresh.
	turn(time.Date(2027, 3, 2, 23, 59, 0, 0, time.UTC), pairs[0], tools[0])
	q := CostQuery{From: from, To: to, GroupBy: []string{DimTool}}
	costs := func(q CostQuery) *CostReport {
		t.Helper()
		got, err := s.Costs(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if sameReport(costs(q), scanned(t, s, q)) {
		t.Fatal("a closed day was read again before its recheck: the test does not test the recheck")
	}
	check("fresh", []string{DimTool}, true)
	check("fresh", []string{DimUser}, true)
	turn(time.Date(2027, 3, 3, 1, 0, 0, 0, time.UTC), pairs[1], tools[1])
	e.clk.Add(reportRecheck*3/2 + time.Second)
	for _, gb := range groupings {
		check("recheck", gb, false)
	}
	// A read reportSettle after the start is final: a later write shows only with Fresh.
	e.clk.Add(reportSettle)
	check("settled", []string{DimTool}, false)
	turn(time.Date(2027, 3, 5, 1, 0, 0, 0, time.UTC), pairs[1], tools[1])
	e.clk.Add(2 * reportRecheck)
	if sameReport(costs(q), scanned(t, s, q)) {
		t.Fatal("a settled closed day was read again without fresh")
	}
	check("fresh after settled", []string{DimTool}, true)

	// Levels that disagree (reconcile reports them): the report shows what the level holds, and
	// the day stays uncached.
	planted := bson.D{{Key: "_id", Value: "2027-03-04|" + pairs[0].provider + "|" + pairs[0].model + "|" + tools[0]}}
	turn(time.Date(2027, 3, 4, 5, 0, 0, 0, time.UTC), pairs[0], tools[0])
	if _, err := s.rollups[levelTool].UpdateOne(ctx, planted, bson.D{{Key: "$inc", Value: bson.D{{Key: "costMicros", Value: int64(1)}}}}); err != nil {
		t.Fatal(err)
	}
	s.ForgetCostCache()
	check("planted", []string{DimTool}, false)
	if rd := check("planted", []string{DimTool}, false); rd.Scans != 1 || rd.CachedDays != 9 {
		t.Fatalf("a day whose levels disagree was cached: %v", rd)
	}
	if _, err := s.rollups[levelTool].UpdateOne(ctx, planted, bson.D{{Key: "$inc", Value: bson.D{{Key: "costMicros", Value: int64(-1)}}}}); err != nil {
		t.Fatal(err)
	}

	// Eviction, and ranges too big to keep (summed as they are scanned), keep the report exact.
	defer func(n int) { reportMaxRows = n }(reportMaxRows)
	reportMaxRows = 5
	for _, gb := range groupings {
		check("evicting", gb, false)
	}
	s.ForgetCostCache()
	for _, gb := range groupings {
		check("too big to keep", gb, false)
	}
	reportMaxRows = 1 << 19
	check("kept again", []string{DimTool}, false)

	// The HTTP answer says how it was read, and fresh=1 reaches the query: every day's model
	// level read by _id, the tool views (kept just above) from memory.
	mux := http.NewServeMux()
	pass := func(h http.Handler) http.Handler { return h }
	s.Routes(mux, pass, pass, func(context.Context) (bson.ObjectID, bool) { return users[0], true })
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/admin/costs?from=2027-03-01&to=2027-03-10&groupBy=tool&fresh=1", nil))
	if h := rec.Header().Get("X-Cost-Read"); rec.Code != 200 || !strings.Contains(h, fmt.Sprintf(" lookups=%d scans=0 ", 10*known)) {
		t.Fatalf("%d, X-Cost-Read %q", rec.Code, h)
	}

	// Documents without a derived _id (older data dirs) cannot be read by _id: every report scans.
	t.Run("legacy ids", func(t *testing.T) {
		e.clk.t = time.Date(2027, 4, 5, 0, 0, 0, 0, time.UTC)
		s := e.service(t, PolicyPerCall, 0)
		checkIn(t, s)
		day := "2027-04-01"
		for _, l := range []int{levelModel, levelTool} {
			if _, err := s.rollups[l].InsertOne(ctx, Rollup{Day: day, Provider: "gpt", Model: "gpt-5", Tool: "ipintel", Requests: 1, Messages: 1, CostMicros: 7}); err != nil {
				t.Fatal(err)
			}
		}
		from, to = time.Date(2027, 4, 1, 0, 0, 0, 0, time.UTC), time.Date(2027, 4, 1, 0, 0, 0, 0, time.UTC)
		for range 2 {
			if rd := check("legacy", []string{DimTool}, false); rd.Scans != 1 || rd.CachedDays != 0 {
				t.Fatalf("legacy ids: %v", rd)
			}
		}
	})
}
