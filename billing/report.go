package billing

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Dimensions of the cost report.
const (
	DimProvider = "provider"
	DimModel    = "model"
	DimTool     = "tool"
	DimUser     = "user"
	DimDay      = "day"
)

var dims = []string{DimProvider, DimModel, DimTool, DimUser, DimDay}

// dimField is the rollup field of a dimension.
func dimField(d string) string {
	if d == DimUser {
		return "userId"
	}
	return d
}

// CostQuery selects the rollups of a report: days From..To inclusive (UTC), grouped by one or
// two dimensions, optionally for one user.
type CostQuery struct {
	From, To time.Time
	GroupBy  []string
	UserID   bson.ObjectID // zero: every user
	Limit    int           // >0: keep the top rows by cost
}

// CostRow is one group of the report (and, as Totals, their sum).
type CostRow struct {
	Provider   string  `json:"provider,omitempty"`
	Model      string  `json:"model,omitempty"`
	Tool       string  `json:"tool,omitempty"`
	User       string  `json:"user,omitempty"`
	Day        string  `json:"day,omitempty"`
	Requests   int64   `json:"requests"`
	Messages   int64   `json:"messages"`
	Input      int64   `json:"input"`
	Output     int64   `json:"output"`
	CacheRead  int64   `json:"cacheRead"`
	CacheWrite int64   `json:"cacheWrite"`
	Reasoning  int64   `json:"reasoning"`
	CostMicros int64   `json:"costMicros"`
	CostUSD    float64 `json:"costUsd"`
}

func (r *CostRow) add(o *CostRow) {
	r.Requests += o.Requests
	r.Messages += o.Messages
	r.Input += o.Input
	r.Output += o.Output
	r.CacheRead += o.CacheRead
	r.CacheWrite += o.CacheWrite
	r.Reasoning += o.Reasoning
	r.CostMicros += o.CostMicros
	r.CostUSD = float64(r.CostMicros) / 1e6
}

func (r *CostRow) dim(d string) string {
	switch d {
	case DimProvider:
		return r.Provider
	case DimModel:
		return r.Model
	case DimTool:
		return r.Tool
	case DimUser:
		return r.User
	}
	return r.Day
}

// CostReport is the answer of GET /admin/costs.
type CostReport struct {
	From    string    `json:"from"`
	To      string    `json:"to"`
	GroupBy []string  `json:"groupBy"`
	Source  string    `json:"source"` // the rollup collection read
	Rows    []CostRow `json:"rows"`
	Totals  CostRow   `json:"totals"`
}

// ParseGroupBy validates a groupBy parameter: one or two distinct dimensions, comma-separated.
func ParseGroupBy(s string) ([]string, error) {
	if s == "" {
		return []string{DimProvider}, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > 2 {
		return nil, fmt.Errorf("%w: groupBy takes one or two of %s", ErrBadRequest, strings.Join(dims, ", "))
	}
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if !slices.Contains(dims, p) {
			return nil, fmt.Errorf("%w: unknown groupBy %q (one or two of %s)", ErrBadRequest, p, strings.Join(dims, ", "))
		}
		if i == 1 && p == parts[0] {
			return nil, fmt.Errorf("%w: groupBy names %q twice", ErrBadRequest, p)
		}
		parts[i] = p
	}
	return parts, nil
}

// level picks the smallest rollup level holding the query's dimensions.
func (q *CostQuery) level() int {
	need := map[string]bool{}
	for _, d := range q.GroupBy {
		need[d] = true
	}
	switch {
	case need[DimUser] || !q.UserID.IsZero():
		if !need[DimProvider] && !need[DimModel] && !need[DimTool] {
			return levelUser
		}
		return levelFull
	case need[DimTool]:
		return levelTool
	default:
		return levelModel
	}
}

