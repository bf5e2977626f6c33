package billing

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/maula-ai/maula-chat/model"
)

// TestCostsPersisted: a closed day's views outlive the process. A second service over the same
// store (a restart: an empty cache) answers a range of closed days from the summaries the first
// one persisted, without scanning, with the first one's rows and totals; a day written into
// afterwards (a late settle), a corrupted, foreign or forged summary, or a missing chunk is not
// used (the day is scanned, the answer still equals a scan, the summary is replaced); fresh=1
// uses a summary whose fingerprint matches; ForgetCostCache drops them.
func TestCostsPersisted(t *testing.T) {
	e := newEnv(t)
	e.clk.t = time.Date(2027, 9, 10, 12, 0, 0, 0, time.UTC)
	ctx := context.Background()
	s1 := e.service(t, PolicyPerCall, 0)
	r := rand.New(rand.NewPCG(5, 11))
	users, pairs, tools := newUsers(6), reportPairs, reportTools
	turn := func(at time.Time) {
		p, tool, user := pairs[r.IntN(len(pairs))], tools[r.IntN(len(tools))], users[r.IntN(len(users))]
		cacheTurn(t, s1, at, p, tool, user, randUsage(r, false))
	}
	for d := 1; d <= 9; d++ {
		for range 5 {
			turn(time.Date(2027, 9, d, r.IntN(24), 0, 0, 0, time.UTC))
		}
	}
	turn(time.Date(2027, 9, 10, 3, 0, 0, 0, time.UTC)) // today: open, never persisted
	const closed = 9                                   // 09-01..09-09 (09-09 closed at 09-10 00:30)
	from, to := time.Date(2027, 9, 1, 0, 0, 0, 0, time.UTC), time.Date(2027, 9, 9, 0, 0, 0, 0, time.UTC)
	groupings := [][]string{{DimProvider}, {DimModel}, {DimDay}, {DimTool}, {DimUser}, {DimTool, DimDay}, {DimUser, DimDay}}
	report := func(t *testing.T, s *Service, gb []string, fresh bool) *CostReport {
		t.Helper()
		q := CostQuery{From: from, To: to, GroupBy: gb, Fresh: fresh}
		got, err := s.Costs(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if want := scanned(t, s, q); !sameReport(got, want) {
			t.Fatalf("%v: report\n%+v\n%+v\nscan\n%+v\n%+v", gb, got.Totals, got.Rows, want.Totals, want.Rows)
		}
		return got
	}
	coll := e.mongo.DB(model.AuthDB).Collection(reportDaysColl)
	replace := func(t *testing.T, id string, doc any) {
		t.Helper()
		if _, err := coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}}, doc, options.Replace().SetUpsert(true)); err != nil {
			t.Fatal(err)
		}
	}
	summary := func(t *testing.T, id string) summaryDoc {
		t.Helper()
		var h summaryDoc
		if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&h); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		return h
	}
	exists := func(id string) bool {
		err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Err()
		if err != nil && err != mongo.ErrNoDocuments {
			t.Fatal(err)
		}
		return err == nil
	}
	// restarted reports gb from a new service and checks how: summaries for closed days, no scan.
	restarted := func(t *testing.T, gb []string, fresh bool, stored, scans int) *CostReport {
		t.Helper()
		got := report(t, e.service(t, PolicyPerCall, 0), gb, fresh)
		if rd := got.Read; rd.StoredDays != stored || rd.Scans != scans {
			t.Fatalf("%v after a restart: read %v, want %d stored days, %d scans", gb, rd, stored, scans)
		}
		return got
	}

	first := map[string]*CostReport{}
	for _, gb := range groupings {
		first[strings.Join(gb, ",")] = report(t, s1, gb, false)
	}
	today := CostQuery{From: e.clk.Now(), To: e.clk.Now(), GroupBy: []string{DimTool}}
	if _, err := s1.Costs(ctx, today); err != nil {
		t.Fatal(err)
	}
	if !exists("model|2027-09-01") || !exists("tool|2027-09-09") || !exists("user|2027-09-05") || exists("tool|2027-09-10") || exists("model|2027-09-10") {
		t.Fatal("closed days not persisted, or an open one persisted")
	}

	t.Run("restart", func(t *testing.T) {
		s2 := e.service(t, PolicyPerCall, 0)
		seen := map[int]bool{}
		for _, gb := range groupings {
			lvl := (&CostQuery{GroupBy: gb}).level()
			got := report(t, s2, gb, false)
			rd := got.Read
			stored, cached := closed, 0
			if seen[lvl] {
				stored, cached = 0, closed
			}
			seen[lvl] = true
			if rd.Scans != 0 || rd.StoredDays != stored || rd.CachedDays != cached {
				t.Fatalf("%v after a restart: read %v, want %d stored and %d cached days, no scan", gb, rd, stored, cached)
			}
			if !sameReport(got, first[strings.Join(gb, ",")]) {
				t.Fatalf("%v after a restart: %+v, before %+v", gb, got.Totals, first[strings.Join(gb, ",")].Totals)
			}
		}
		// The HTTP answer says so.
		mux := http.NewServeMux()
		pass := func(h http.Handler) http.Handler { return h }
		e.service(t, PolicyPerCall, 0).Routes(mux, pass, pass, func(context.Context) (bson.ObjectID, bool) { return users[0], true })
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/admin/costs?from=2027-09-01&to=2027-09-09&groupBy=user", nil))
		if h := rec.Header().Get("X-Cost-Read"); rec.Code != 200 || !strings.Contains(h, " scans=0 ") || !strings.HasSuffix(h, " storedDays=9") {
			t.Fatalf("%d, X-Cost-Read %q", rec.Code, h)
		}
	})

	t.Run("late settle", func(t *testing.T) {
		turn(time.Date(2027, 9, 3, 22, 0, 0, 0, time.UTC))
		// The model level's summary of 09-03 no longer matches: that day is scanned at the
		// model level, then at the tool level (its summary names the old model level).
		got := restarted(t, []string{DimTool}, false, closed-1, 2)
		if got.Totals == first[DimTool].Totals {
			t.Fatal("the late settle is not in the report")
		}
		// The model level's summary was replaced after that scan: only the user level is scanned.
		restarted(t, []string{DimUser, DimDay}, false, closed-1, 1)
		// Replaced after the scans.
		restarted(t, []string{DimTool}, false, closed, 0)
		restarted(t, []string{DimUser}, false, closed, 0)
	})

	t.Run("fresh", func(t *testing.T) {
		// fresh=1 reads every day's model level now, which is what a summary is checked against.
		restarted(t, []string{DimTool}, true, closed, 0)
	})

	id := "tool|2027-09-05"
	valid := func(t *testing.T) *dayView {
		t.Helper()
		h := summary(t, id)
		v, err := decodeView(levelTool, "2027-09-05", h.Data)
		if err != nil || h.Chunks != 0 {
			t.Fatalf("%s: %v, %d chunks", id, err, h.Chunks)
		}
		return v
	}
	// forge writes v as the summary of id, well-formed (hash and all).
	forge := func(t *testing.T, v *dayView) {
		t.Helper()
		if err := writeSummary(ctx, s1, coll, levelTool, "2027-09-05", v, e.clk.Now()); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name  string
		spoil func(t *testing.T)
	}{
		{"bit flipped", func(t *testing.T) {
			h := summary(t, id)
			h.Data[len(h.Data)/2] ^= 4
			replace(t, id, h)
		}},
		{"foreign document", func(t *testing.T) {
			replace(t, id, bson.D{{Key: "_id", Value: id}, {Key: "level", Value: 7}, {Key: "note", Value: "not ours"}})
		}},
		{"another day's summary", func(t *testing.T) {
			h := summary(t, "tool|2027-09-06")
			h.ID = id
			replace(t, id, h)
		}},
		{"another day's view, relabelled", func(t *testing.T) {
			h := summary(t, "tool|2027-09-06")
			h.ID, h.Day = id, "2027-09-05"
			replace(t, id, h)
		}},
		{"another level's view, relabelled", func(t *testing.T) {
			h := summary(t, "user|2027-09-05")
			h.ID, h.Level = id, "tool"
			replace(t, id, h)
		}},
		{"rows that do not add up to its fingerprint", func(t *testing.T) {
			v := valid(t)
			v.rows[0].n[nCostMicros]++
			forge(t, v)
		}},
		{"a fingerprint the day no longer has", func(t *testing.T) {
			v := valid(t)
			v.rows[0].n[nCostMicros]++
			n := v.fp[v.rows[0].pair()]
			n[nCostMicros]++
			v.fp[v.rows[0].pair()] = n
			forge(t, v)
		}},
		{"a chunk missing", func(t *testing.T) {
			defer func(n int) { summaryChunk = n }(summaryChunk)
			summaryChunk = 64
			forge(t, valid(t))
			h := summary(t, id)
			if h.Chunks < 2 {
				t.Fatalf("%d chunks", h.Chunks)
			}
			if _, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: fmt.Sprintf("%s|%d", id, h.Chunks)}}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.spoil(t)
			restarted(t, []string{DimTool}, false, closed-1, 1)
			valid(t) // replaced after the scan, in one document again
			if exists(id + "|1") {
				t.Fatal("the chunks of the summary replaced were left")
			}
		})
	}

	t.Run("chunked", func(t *testing.T) {
		defer func(n int) { summaryChunk = n }(summaryChunk)
		summaryChunk = 48
		s := e.service(t, PolicyPerCall, 0)
		s.ForgetCostCache() // drops the summaries: the next report scans and writes them in chunks
		report(t, s, []string{DimUser}, false)
		if h := summary(t, "user|2027-09-05"); h.Chunks < 2 {
			t.Fatalf("%d chunks", h.Chunks)
		}
		restarted(t, []string{DimUser}, false, closed, 0)
	})

	t.Run("forget", func(t *testing.T) {
		// A correction written into the tool level alone leaves the model level as it was:
		// no fingerprint shows it. ForgetCostCache drops the summaries with the memory.
		restarted(t, []string{DimTool}, false, 0, 1) // persists the tool level again ("chunked" dropped it)
		var doc scanDoc
		if err := s1.rollups[levelTool].FindOne(ctx, bson.D{{Key: "day", Value: "2027-09-06"}}).Decode(&doc); err != nil {
			t.Fatal(err)
		}
		inc := func(n int64) {
			t.Helper()
			if _, err := s1.rollups[levelTool].UpdateOne(ctx, bson.D{{Key: "_id", Value: doc.ID}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "costMicros", Value: n}}}}); err != nil {
				t.Fatal(err)
			}
		}
		inc(1)
		defer inc(-1)
		q := CostQuery{From: from, To: to, GroupBy: []string{DimTool}}
		s := e.service(t, PolicyPerCall, 0)
		if got, err := s.Costs(ctx, q); err != nil || sameReport(got, scanned(t, s, q)) {
			t.Fatalf("the correction shows without ForgetCostCache (%v): the test does not test it", err)
		}
		s.ForgetCostCache()
		if exists("tool|2027-09-01") {
			t.Fatal("summaries left after ForgetCostCache")
		}
		// Its levels disagree: 09-06 stays unpersisted, the others are written again.
		restarted(t, []string{DimTool}, false, 0, 2)
		restarted(t, []string{DimTool}, false, closed-1, 1)
	})
}

