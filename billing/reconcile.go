package billing

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/providers"
	"github.com/maula-ai/maula-chat/store"
)

// Difference is one disagreement found by Reconcile. Want is what the stored usage and the
// price data say; Got is what the named record holds.
type Difference struct {
	Kind   string `json:"kind"`  // message_cost, message_usd, missing_settle, settle_cost, missing_message, rollup, rollup_level
	Key    string `json:"key"`   // request id, or the rollup key
	Field  string `json:"field"` // which figure
	Want   int64  `json:"want"`
	Got    int64  `json:"got"`
	Detail string `json:"detail,omitempty"`
}

func (d Difference) String() string {
	s := fmt.Sprintf("%s %s %s: want %d, got %d", d.Kind, d.Key, d.Field, d.Want, d.Got)
	if d.Detail != "" {
		s += " (" + d.Detail + ")"
	}
	return s
}

type sums struct{ messages, input, output, cacheRead, cacheWrite, costMicros int64 }

func (a *sums) fields() []struct {
	name string
	v    int64
} {
	return []struct {
		name string
		v    int64
	}{{"messages", a.messages}, {"input", a.input}, {"output", a.output}, {"cacheRead", a.cacheRead}, {"cacheWrite", a.cacheWrite}, {"costMicros", a.costMicros}}
}

// Reconcile recomputes the cost of every assistant reply stored in the tools' chat_history
// between from and to (UTC days, inclusive) from its usage and the price data, and reports
// every difference with the message's own cost, the ledger's settle entries, the rollups
// behind /admin/costs, and between the rollup levels. An empty answer means all agree.
func Reconcile(ctx context.Context, ms *store.Store, prices *providers.PriceBook, toolDBs []string, from, to time.Time) ([]Difference, error) {
	fromDay, toDay := dayOf(from), dayOf(to)
	start, end := midnight(from), midnight(to).Add(24*time.Hour)
	var diffs []Difference
	want := map[string]*sums{}     // full rollup key → sums from history
	msgCost := map[string]int64{}  // requestId → stored costMicros
	msgOutput := map[string]bool{} // requestId seen
	for _, db := range toolDBs {
		tool := strings.TrimSuffix(db, "-db")
		cur, err := ms.DB(db).Collection(model.CollChatHistory).Find(ctx, bson.D{{Key: "role", Value: "assistant"},
			{Key: "timestamp", Value: bson.D{{Key: "$gte", Value: start}, {Key: "$lt", Value: end}}}})
		if err != nil {
			return nil, fmt.Errorf("reconcile: read %s.chat_history: %w", db, err)
		}
		var msgs []model.ChatMessage
		if err := cur.All(ctx, &msgs); err != nil {
			return nil, fmt.Errorf("reconcile: read %s.chat_history: %w", db, err)
		}
		for _, m := range msgs {
			t := m.Tokens
			u := providers.Usage{Input: t.Input, Output: t.Output, CacheRead: t.CacheRead, CacheWrite: t.CacheWrite, Reasoning: t.Reasoning}
			c, err := prices.Cost(m.Provider, m.Model, u, m.Timestamp)
			key := m.RequestID
			if key == "" {
				key = db + "/" + m.ID.Hex()
			}
			switch {
			case err != nil:
				diffs = append(diffs, Difference{Kind: "message_cost", Key: key, Field: "costMicros", Got: t.CostMicros, Detail: err.Error()})
			case c.Micros != t.CostMicros:
				diffs = append(diffs, Difference{Kind: "message_cost", Key: key, Field: "costMicros", Want: c.Micros, Got: t.CostMicros, Detail: c.PriceID})
			}
			if math.Abs(t.Cost-float64(t.CostMicros)/1e6) > 5e-7 {
				diffs = append(diffs, Difference{Kind: "message_usd", Key: key, Field: "cost", Want: t.CostMicros, Got: int64(math.Round(t.Cost * 1e6))})
			}
			if m.RequestID != "" {
				msgCost[m.RequestID] = t.CostMicros
				msgOutput[m.RequestID] = true
			}
			k := fullKey(dayOf(m.Timestamp), m.Provider, m.Model, tool, m.UserID)
			s := want[k]
			if s == nil {
				s = &sums{}
				want[k] = s
			}
			s.messages++
			s.input += t.Input
			s.output += t.Output
			s.cacheRead += t.CacheRead
			s.cacheWrite += t.CacheWrite
			s.costMicros += t.CostMicros
		}
	}
	auth := ms.DB(model.AuthDB)
	// The ledger: every settled turn with output has its message, at the same cost.
	cur, err := auth.Collection(model.CollLedger).Find(ctx, bson.D{{Key: "phase", Value: PhaseSettle},
		{Key: "day", Value: bson.D{{Key: "$gte", Value: fromDay}, {Key: "$lte", Value: toDay}}}})
	if err != nil {
		return nil, fmt.Errorf("reconcile: read ledger: %w", err)
	}
	var settles []Entry
	if err := cur.All(ctx, &settles); err != nil {
		return nil, fmt.Errorf("reconcile: read ledger: %w", err)
	}
	settled := map[string]bool{}
	for _, e := range settles {
		settled[e.RequestID] = true
		if e.State == StatePending {
			diffs = append(diffs, Difference{Kind: "settle_pending", Key: e.RequestID, Field: "state", Detail: "run RecoverDangling"})
		}
		if e.State != StateApplied || e.Rollup == "skip" {
			continue
		}
		if e.Rollup != "done" {
			diffs = append(diffs, Difference{Kind: "rollup_unfinished", Key: e.RequestID, Field: "rollup", Detail: e.Rollup})
		}
		c, ok := msgCost[e.RequestID]
		switch {
		case ok && c != e.CostMicros:
			diffs = append(diffs, Difference{Kind: "settle_cost", Key: e.RequestID, Field: "costMicros", Want: c, Got: e.CostMicros})
		case !ok && e.Output:
			diffs = append(diffs, Difference{Kind: "missing_message", Key: e.RequestID, Field: "messages", Want: 0, Got: 1, Detail: "settled with output but no assistant message stored"})
		}
	}
	for rid := range msgOutput {
		if !settled[rid] {
			diffs = append(diffs, Difference{Kind: "missing_settle", Key: rid, Field: "messages", Want: 1, Got: 0, Detail: "stored reply without a settle entry"})
		}
	}
	// The full rollup level against history.
	full, err := readRollups(ctx, auth.Collection(levelColl[levelFull]), fromDay, toDay)
	if err != nil {
		return nil, err
	}
	got := map[string]*sums{}
	for _, r := range full {
		got[fullKey(r.Day, r.Provider, r.Model, r.Tool, r.UserID)] = &sums{r.Messages, r.Input, r.Output, r.CacheRead, r.CacheWrite, r.CostMicros}
	}
	diffs = append(diffs, compareSums("rollup", want, got)...)
	// The coarser levels against the full level.
	for l := levelTool; l < numLevels; l++ {
		rs, err := readRollups(ctx, auth.Collection(levelColl[l]), fromDay, toDay)
		if err != nil {
			return nil, err
		}
		lwant, lgot := map[string]*sums{}, map[string]*sums{}
		for _, r := range full {
			addSums(lwant, levelKey(l, &r), &r)
		}
		for _, r := range rs {
			addSums(lgot, levelKey(l, &r), &r)
		}
		diffs = append(diffs, compareSums("rollup_level:"+levelColl[l], lwant, lgot)...)
	}
	sort.Slice(diffs, func(i, j int) bool {
		if diffs[i].Kind != diffs[j].Kind {
			return diffs[i].Kind < diffs[j].Kind
		}
		return diffs[i].Key < diffs[j].Key
	})
	return diffs, nil
}

