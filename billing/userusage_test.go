package billing

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// A user's report is read from the user level's documents by _id and their breakdown, with
// the rows and totals a scan of the matching level gives, for every grouping (a model name
// with a dot among them); a document without a complete breakdown (written before it existed)
// sends the report to the scan, still exact.
func TestUserCostsByID(t *testing.T) {
	e := newEnv(t)
	e.clk.t = time.Date(2027, 11, 20, 12, 0, 0, 0, time.UTC)
	ctx := context.Background()
	s := e.service(t, PolicyPerCall, 0)
	r := rand.New(rand.NewPCG(7, 13))
	u, other := bson.NewObjectID(), bson.NewObjectID()
	pairs := []pairKey{{"claude", "claude-sonnet-4-5"}, {"gpt", "gpt-4.1"}, {"gemini", "gemini-2.5-flash"}}
	tools := reportTools
	for d := 1; d <= 6; d++ {
		for range 6 {
			who := u
			if r.IntN(3) == 0 {
				who = other
			}
			at, p, tool := time.Date(2027, 11, d, r.IntN(24), 0, 0, 0, time.UTC), pairs[r.IntN(len(pairs))], tools[r.IntN(len(tools))]
			cacheTurn(t, s, at, p, tool, who, randUsage(r, false))
		}
	}
	from, to := time.Date(2027, 11, 1, 0, 0, 0, 0, time.UTC), time.Date(2027, 11, 20, 0, 0, 0, 0, time.UTC)
	groupings := [][]string{{DimDay}, {DimProvider, DimModel}, {DimTool}, {DimModel, DimTool}, {DimTool, DimDay}, {DimUser}}
	check := func(t *testing.T, wantScan bool) {
		for _, gb := range groupings {
			q := CostQuery{From: from, To: to, GroupBy: gb, UserID: u}
			got, err := s.Costs(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if want := scanned(t, s, q); !sameReport(got, want) || got.Totals.Requests == 0 {
				t.Fatalf("%v: %+v\nscan: %+v", gb, got, want)
			}
			if scannedIt := got.Read.Scans > 0; scannedIt != wantScan {
				t.Fatalf("%v: read %v, want a scan: %v", gb, got.Read, wantScan)
			}
		}
	}
	t.Run("by id", func(t *testing.T) { check(t, false) })
	t.Run("three reports, one read", func(t *testing.T) {
		q := CostQuery{From: from, To: to, UserID: u}
		reps, err := s.userReports(ctx, q, groupings[:3])
		if err != nil {
			t.Fatal(err)
		}
		days := len(s.reportDays(q)) // every day read once, for the three reports together
		for i, gb := range groupings[:3] {
			want := scanned(t, s, CostQuery{From: from, To: to, GroupBy: gb, UserID: u})
			if !sameReport(reps[i], want) || reps[i].Read.Scans != 0 || reps[i].Read.Lookups != days {
				t.Fatalf("%v: %+v (read %v)\nscan: %+v", gb, reps[i], reps[i].Read, want)
			}
		}
	})
	t.Run("a document without its breakdown", func(t *testing.T) {
		id := rollupID(levelKeyOf(levelUser, "2027-11-03", "", "", "", u))
		if _, err := s.rollups[levelUser].UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$unset", Value: bson.D{{Key: byField, Value: ""}}}}); err != nil {
			t.Fatal(err)
		}
		check(t, true)
		// The usage endpoint's three reports go to their scans at once, without reading the
		// days again for each.
		reps, err := s.userReports(ctx, CostQuery{From: from, To: to, UserID: u}, groupings[:3])
		if err != nil {
			t.Fatal(err)
		}
		for i, gb := range groupings[:3] {
			want := scanned(t, s, CostQuery{From: from, To: to, GroupBy: gb, UserID: u})
			if !sameReport(reps[i], want) || reps[i].Read.Scans != 1 || reps[i].Read.Lookups != 0 {
				t.Fatalf("%v: %+v (read %v)\nscan: %+v", gb, reps[i], reps[i].Read, want)
			}
		}
	})
}

// Names with '.', '$', '|' or '%' make one field name and come back as they were.
func TestByKeyRoundTrip(t *testing.T) {
	for _, c := range [][3]string{{"gpt", "gpt-4.1", "ipintel"}, {"a|b", "c.d$e", "%2E%"}, {"", "", ""}} {
		p, m, tl, ok := parseByKey(BreakdownKey(c[0], c[1], c[2]))
		if !ok || [3]string{p, m, tl} != c {
			t.Fatalf("%q -> %q, %q, %q, %v", c, p, m, tl, ok)
		}
		if k := BreakdownKey(c[0], c[1], c[2]); strings.ContainsAny(k, ".$") {
			t.Fatalf("field name %q", k)
		}
	}
}