// TestSummaryEncoding: a view survives its encoding exactly, whatever its counts (negative,
// the extremes of int64), and a truncated or extended encoding is refused.
func TestSummaryEncoding(t *testing.T) {
	u1, u2 := bson.NewObjectID(), bson.NewObjectID()
	a, b := pairKey{"claude", "claude-sonnet-4-5"}, pairKey{"gpt", "gpt-5"}
	big := counts{1 << 62, -(1 << 62), math.MaxInt64 - 3, 1, -1, 0, math.MinInt64, 123456789}
	var sum counts
	sum.add(&big)
	sum.add(&counts{2, 1, 3, 4, 5, 6, 7, 8})
	views := []struct {
		name string
		lvl  int
		v    *dayView
	}{
		{"empty model day", levelModel, &dayView{fp: map[pairKey]counts{}}},
		{"model", levelModel, &dayView{fp: map[pairKey]counts{a: big, b: {1, 1, 1, 1, 1, 1, 1, 1}},
			rows: []viewRow{{provider: "claude", model: "claude-sonnet-4-5", n: big}, {provider: "gpt", model: "gpt-5", n: counts{1, 1, 1, 1, 1, 1, 1, 1}}}}},
		{"tool", levelTool, &dayView{fp: map[pairKey]counts{a: sum}, rows: []viewRow{
			{provider: "claude", model: "claude-sonnet-4-5", tool: "ipintel", n: big},
			{provider: "claude", model: "claude-sonnet-4-5", tool: "", n: counts{2, 1, 3, 4, 5, 6, 7, 8}}}}},
		{"user", levelUser, &dayView{fp: map[pairKey]counts{a: sum}, rows: []viewRow{{user: u1, n: big}, {user: u2, n: counts{2, 1, 3, 4, 5, 6, 7, 8}}}}},
	}
	for _, c := range views {
		t.Run(c.name, func(t *testing.T) {
			blob := encodeView(c.lvl, "2027-01-02", c.v)
			got, err := decodeView(c.lvl, "2027-01-02", blob)
			if err != nil {
				t.Fatal(err)
			}
			if !equalFP(got.fp, c.v.fp) || len(got.rows) != len(c.v.rows) {
				t.Fatalf("decoded %+v, encoded %+v", got, c.v)
			}
			for i := range got.rows {
				if got.rows[i] != c.v.rows[i] {
					t.Fatalf("row %d: %+v, encoded %+v", i, got.rows[i], c.v.rows[i])
				}
			}
			for _, bad := range [][]byte{blob[:len(blob)-1], append(blob[:len(blob):len(blob)], 0), blob[:3]} {
				if _, err := decodeView(c.lvl, "2027-01-02", bad); err == nil {
					t.Fatalf("%d of %d bytes decoded", len(bad), len(blob))
				}
			}
			if _, err := decodeView(c.lvl, "2027-01-03", blob); err == nil {
				t.Fatal("decoded as another day's")
			}
			if _, err := decodeView((c.lvl+1)%numLevels, "2027-01-02", blob); err == nil {
				t.Fatal("decoded as another level's")
			}
		})
	}
}
