package billing

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/providers"
)

var genModels = []struct{ provider, model string }{
	{"claude", "claude-sonnet-4-5"}, {"claude", "claude-haiku-4-5"}, {"gpt", "gpt-5"}, {"gpt", "gpt-5-mini"},
}

// genN turns are recorded (75 ms each on the embedded store of a loaded 2-core machine, 3x that under -race).
var genN = 300

var genTools = []string{"ipintel", "fraudguard", "botshield", "idverify", "velocitycheck"}

type genTurn struct {
	e   *Entry
	msg model.ChatMessage
}

// genTurns records n settled turns in October 2026 the way Settle does (ledger settle entry,
// rollups, analytics, counters) plus the assistant message the hub stores, and returns them.
func genTurns(t testing.TB, s *Service, n int, seed uint64) []genTurn {
	t.Helper()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(seed, 7))
	users := make([]bson.ObjectID, 20)
	for i := range users {
		users[i] = bson.NewObjectID()
	}
	base := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	turns := make([]genTurn, n)
	var entries []any
	msgs := map[string][]any{}
	for i := range turns {
		m := genModels[r.IntN(len(genModels))]
		tool := genTools[r.IntN(len(genTools))]
		at := base.Add(time.Duration(r.IntN(30*24*3600)) * time.Second)
		u := providers.Usage{Input: r.Int64N(5000), Output: r.Int64N(2000), CacheRead: r.Int64N(3) * r.Int64N(4000), CacheWrite: r.Int64N(2) * r.Int64N(1000)}
		c, err := s.o.Prices.Cost(m.provider, m.model, u, at)
		if err != nil {
			t.Fatal(err)
		}
		rid := fmt.Sprintf("gen-%d-%d", seed, i)
		user := users[r.IntN(len(users))]
		e := &Entry{ID: bson.NewObjectID(), RequestID: rid, Phase: PhaseSettle, State: StateApplied, UserID: user,
			Reserved: 1, Charged: 1, Tool: tool, Provider: m.provider, Model: m.model,
			Usage:      &UsageDoc{Input: u.Input, Output: u.Output, CacheRead: u.CacheRead, CacheWrite: u.CacheWrite},
			CostMicros: c.Micros, PriceID: c.PriceID, Status: StatusDone, Output: true, At: at, Day: dayOf(at), Rollup: "done", CreatedAt: at}
		msg := model.ChatMessage{ID: bson.NewObjectID(), UserID: user, SessionID: "s", Provider: m.provider, Role: "assistant",
			Message: "reply", Model: m.model, RequestID: rid, Timestamp: at,
			Tokens: model.ChatTokens{Input: u.Input, Output: u.Output, CacheRead: u.CacheRead, CacheWrite: u.CacheWrite,
				Cost: float64(c.Micros) / 1e6, CostMicros: c.Micros, PriceID: c.PriceID}}
		turns[i] = genTurn{e, msg}
		entries = append(entries, e)
		msgs[tool] = append(msgs[tool], msg)
		if err := s.record(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.ledger.InsertMany(ctx, entries); err != nil {
		t.Fatal(err)
	}
	for tool, ms := range msgs {
		if _, err := s.o.Mongo.DB(tool+"-db").Collection(model.CollChatHistory).InsertMany(ctx, ms); err != nil {
			t.Fatal(err)
		}
	}
	return turns
}

func dimOf(g genTurn, d string) string {
	switch d {
	case DimProvider:
		return g.e.Provider
	case DimModel:
		return g.e.Model
	case DimTool:
		return g.e.Tool
	case DimUser:
		return g.e.UserID.Hex()
	}
	return g.e.Day
}

// TestCostsExactAndReconcile: for every groupBy of one or two dimensions, every row and the
// totals of /admin/costs equal the sums of the recorded turns to the micro-dollar and token;
// Reconcile finds nothing, then finds each planted difference.
func TestCostsExactAndReconcile(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.service(t, PolicyPerCall, 0)
	st := time.Now()
	turns := genTurns(t, s, genN, 1)
	t.Logf("recorded %d turns in %v", genN, time.Since(st))
	from, to := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 10, 30, 0, 0, 0, 0, time.UTC)
	var groupings [][]string
	for i, a := range dims {
		groupings = append(groupings, []string{a})
		for _, b := range dims[i+1:] {
			groupings = append(groupings, []string{a, b})
		}
	}
	var total int64
	for _, g := range turns {
		total += g.e.CostMicros
	}
	for _, gb := range groupings {
		t.Run(strings.Join(gb, ","), func(t *testing.T) {
			rep, err := s.Costs(ctx, CostQuery{From: from, To: to, GroupBy: gb})
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]*CostRow{}
			for _, g := range turns {
				k := dimOf(g, gb[0])
				if len(gb) == 2 {
					k += "|" + dimOf(g, gb[1])
				}
				if want[k] == nil {
					want[k] = &CostRow{}
				}
				want[k].add(&CostRow{Requests: 1, Messages: 1, Input: g.e.Usage.Input, Output: g.e.Usage.Output,
					CacheRead: g.e.Usage.CacheRead, CacheWrite: g.e.Usage.CacheWrite, CostMicros: g.e.CostMicros})
			}
			if rep.Totals.CostMicros != total || rep.Totals.Messages != int64(len(turns)) || len(rep.Rows) != len(want) {
				t.Fatalf("totals %+v (%d rows), want cost %d over %d turns (%d rows)", rep.Totals, len(rep.Rows), total, len(turns), len(want))
			}
			for _, row := range rep.Rows {
				k := row.dim(gb[0])
				if len(gb) == 2 {
					k += "|" + row.dim(gb[1])
				}
				w := want[k]
				if w == nil || w.CostMicros != row.CostMicros || w.Input != row.Input || w.Output != row.Output ||
					w.CacheRead != row.CacheRead || w.CacheWrite != row.CacheWrite || w.Messages != row.Messages {
					t.Fatalf("row %s = %+v, want %+v", k, row, w)
				}
			}
		})
	}
	t.Run("csv", func(t *testing.T) {
		rep, err := s.Costs(ctx, CostQuery{From: from, To: to, GroupBy: []string{DimProvider, DimDay}})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := rep.WriteCSV(&buf); err != nil {
			t.Fatal(err)
		}
		recs, err := csv.NewReader(&buf).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		head := strings.Join(recs[0], ",")
		if head != "provider,day,requests,messages,input,output,cacheRead,cacheWrite,reasoning,costMicros,costUsd" {
			t.Fatalf("header %q", head)
		}
		last := recs[len(recs)-1]
		if last[0] != "TOTAL" || last[9] != strconv.FormatInt(total, 10) || last[10] != USD(total) || len(recs) != len(rep.Rows)+2 {
			t.Fatalf("total line %v, want %d", last, total)
		}
	})
	t.Run("reconcile", func(t *testing.T) {
		dbs := []string{}
		for _, tool := range genTools {
			dbs = append(dbs, tool+"-db")
		}
		if err := s.SyncJournal(ctx); err != nil { // Reconcile reads the rollups directly
			t.Fatal(err)
		}
		diffs, err := Reconcile(ctx, e.mongo, s.o.Prices, dbs, from, to)
		if err != nil {
			t.Fatal(err)
		}
		if len(diffs) != 0 {
			t.Fatalf("%d differences on consistent data, first %v", len(diffs), diffs[0])
		}
		// Plant: one rollup off by a micro-dollar, one message priced wrong.
		g := turns[0]
		if _, err := s.rollups[levelFull].UpdateOne(ctx, rollupKey(levelFull, g.e), bson.D{{Key: "$inc", Value: bson.D{{Key: "costMicros", Value: 1}}}}); err != nil {
			t.Fatal(err)
		}
		h := turns[1]
		if _, err := e.mongo.DB(h.e.Tool+"-db").Collection(model.CollChatHistory).UpdateOne(ctx, bson.D{{Key: "_id", Value: h.msg.ID}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "tokens.costMicros", Value: h.e.CostMicros + 5}, {Key: "tokens.cost", Value: float64(h.e.CostMicros+5) / 1e6}}}}); err != nil {
			t.Fatal(err)
		}
		diffs, err = Reconcile(ctx, e.mongo, s.o.Prices, dbs, from, to)
		if err != nil {
			t.Fatal(err)
		}
		kinds := map[string]int{}
		for _, d := range diffs {
			kinds[d.Kind]++
			t.Log(d)
		}
		if kinds["message_cost"] != 1 || kinds["settle_cost"] != 1 || kinds["rollup"] < 1 || kinds["rollup_level:cost_rollups_model"] < 1 {
			t.Fatalf("planted differences not all reported: %v", kinds)
		}
	})
}

