package billing

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/maula-ai/maula-chat/providers"
)

// BenchmarkTurnMoney measures the money steps of one turn: Reserve then Settle (with the
// rollups, analytics and counters), sequentially, on the embedded store: "steps" as any
// caller's request, "journal" as the hub's (fresh request ids: answered early, written through
// the journal, journal.go).
func BenchmarkTurnMoney(b *testing.B) {
	for _, way := range moneyWays {
		b.Run(way.name, func(b *testing.B) {
			e := newEnv(b)
			ctx := context.Background()
			s := e.service(b, PolicyPerCall, 0)
			u := newUser(b, s, int64(b.N)+10)
			b.ResetTimer()
			for i := range b.N {
				r := req(u, fmt.Sprintf("bench-%s-%d", u.Hex(), i))
				r.Fresh = way.fresh
				res, err := s.Reserve(ctx, r)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := s.Settle(ctx, res, Outcome{Usage: providers.Usage{Input: 1000, Output: 200}, ProducedOutput: true, Status: StatusDone}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// moneyWays are the two ways a turn's money is written (see BenchmarkTurnMoney).
var moneyWays = []struct {
	name  string
	fresh bool
}{{"steps", false}, {"journal", true}}

// BenchmarkCosts measures /admin/costs over 30 days of seeded rollups: per day 12 models,
// 50 tools × 3 models, and 1,000 active users (the sizes a deployment with about 1,000,000
// turns a month produces at the coarse levels). The levels' sums deliberately disagree, so no
// day passes the report's check and every call takes the scanning path: this is the cost of
// a report the day cache cannot answer. `maula-chat bench admin` measures the cached path on
// consistent data.
func BenchmarkCosts(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	s := e.service(b, PolicyPerCall, 0)
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	users := make([]bson.ObjectID, 1000)
	for i := range users {
		users[i] = bson.NewObjectID()
	}
	var model, tool, user []any
	for d := range 30 {
		day := dayOf(base.AddDate(0, 0, d))
		for m := range 12 {
			model = append(model, Rollup{Day: day, Provider: fmt.Sprint("p", m%5), Model: fmt.Sprint("m", m), Requests: 2000, Messages: 2000, Input: 1e6, Output: 3e5, CostMicros: 4_000_000})
		}
		for t := range 50 {
			for m := range 3 {
				tool = append(tool, Rollup{Day: day, Provider: fmt.Sprint("p", m), Model: fmt.Sprint("m", m), Tool: fmt.Sprint("tool", t), Requests: 200, Messages: 200, CostMicros: 300_000})
			}
		}
		for _, u := range users {
			user = append(user, Rollup{Day: day, UserID: u, Requests: 33, Messages: 33, CostMicros: 50_000})
		}
	}
	for l, docs := range map[int][]any{levelModel: model, levelTool: tool, levelUser: user} {
		for i, d := range docs { // with the _id settle derives, which the report relies on
			r := d.(Rollup)
			e := &Entry{Day: r.Day, Provider: r.Provider, Model: r.Model, Tool: r.Tool, UserID: r.UserID}
			docs[i] = struct {
				ID     string `bson:"_id"`
				Rollup `bson:",inline"`
			}{rollupID(rollupKey(l, e)), r}
		}
		for i := 0; i < len(docs); i += 5000 {
			if _, err := s.rollups[l].InsertMany(ctx, docs[i:min(i+5000, len(docs))]); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, gb := range [][]string{{DimProvider}, {DimModel, DimDay}, {DimTool}, {DimUser}} {
		b.Run(fmt.Sprint(gb), func(b *testing.B) {
			for b.Loop() {
				rep, err := s.Costs(ctx, CostQuery{From: base, To: base.AddDate(0, 0, 29), GroupBy: gb, Limit: 100})
				if err != nil || rep.Totals.Requests == 0 {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTurnMoneyParallel is BenchmarkTurnMoney from 16 goroutines over 8 users (two turns
// in flight per user, as in `maula-chat bench record`): what concurrency does to the money steps.
func BenchmarkTurnMoneyParallel(b *testing.B) {
	for _, way := range moneyWays {
		b.Run(way.name, func(b *testing.B) { benchTurnMoneyParallel(b, way.fresh) })
	}
}

func benchTurnMoneyParallel(b *testing.B, fresh bool) {
	e := newEnv(b)
	ctx := context.Background()
	s := e.service(b, PolicyPerCall, 0)
	users := make([]bson.ObjectID, 8)
	for i := range users {
		users[i] = newUser(b, s, int64(b.N)+10)
	}
	var next atomic.Int64
	var reserve, settle atomic.Int64
	run := bson.NewObjectID().Hex() // request ids unique across -count runs
	b.SetParallelism(8)             // × GOMAXPROCS(2) = 16 goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			u := users[i%int64(len(users))]
			t0 := time.Now()
			r := req(u, fmt.Sprintf("pbench-%s-%d", run, i))
			r.Fresh = fresh
			res, err := s.Reserve(ctx, r)
			if err != nil {
				b.Error(err)
				return
			}
			t1 := time.Now()
			if _, err := s.Settle(ctx, res, Outcome{Usage: providers.Usage{Input: 1000, Output: 200}, ProducedOutput: true, Status: StatusDone}); err != nil {
				b.Error(err)
				return
			}
			reserve.Add(int64(t1.Sub(t0)))
			settle.Add(int64(time.Since(t1)))
		}
	})
	b.ReportMetric(float64(reserve.Load())/float64(b.N)/1e6, "ms-reserve")
	b.ReportMetric(float64(settle.Load())/float64(b.N)/1e6, "ms-settle")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "turns/s")
	if fresh {
		b.ReportMetric(float64(2*b.N)/float64(journalSeq(s)), "steps/batch")
	}
}