// fullKey and levelKey name a rollup by its _id (rollupID).
func fullKey(day, provider, model, tool string, user bson.ObjectID) string {
	return rollupID(levelKeyOf(levelFull, day, provider, model, tool, user))
}

func levelKey(l int, r *Rollup) string {
	return rollupID(levelKeyOf(l, r.Day, r.Provider, r.Model, r.Tool, r.UserID))
}

func addSums(m map[string]*sums, k string, r *Rollup) {
	s := m[k]
	if s == nil {
		s = &sums{}
		m[k] = s
	}
	s.messages += r.Messages
	s.input += r.Input
	s.output += r.Output
	s.cacheRead += r.CacheRead
	s.cacheWrite += r.CacheWrite
	s.costMicros += r.CostMicros
}

func readRollups(ctx context.Context, c *mongo.Collection, from, to string) ([]Rollup, error) {
	cur, err := c.Find(ctx, bson.D{{Key: "day", Value: bson.D{{Key: "$gte", Value: from}, {Key: "$lte", Value: to}}}})
	if err != nil {
		return nil, fmt.Errorf("reconcile: read %s: %w", c.Name(), err)
	}
	var rs []Rollup
	if err := cur.All(ctx, &rs); err != nil {
		return nil, fmt.Errorf("reconcile: read %s: %w", c.Name(), err)
	}
	return rs, nil
}

func compareSums(kind string, want, got map[string]*sums) []Difference {
	var out []Difference
	zero := &sums{}
	for k, w := range want {
		g := got[k]
		if g == nil {
			g = zero
		}
		gf := g.fields()
		for i, f := range w.fields() {
			if f.v != gf[i].v {
				out = append(out, Difference{Kind: kind, Key: k, Field: f.name, Want: f.v, Got: gf[i].v})
			}
		}
	}
	for k, g := range got {
		if want[k] != nil {
			continue
		}
		for _, f := range g.fields() {
			// Rollups of turns with no stored reply (failed before the first token) count
			// requests only; anything else there is a difference.
			if f.v != 0 {
				out = append(out, Difference{Kind: kind, Key: k, Field: f.name, Want: 0, Got: f.v})
			}
		}
	}
	return out
}
