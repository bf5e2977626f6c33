package billing

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/providers"
	"github.com/maula-ai/maula-chat/tools"
)

// exactTurn is one generated turn and what billing answered for it.
type exactTurn struct {
	rid    string
	tool   string
	pair   pairKey
	user   bson.ObjectID
	at     time.Time
	usage  providers.Usage
	status string
	output bool
	cost   int64
	price  string
}

// TestCostsExactAfterTurns is the exactness check of the money issue: after turns generated
// through Reserve and Settle (plus the assistant messages the hub stores), across the 50 tools,
// every priced model of the five providers (with cache reads, cache writes and reasoning), many
// users and 31 days (the last one open), /admin/costs answers every groupBy of one or two
// dimensions with rows and totals equal to sums computed here from the turns, to the
// micro-dollar and token, both cold and from the cache; the total equals the sum of the stored
// messages' costs; and Reconcile reports nothing.
//
// 150 turns by default (30-60 s under -race on a shared 2-core machine); MAULA_LONG_TESTS=1 runs
// 100,000 over 1,000 users, MAULA_EXACT_TURNS=n any other size.
func TestCostsExactAfterTurns(t *testing.T) {
	n, nUsers := 150, 40
	if os.Getenv("MAULA_LONG_TESTS") == "1" {
		n, nUsers = 100_000, 1000
	}
	if v, err := strconv.Atoi(os.Getenv("MAULA_EXACT_TURNS")); err == nil && v > 0 {
		n, nUsers = v, max(40, v/100)
	}
	e := newEnv(t)
	e.clk.t = time.Date(2027, 6, 15, 12, 0, 0, 0, time.UTC)
	ctx := context.Background()
	s := e.service(t, PolicyPerCall, 0)
	first := time.Date(2027, 5, 16, 0, 0, 0, 0, time.UTC)
	from, to := dayOf(first), dayOf(e.clk.Now())

	var pairs []pairKey
	for _, pm := range PricedModels(s.o.Prices) {
		if pm.Provider != "echo" {
			pairs = append(pairs, pairKey{pm.Provider, pm.Model})
		}
	}
	var toolIDs []string
	for _, tl := range tools.Default().All() {
		toolIDs = append(toolIDs, tl.ID)
	}
	users := make([]bson.ObjectID, nUsers)
	for i := range users {
		users[i] = bson.NewObjectID()
		if _, err := s.EnsureSubscription(ctx, users[i], "enterprise"); err != nil {
			t.Fatal(err)
		}
	}

	r := rand.New(rand.NewPCG(6, uint64(n)))
	turns := make([]exactTurn, n)
	for i := range turns {
		day := r.IntN(31)
		at := first.AddDate(0, 0, day).Add(time.Duration(r.IntN(24*3600)) * time.Second)
		if day == 30 { // today, before now
			at = first.AddDate(0, 0, day).Add(time.Duration(r.IntN(12*3600)) * time.Second)
		}
		tr := exactTurn{rid: fmt.Sprintf("exact-%d-%d", n, i), tool: toolIDs[r.IntN(len(toolIDs))], pair: pairs[r.IntN(len(pairs))],
			user: users[r.IntN(len(users))], at: at, status: StatusDone, output: true}
		switch k := r.IntN(20); {
		case k == 0: // failed before its first token: nothing used, nothing stored
			tr.status, tr.output = StatusFailed, false
		default:
			if k == 1 {
				tr.status = StatusCancelled
			}
			u := providers.Usage{Input: r.Int64N(8000), Output: 1 + r.Int64N(2000)}
			if r.IntN(50) == 0 {
				u.Input = 150_000 + r.Int64N(50_000)
			}
			if r.IntN(2) == 0 {
				u.CacheRead = r.Int64N(20_000)
			}
			if r.IntN(4) == 0 {
				u.CacheWrite = r.Int64N(5_000)
			}
			if r.IntN(3) == 0 {
				u.Reasoning = r.Int64N(u.Output + 1)
			}
			tr.usage = u
		}
		turns[i] = tr
	}

	// Through the real money path, eight turns at a time (MAULA_EXACT_WORKERS).
	st := time.Now()
	var wg sync.WaitGroup
	next := make(chan int)
	workers := 8
	if v, err := strconv.Atoi(os.Getenv("MAULA_EXACT_WORKERS")); err == nil && v > 0 {
		workers = v
	}
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				tr := &turns[i]
				res, err := s.Reserve(ctx, ReserveRequest{RequestID: tr.rid, UserID: tr.user, Tool: tr.tool, Provider: tr.pair.provider,
					Model: tr.pair.model, PromptTokens: tr.usage.Input, MaxTokens: 4096,
					Fresh: i%2 == 0}) // every id is new: half the turns may be answered early (early.go)
				if err == nil {
					var set *Settlement
					set, err = s.Settle(ctx, res, Outcome{Usage: tr.usage, ProducedOutput: tr.output, Status: tr.status, At: tr.at})
					if err == nil {
						tr.cost, tr.price = set.CostMicros, set.PriceID
					}
				}
				if err != nil {
					select {
					case errs <- fmt.Errorf("turn %s: %w", tr.rid, err):
					default:
					}
				}
			}
		}()
	}
	for i := range turns {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d turns reserved and settled in %v", n, time.Since(st))

	// What the hub stores: the assistant message of every turn that produced output, priced by
	// billing. The cost is checked against the price book here, independently.
	msgs := map[string][]any{}
	var stored int64
	for i := range turns {
		tr := &turns[i]
		c, err := s.o.Prices.Cost(tr.pair.provider, tr.pair.model, tr.usage, tr.at)
		if err != nil || c.Micros != tr.cost {
			t.Fatalf("turn %s settled at %d µ$, the price book says %d (%v)", tr.rid, tr.cost, c.Micros, err)
		}
		if !tr.output {
			continue
		}
		u := tr.usage
		msgs[tr.tool] = append(msgs[tr.tool], model.ChatMessage{ID: bson.NewObjectID(), UserID: tr.user, SessionID: "s", Provider: tr.pair.provider,
			Role: "assistant", Message: "reply", Model: tr.pair.model, RequestID: tr.rid, Timestamp: tr.at,
			Tokens: model.ChatTokens{Input: u.Input, Output: u.Output, CacheRead: u.CacheRead, CacheWrite: u.CacheWrite, Reasoning: u.Reasoning,
				Cost: float64(tr.cost) / 1e6, CostMicros: tr.cost, PriceID: tr.price}})
		stored += tr.cost
	}
	for tool, ms := range msgs {
		for i := 0; i < len(ms); i += 5000 {
			if _, err := e.mongo.DB(tool+"-db").Collection(model.CollChatHistory).InsertMany(ctx, ms[i:min(i+5000, len(ms))]); err != nil {
				t.Fatal(err)
			}
		}
	}

	// The sum of the stored messages' costs, read back.
	var readBack int64
	var dbs []string
	for _, tool := range toolIDs {
		dbs = append(dbs, tool+"-db")
		cur, err := e.mongo.DB(tool+"-db").Collection(model.CollChatHistory).Find(ctx, bson.D{{Key: "role", Value: "assistant"},
			{Key: "timestamp", Value: bson.D{{Key: "$gte", Value: first}, {Key: "$lt", Value: first.AddDate(0, 0, 31)}}}})
		if err != nil {
			t.Fatal(err)
		}
		var ms []model.ChatMessage
		if err := cur.All(ctx, &ms); err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			readBack += m.Tokens.CostMicros
		}
	}
	if readBack != stored {
		t.Fatalf("stored messages cost %d µ$, the turns %d", readBack, stored)
	}

	var mux *http.ServeMux
	serve := func(s *Service) {
		mux = http.NewServeMux()
		pass := func(h http.Handler) http.Handler { return h }
		s.Routes(mux, pass, pass, func(context.Context) (bson.ObjectID, bool) { return users[0], true })
	}
	serve(s)
	get := func(query string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/admin/costs?from="+from+"&to="+to+query, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", query, rec.Code, rec.Body)
		}
		return rec
	}
	key := func(gb []string, provider, model, tool, user, day string) string {
		var k []string
		for _, d := range gb {
			k = append(k, map[string]string{DimProvider: provider, DimModel: model, DimTool: tool, DimUser: user, DimDay: day}[d])
		}
		return strings.Join(k, "|")
	}
	var groupings [][]string
	for i, a := range dims {
		groupings = append(groupings, []string{a})
		for _, b := range dims[i+1:] {
			groupings = append(groupings, []string{a, b})
		}
	}
	check := func(passes ...string) {
		for _, gb := range groupings {
			want := map[string]*CostRow{}
			var total CostRow
			for i := range turns {
				tr := &turns[i]
				row := CostRow{Requests: 1, Input: tr.usage.Input, Output: tr.usage.Output, CacheRead: tr.usage.CacheRead,
					CacheWrite: tr.usage.CacheWrite, Reasoning: tr.usage.Reasoning, CostMicros: tr.cost}
				if tr.output {
					row.Messages = 1
				}
				k := key(gb, tr.pair.provider, tr.pair.model, tr.tool, tr.user.Hex(), dayOf(tr.at))
				if want[k] == nil {
					want[k] = &CostRow{}
				}
				want[k].add(&row)
				total.add(&row)
			}
			if total.CostMicros != stored {
				t.Fatalf("the turns' costs %d µ$, the stored messages' %d", total.CostMicros, stored)
			}
			for _, pass := range passes {
				st := time.Now()
				rec := get("&groupBy=" + strings.Join(gb, ","))
				var rep CostReport
				if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
					t.Fatal(err)
				}
				t.Logf("%v %s: %d rows in %v (%s)", gb, pass, len(rep.Rows), time.Since(st).Round(time.Millisecond), rec.Header().Get("X-Cost-Read"))
				var rd ReadStats
				if _, err := fmt.Sscanf(rec.Header().Get("X-Cost-Read"), "cachedDays=%d lookups=%d scans=%d docs=%d storedDays=%d",
					&rd.CachedDays, &rd.Lookups, &rd.Scans, &rd.Docs, &rd.StoredDays); err != nil {
					t.Fatal(err)
				}
				// After a restart, the 30 closed days of a cached level come from the summaries
				// (or, once read, from memory); only today is read from the rollups.
				if pass == "restarted" && (&CostQuery{GroupBy: gb}).level() != levelFull && rd.StoredDays+rd.CachedDays < 30 {
					t.Fatalf("%v %s: read %v, want the 30 closed days from the summaries or memory", gb, pass, rd)
				}
				if rep.Totals != total {
					t.Fatalf("%v %s: totals %+v, want %+v", gb, pass, rep.Totals, total)
				}
				if len(rep.Rows) != len(want) {
					t.Fatalf("%v %s: %d rows, want %d", gb, pass, len(rep.Rows), len(want))
				}
				for _, row := range rep.Rows {
					k := key(gb, row.Provider, row.Model, row.Tool, row.User, row.Day)
					w := want[k]
					if w == nil || w.Requests != row.Requests || w.Messages != row.Messages || w.Input != row.Input || w.Output != row.Output ||
						w.CacheRead != row.CacheRead || w.CacheWrite != row.CacheWrite || w.Reasoning != row.Reasoning ||
						w.CostMicros != row.CostMicros || w.CostUSD != row.CostUSD {
						t.Fatalf("%v %s: row %s = %+v, want %+v", gb, pass, k, row, w)
					}
				}
			}
		}
	}
	check("cold", "warm")
	// A restart: a second service over the same store, its cache empty, answers the closed days
	// from the summaries the first one persisted.
	serve(e.service(t, PolicyPerCall, 0))
	check("restarted")

	// CSV: the TOTAL line carries the same exact sum.
	recs, err := csv.NewReader(get("&groupBy=tool,day&format=csv").Body).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if last := recs[len(recs)-1]; last[0] != "TOTAL" || last[9] != strconv.FormatInt(stored, 10) || last[10] != USD(stored) {
		t.Fatalf("csv total line %v, want %d µ$", last, stored)
	}

	st = time.Now()
	d0, d1 := first, first.AddDate(0, 0, 30)
	if err := s.SyncJournal(ctx); err != nil { // Reconcile reads the rollups directly
		t.Fatal(err)
	}
	diffs, err := Reconcile(ctx, e.mongo, s.o.Prices, dbs, d0, d1)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range diffs {
		if i < 10 {
			t.Error(d)
		}
	}
	if len(diffs) > 0 {
		t.Fatalf("reconcile: %d differences", len(diffs))
	}
	t.Logf("reconcile: nothing to report, in %v", time.Since(st))
	for _, u := range users[:3] {
		checkLedger(t, s, u)
	}
}
