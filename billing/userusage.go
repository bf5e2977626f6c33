package billing

import (
	"context"
	"fmt"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// One user's usage by provider, model and tool, without a scan.
//
// Why: a report for one user (GET /admin/users/{id}/usage, or /admin/costs with a user) needs
// the user's rows split by provider, model or tool, which only the full level holds, and on the
// embedded FerretDB a filter on userId scans the whole level: ~20 s at 100,000 turns.
//
// How: each document of the user level (one per user and day, _id "<day>|<userId>") also
// carries, under "by", the same counts split by "<provider>|<model>|<tool>", incremented in
// the same write as its totals. A user's report reads the days of its range by _id and
// expands them. A document whose breakdown does not add up to its own requests (written
// before the breakdown existed) sends the whole report to the scan, which stays exact.

// byField is the user-level document's breakdown field.
const byField = "by"

// byMaxDays bounds the range read day by day; a longer one is scanned.
const byMaxDays = 400

// byEscaper keeps the names usable as one field name: no '.', '$' or the separator '|'.
var (
	byEscaper   = strings.NewReplacer("%", "%25", ".", "%2E", "$", "%24", "|", "%7C")
	byUnescaper = strings.NewReplacer("%2E", ".", "%24", "$", "%7C", "|", "%25", "%")
)

// BreakdownKey is the name under which a user-level rollup document's "by" field holds the
// counts of one provider, model and tool (also for a tool writing such documents directly,
// as the admin benchmark's seeder does).
func BreakdownKey(provider, model, tool string) string {
	return byEscaper.Replace(provider) + "|" + byEscaper.Replace(model) + "|" + byEscaper.Replace(tool)
}

// parseByKey reverses BreakdownKey.
func parseByKey(k string) (provider, model, tool string, ok bool) {
	parts := strings.Split(k, "|")
	if len(parts) != 3 {
		return "", "", "", false
	}
	return byUnescaper.Replace(parts[0]), byUnescaper.Replace(parts[1]), byUnescaper.Replace(parts[2]), true
}

// byInc is e's increments of the user-level breakdown: rollupInc's fields under by.<key>.
func byInc(e *Entry) bson.D {
	prefix := byField + "." + BreakdownKey(e.Provider, e.Model, e.Tool) + "."
	inc := rollupInc(e)
	out := make(bson.D, len(inc))
	for i, f := range inc {
		out[i] = bson.E{Key: prefix + f.Key, Value: f.Value}
	}
	return out
}

// byCounts is one breakdown entry as stored.
type byCounts struct {
	Requests   int64 `bson:"requests"`
	Messages   int64 `bson:"messages"`
	Input      int64 `bson:"input"`
	Output     int64 `bson:"output"`
	CacheRead  int64 `bson:"cacheRead"`
	CacheWrite int64 `bson:"cacheWrite"`
	Reasoning  int64 `bson:"reasoning"`
	CostMicros int64 `bson:"costMicros"`
}

// userDayDoc is a user-level document with its breakdown.
type userDayDoc struct {
	Requests int64               `bson:"requests"`
	By       map[string]byCounts `bson:"by"`
}

// userDay is one day of a user's usage, split by provider, model and tool.
type userDay struct {
	day  string
	rows []viewRow
}

// userDays reads the user-level documents of q's user and range by _id and splits them by
// their breakdown; ok is false when the range is too long or a document lacks a complete
// breakdown.
func (s *Service) userDays(ctx context.Context, q CostQuery, rd *ReadStats) (out []userDay, ok bool, err error) {
	days := s.reportDays(q)
	if len(days) > byMaxDays {
		return nil, false, nil
	}
	for _, day := range days {
		raw, err := findRaw(ctx, s.rollups[levelUser], rollupID(levelKeyOf(levelUser, day, "", "", "", q.UserID)), rd)
		if err != nil {
			return nil, false, fmt.Errorf("read %s of %s: %w", levelColl[levelUser], day, err)
		}
		if raw == nil {
			continue
		}
		var d userDayDoc
		if err := bson.Unmarshal(raw, &d); err != nil {
			return nil, false, nil // not a document of ours as we write them: scan
		}
		var sum int64
		rows := make([]viewRow, 0, len(d.By))
		for k, c := range d.By {
			p, m, t, good := parseByKey(k)
			if !good {
				return nil, false, nil
			}
			sum += c.Requests
			rows = append(rows, viewRow{provider: p, model: m, tool: t, user: q.UserID,
				n: counts{c.Requests, c.Messages, c.Input, c.Output, c.CacheRead, c.CacheWrite, c.Reasoning, c.CostMicros}})
		}
		if sum != d.Requests {
			return nil, false, nil // written (partly) before the breakdown existed
		}
		out = append(out, userDay{day, rows})
	}
	return out, true, nil
}

// userReports answers several groupings of one user's range (q.UserID) with one read of its
// days (the three reports of GET /admin/users/{id}/usage); without a complete breakdown, each
// grouping is a scan of its level.
func (s *Service) userReports(ctx context.Context, q CostQuery, groupings [][]string) ([]*CostReport, error) {
	for _, gb := range groupings {
		gq := q
		gq.GroupBy = gb
		if err := gq.check(); err != nil {
			return nil, err
		}
	}
	if err := s.SyncJournal(ctx); err != nil { // the rollups of every turn settled so far
		return nil, fmt.Errorf("billing: cost report: %w", err)
	}
	var rd ReadStats
	days, ok, err := s.userDays(ctx, q, &rd)
	if err != nil {
		return nil, fmt.Errorf("billing: cost report: %w", err)
	}
	out := make([]*CostReport, len(groupings))
	for i, gb := range groupings {
		gq := q
		gq.GroupBy = gb
		if !ok {
			if out[i], err = s.scanReport(ctx, gq); err != nil {
				return nil, err
			}
			continue
		}
		rep := s.newReport(gq, levelUser)
		rep.Read = rd
		agg := newCostAgg(gb)
		for _, d := range days {
			for j := range d.rows {
				agg.add(d.day, &d.rows[j])
			}
		}
		rep.finish(gq, agg)
		out[i] = rep
	}
	return out, nil
}