// TestRoutes drives the HTTP endpoints with pass-through middleware.
func TestRoutes(t *testing.T) {
	e := newEnv(t)
	s := e.service(t, PolicyPerCall, 0)
	u := newUser(t, s, 12)
	mux := http.NewServeMux()
	pass := func(h http.Handler) http.Handler { return h }
	s.Routes(mux, pass, pass, func(context.Context) (bson.ObjectID, bool) { return u, true })
	do := func(method, path, body string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
		return rec
	}
	if r := do("GET", "/auth/subscription", ""); r.Code != 200 || !strings.Contains(r.Body.String(), `"balance":12`) {
		t.Fatalf("subscription: %d %s", r.Code, r.Body)
	}
	if r := do("POST", "/admin/users/"+u.Hex()+"/credits", `{"credits":5,"reason":"goodwill","idempotencyKey":"k1"}`); r.Code != 200 || !strings.Contains(r.Body.String(), `"balance":17`) {
		t.Fatalf("grant: %d %s", r.Code, r.Body)
	}
	if r := do("POST", "/admin/users/"+u.Hex()+"/credits", `{"credits":5,"reason":"goodwill","idempotencyKey":"k1"}`); !strings.Contains(r.Body.String(), `"balance":17`) {
		t.Fatalf("grant retry granted twice: %d %s", r.Code, r.Body)
	}
	if r := do("POST", "/admin/users/"+u.Hex()+"/plan", `{"plan":"pro"}`); r.Code != 200 || !strings.Contains(r.Body.String(), `"balance":1000`) {
		t.Fatalf("plan: %d %s", r.Code, r.Body)
	}
	var n int64
	n, _ = s.bills.CountDocuments(context.Background(), bson.D{{Key: "userId", Value: u}})
	if n != 1 {
		t.Fatalf("%d billing records", n)
	}
	if r := do("POST", "/admin/users/"+u.Hex()+"/plan", `{"plan":"gold"}`); r.Code != 400 {
		t.Fatalf("unknown plan: %d %s", r.Code, r.Body)
	}
	if r := do("GET", "/admin/costs?from=2026-11-01&to=2026-11-30&groupBy=provider,model&format=csv", ""); r.Code != 200 || !strings.HasPrefix(r.Body.String(), "provider,model,requests") {
		t.Fatalf("csv: %d %s", r.Code, r.Body)
	}
	for _, bad := range []string{"groupBy=provider,model,tool", "groupBy=tool&format=xml", "groupBy=tool&fresh=maybe", "groupBy=tool&limit=-1"} {
		if r := do("GET", "/admin/costs?"+bad, ""); r.Code != 400 || !strings.Contains(r.Body.String(), `"code":"bad_request"`) {
			t.Fatalf("%s: %d %s", bad, r.Code, r.Body)
		}
	}
	r := do("GET", "/admin/users/"+u.Hex()+"/usage?from=2026-11-01&to=2026-11-30", "")
	var uu UserUsage
	if r.Code != 200 || json.Unmarshal(r.Body.Bytes(), &uu) != nil || uu.Balance == nil || *uu.Balance != 1000 {
		t.Fatalf("usage: %d %s", r.Code, r.Body)
	}
	checkLedger(t, s, u)
}