// Costs reads the rollups into a report. Sums are integers (micro-dollars, tokens), so the
// totals are exact. Rows are sorted by cost, highest first, when grouped by user, otherwise by
// their keys.
func (s *Service) Costs(ctx context.Context, q CostQuery) (*CostReport, error) {
	if len(q.GroupBy) == 0 || len(q.GroupBy) > 2 {
		return nil, fmt.Errorf("%w: groupBy takes one or two dimensions", ErrBadRequest)
	}
	if q.To.Before(q.From) {
		return nil, fmt.Errorf("%w: to is before from", ErrBadRequest)
	}
	lvl := q.level()
	match := bson.D{{Key: "day", Value: bson.D{{Key: "$gte", Value: dayOf(q.From)}, {Key: "$lte", Value: dayOf(q.To)}}}}
	if !q.UserID.IsZero() {
		match = append(match, bson.E{Key: "userId", Value: q.UserID})
	}
	// The rows are grouped here rather than by $group: FerretDB v1.24's $group returned 0 for
	// every $sum but the first over int64 fields (TestCostsExact guards this). The levels are
	// small by design, so reading the matched documents is cheap.
	cur, err := s.rollups[lvl].Find(ctx, match)
	if err != nil {
		return nil, fmt.Errorf("billing: cost report: %w", err)
	}
	defer cur.Close(ctx)
	rep := &CostReport{From: dayOf(q.From), To: dayOf(q.To), GroupBy: q.GroupBy, Source: levelColl[lvl], Rows: []CostRow{}}
	index := map[[2]string]int{}
	for cur.Next(ctx) {
		var r Rollup
		if err := cur.Decode(&r); err != nil {
			return nil, fmt.Errorf("billing: cost report: %w", err)
		}
		row := CostRow{Requests: r.Requests, Messages: r.Messages, Input: r.Input, Output: r.Output, CacheRead: r.CacheRead,
			CacheWrite: r.CacheWrite, Reasoning: r.Reasoning, CostMicros: r.CostMicros}
		var key [2]string
		for k, d := range q.GroupBy {
			var v string
			switch d {
			case DimProvider:
				v, row.Provider = r.Provider, r.Provider
			case DimModel:
				v, row.Model = r.Model, r.Model
			case DimTool:
				v, row.Tool = r.Tool, r.Tool
			case DimUser:
				row.User = r.UserID.Hex()
				v = row.User
			case DimDay:
				v, row.Day = r.Day, r.Day
			}
			key[k] = v
		}
		if at, ok := index[key]; ok {
			rep.Rows[at].add(&row)
		} else {
			row.CostUSD = float64(row.CostMicros) / 1e6
			index[key] = len(rep.Rows)
			rep.Rows = append(rep.Rows, row)
		}
		rep.Totals.add(&row)
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("billing: cost report: %w", err)
	}
	byUser := slices.Contains(q.GroupBy, DimUser)
	sort.Slice(rep.Rows, func(i, j int) bool {
		a, b := &rep.Rows[i], &rep.Rows[j]
		if byUser && a.CostMicros != b.CostMicros {
			return a.CostMicros > b.CostMicros
		}
		for _, d := range q.GroupBy {
			if x, y := a.dim(d), b.dim(d); x != y {
				return x < y
			}
		}
		return false
	})
	if q.Limit > 0 && len(rep.Rows) > q.Limit {
		rep.Rows = rep.Rows[:q.Limit] // totals stay those of the whole range
	}
	return rep, nil
}

// USD formats micro-dollars exactly as a decimal dollar amount.
func USD(micros int64) string {
	sign := ""
	if micros < 0 {
		sign, micros = "-", -micros
	}
	return fmt.Sprintf("%s%d.%06d", sign, micros/1_000_000, micros%1_000_000)
}

// WriteCSV writes the report as CSV: a header, one line per row, and a TOTAL line.
func (r *CostReport) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	head := append(slices.Clone(r.GroupBy), "requests", "messages", "input", "output", "cacheRead", "cacheWrite", "reasoning", "costMicros", "costUsd")
	_ = cw.Write(head)
	line := func(keys []string, row *CostRow) {
		rec := append(keys, strconv.FormatInt(row.Requests, 10), strconv.FormatInt(row.Messages, 10),
			strconv.FormatInt(row.Input, 10), strconv.FormatInt(row.Output, 10), strconv.FormatInt(row.CacheRead, 10),
			strconv.FormatInt(row.CacheWrite, 10), strconv.FormatInt(row.Reasoning, 10),
			strconv.FormatInt(row.CostMicros, 10), USD(row.CostMicros))
		_ = cw.Write(rec)
	}
	for i := range r.Rows {
		keys := make([]string, len(r.GroupBy))
		for j, d := range r.GroupBy {
			keys[j] = r.Rows[i].dim(d)
		}
		line(keys, &r.Rows[i])
	}
	total := make([]string, len(r.GroupBy))
	total[0] = "TOTAL"
	line(total, &r.Totals)
	cw.Flush()
	return cw.Error()
}
