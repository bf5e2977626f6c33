package bench

import (
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/maula-ai/maula-chat/billing"
)

// The seeded documents carry billing's derived _id, and the check of an answer catches one
// micro-dollar off, a row too many, and a top user left out.
func TestAdminSeedAndCheck(t *testing.T) {
	u := bson.NewObjectID()
	d := rollupDoc(&costCounts{1, 1, 10, 20, 0, 0, 5, 33}, "day", "2026-11-01", "provider", "gpt", "model", "gpt-5", "tool", "ipintel", "userId", u)
	if d[0].Value != "2026-11-01|gpt|gpt-5|ipintel|"+u.Hex() || d[len(d)-1].Key != "costMicros" || d[len(d)-1].Value != int64(33) {
		t.Fatalf("%v", d)
	}
	s := &seeded{total: costCounts{3, 3, 0, 0, 0, 0, 0, 60}, groups: map[string]map[string]*costCounts{
		"tool": {"a": {2, 2, 0, 0, 0, 0, 0, 50}, "b": {1, 1, 0, 0, 0, 0, 0, 10}},
		"user": {"u1": {2, 2, 0, 0, 0, 0, 0, 50}, "u2": {1, 1, 0, 0, 0, 0, 0, 10}},
	}}
	row := func(tool, user string, n, cost int64) billing.CostRow {
		return billing.CostRow{Tool: tool, User: user, Requests: n, Messages: n, CostMicros: cost, CostUSD: float64(cost) / 1e6}
	}
	total := row("", "", 3, 60)
	for _, c := range []struct {
		groupBy string
		limit   int
		a       costAnswer
		want    string
	}{
		{"tool", 0, costAnswer{Rows: []billing.CostRow{row("a", "", 2, 50), row("b", "", 1, 10)}, Totals: total}, ""},
		{"tool", 0, costAnswer{Rows: []billing.CostRow{row("a", "", 2, 50), row("b", "", 1, 11)}, Totals: total}, "row b"},
		{"tool", 0, costAnswer{Rows: []billing.CostRow{row("a", "", 2, 50)}, Totals: total}, "1 rows"},
		{"tool", 0, costAnswer{Rows: []billing.CostRow{row("a", "", 2, 50), row("b", "", 1, 10)}, Totals: row("", "", 3, 61)}, "totals"},
		{"user", 1, costAnswer{Rows: []billing.CostRow{row("", "u1", 2, 50)}, Totals: total}, ""},
		{"user", 1, costAnswer{Rows: []billing.CostRow{row("", "u2", 1, 10)}, Totals: total}, "u1 (50 µ$) missing"},
		{"user", 0, costAnswer{Rows: []billing.CostRow{row("", "u1", 2, 50)}, Totals: total}, "1 rows"},
	} {
		if got := s.check(c.groupBy, c.limit, &c.a); (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s %+v: %q, want %q", c.groupBy, c.a.Rows, got, c.want)
		}
	}
}
