package billing

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/maula-ai/maula-chat/providers"
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
	// Fresh checks every day of the range against its model-level documents now, instead of
	// trusting a closed day checked in the last few minutes (see reportCache).
	Fresh bool
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
	Read    ReadStats `json:"-"` // sent as the X-Cost-Read header
}

// ReadStats says how a report was read: from the cache, from the persisted summaries, by _id,
// or by scanning.
type ReadStats struct {
	CachedDays int // days whose level was answered from memory (after the check of the model level)
	Lookups    int // documents read by _id (rollups and summaries)
	Scans      int // collection scans
	Docs       int // documents the scans returned
	StoredDays int // days whose level was answered from a persisted summary (after the same check)
}

func (r ReadStats) String() string {
	return fmt.Sprintf("cachedDays=%d lookups=%d scans=%d docs=%d storedDays=%d", r.CachedDays, r.Lookups, r.Scans, r.Docs, r.StoredDays)
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
//
// Groupings served by the model, tool and user levels for every user go through the
// process's cache of day views (reportCache); the others (a user's own usage, user ×
// provider/model/tool) read their level directly.
func (s *Service) Costs(ctx context.Context, q CostQuery) (*CostReport, error) {
	if err := q.check(); err != nil {
		return nil, err
	}
	if !q.UserID.IsZero() {
		// One user: the user level's documents of the range, by _id (userusage.go).
		reps, err := s.userReports(ctx, q, [][]string{q.GroupBy})
		if err != nil {
			return nil, err
		}
		return reps[0], nil
	}
	if err := s.SyncJournal(ctx); err != nil { // the rollups of every turn settled so far
		return nil, fmt.Errorf("billing: cost report: %w", err)
	}
	lvl := q.level()
	if lvl == levelFull {
		return s.scanReport(ctx, q)
	}
	rep := s.newReport(q, lvl)
	agg := newCostAgg(q.GroupBy)
	if err := s.reportCache().costs(ctx, s, q, lvl, agg, &rep.Read); errors.Is(err, errLegacyIDs) {
		return s.scanReport(ctx, q)
	} else if err != nil {
		return nil, fmt.Errorf("billing: cost report: %w", err)
	}
	rep.finish(q, agg)
	return rep, nil
}

// check validates a query's grouping and range.
func (q *CostQuery) check() error {
	if len(q.GroupBy) == 0 || len(q.GroupBy) > 2 {
		return fmt.Errorf("%w: groupBy takes one or two dimensions", ErrBadRequest)
	}
	if q.To.Before(q.From) {
		return fmt.Errorf("%w: to is before from", ErrBadRequest)
	}
	return nil
}

// newReport is q's empty report, read from level lvl.
func (s *Service) newReport(q CostQuery, lvl int) *CostReport {
	return &CostReport{From: dayOf(q.From), To: dayOf(q.To), GroupBy: q.GroupBy, Source: levelColl[lvl], Rows: []CostRow{}}
}

// finish writes agg's groups into rep and orders them for q.
func (rep *CostReport) finish(q CostQuery, agg *costAgg) {
	agg.fill(rep)
	rep.order(q)
}

// scanReport answers q from the documents of its level that match it (costsScan).
func (s *Service) scanReport(ctx context.Context, q CostQuery) (*CostReport, error) {
	lvl := q.level()
	rep := s.newReport(q, lvl)
	agg := newCostAgg(q.GroupBy)
	if err := s.costsScan(ctx, q, lvl, agg, &rep.Read); err != nil {
		return nil, fmt.Errorf("billing: cost report: %w", err)
	}
	rep.finish(q, agg)
	return rep, nil
}

// order sorts the rows, by cost when grouped by user, and keeps q.Limit of them.
func (rep *CostReport) order(q CostQuery) {
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
}

// costsScan answers q from the documents of one level that match it: FerretDB decodes every
// document of the collection to filter them, so this costs about 0.2 ms per document stored.
func (s *Service) costsScan(ctx context.Context, q CostQuery, lvl int, agg *costAgg, rd *ReadStats) error {
	match := bson.D{{Key: "day", Value: bson.D{{Key: "$gte", Value: dayOf(q.From)}, {Key: "$lte", Value: dayOf(q.To)}}}}
	if !q.UserID.IsZero() {
		match = append(match, bson.E{Key: "userId", Value: q.UserID})
	}
	return s.scanLevel(ctx, lvl, match, rd, func(day string, r *viewRow, _ bool) { agg.add(day, r) })
}

// The rows are summed here rather than by $group: FerretDB v1.24's $group returned 0 for
// every $sum but the first over int64 fields (TestCostsExactAndReconcile guards this).

// counts are the integer sums of a rollup document, in the order of the nXxx indexes.
type counts [8]int64

const (
	nRequests = iota
	nMessages
	nInput
	nOutput
	nCacheRead
	nCacheWrite
	nReasoning
	nCostMicros
)

func (c *counts) add(o *counts) {
	for i := range c {
		c[i] += o[i]
	}
}

func (c *counts) row() CostRow {
	return CostRow{Requests: c[nRequests], Messages: c[nMessages], Input: c[nInput], Output: c[nOutput], CacheRead: c[nCacheRead],
		CacheWrite: c[nCacheWrite], Reasoning: c[nReasoning], CostMicros: c[nCostMicros], CostUSD: float64(c[nCostMicros]) / 1e6}
}

// viewRow is one rollup document reduced to its key fields (but the day) and its counts.
type viewRow struct {
	provider, model, tool string
	user                  bson.ObjectID
	n                     counts
}

func (r *viewRow) pair() pairKey { return pairKey{r.provider, r.model} }

// levelID is the _id billing gives the document of r's key at level lvl (rollup.go).
func levelID(lvl int, day string, r *viewRow) string {
	return rollupID(levelKeyOf(lvl, day, r.provider, r.model, r.tool, r.user))
}

// scanDoc is a rollup document as read, with its _id.
type scanDoc struct {
	ID     bson.RawValue `bson:"_id"`
	Rollup `bson:",inline"`
}

// scanLevel hands every document of level lvl matching filter to fn, with whether its _id is
// the derived one (documents written before ids were derived carry an ObjectID).
func (s *Service) scanLevel(ctx context.Context, lvl int, filter bson.D, rd *ReadStats, fn func(day string, r *viewRow, derivedID bool)) error {
	rd.Scans++
	cur, err := s.rollups[lvl].Find(ctx, filter)
	if err != nil {
		return err
	}
	defer cur.Close(ctx)
	strs := map[string]string{} // provider, model and tool names repeat: keep one copy each
	intern := func(v string) string {
		if w, ok := strs[v]; ok {
			return w
		}
		strs[v] = v
		return v
	}
	for cur.Next(ctx) {
		var d scanDoc
		if err := cur.Decode(&d); err != nil {
			return err
		}
		rd.Docs++
		r := viewRow{provider: intern(d.Provider), model: intern(d.Model), tool: intern(d.Tool), user: d.UserID,
			n: counts{d.Requests, d.Messages, d.Input, d.Output, d.CacheRead, d.CacheWrite, d.Reasoning, d.CostMicros}}
		id, _ := d.ID.StringValueOK()
		fn(intern(d.Day), &r, id == levelID(lvl, d.Day, &r))
	}
	return cur.Err()
}

// groupKey is a report row's key: up to two dimension values, the user apart.
type groupKey struct {
	s [2]string
	u bson.ObjectID
}

// costAgg sums rows into the groups of a report.
type costAgg struct {
	groupBy []string
	index   map[groupKey]int
	keys    []groupKey
	sums    []counts
	total   counts
}

func newCostAgg(groupBy []string) *costAgg {
	return &costAgg{groupBy: groupBy, index: map[groupKey]int{}}
}

func (a *costAgg) add(day string, r *viewRow) {
	var k groupKey
	for i, d := range a.groupBy {
		switch d {
		case DimProvider:
			k.s[i] = r.provider
		case DimModel:
			k.s[i] = r.model
		case DimTool:
			k.s[i] = r.tool
		case DimUser:
			k.u = r.user
		default:
			k.s[i] = day
		}
	}
	at, ok := a.index[k]
	if !ok {
		at = len(a.keys)
		a.index[k] = at
		a.keys = append(a.keys, k)
		a.sums = append(a.sums, counts{})
	}
	a.sums[at].add(&r.n)
	a.total.add(&r.n)
}

// fill writes the groups and the totals into rep.
func (a *costAgg) fill(rep *CostReport) {
	rep.Rows = slices.Grow(rep.Rows[:0], len(a.keys))
	for i, k := range a.keys {
		row := a.sums[i].row()
		for j, d := range a.groupBy {
			switch d {
			case DimProvider:
				row.Provider = k.s[j]
			case DimModel:
				row.Model = k.s[j]
			case DimTool:
				row.Tool = k.s[j]
			case DimUser:
				row.User = k.u.Hex()
			default:
				row.Day = k.s[j]
			}
		}
		rep.Rows = append(rep.Rows, row)
	}
	rep.Totals = a.total.row()
}

// The report cache.
//
// Why: on the embedded FerretDB every filter but {_id: v} scans its collection and decodes
// each document in Go, about 0.2 ms per document stored (a CPU profile of a scan: 73% in
// FerretDB's getMore, mostly its JSON decoding, resource tracking and the garbage it makes);
// a read by _id costs 0.6-1 ms, and such reads do not go faster in parallel. 30 days of
// 1,000,000 turns over 50 tools and 10,000 users hold ~22,500 tool-level and ~300,000
// user-level documents: seconds to a minute per report by scanning, whatever the range.
//
// How: the process keeps, per level and day, a view of the day's documents (key and counts)
// together with the day's model-level documents it agrees with (its fingerprint). Those are
// few (one per provider and model used that day) and are read by _id. Every settled turn adds
// 1 to requests and its figures to one document of each level, so a view whose sums equal the
// model level's, per provider and model for the tool level, holds every turn of the day, and a
// view whose fingerprint is unchanged is still current.
//
//   - A day is closed closeAfter (DanglingAfter + 15 min) after its end: its late settles and
//     recoveries are written by then in a running deployment. A closed day's model level is
//     read again by _id every reportRecheck (plus a per-day spread of up to half of it) until
//     it has been read reportSettle after both its close and the cache's start; that read is
//     final. The window after the start covers the one late writer left: RecoverDangling
//     settling, at their reserve's time, the turns of instances that were all down (it runs a
//     minute after start and takes holds DanglingAfter old). Fresh reads every day again,
//     ForgetCostCache drops them all (e.g. after a correction written into the rollups).
//   - An open day (today; yesterday until it closes) has its model level read by _id at every
//     report. A tool view follows it by reading by _id, for each (provider, model) whose
//     document changed, the documents of every tool known; a user view is scanned again.
//   - A closed day's views are also persisted, one summary document per level and day
//     (report_persist.go), so that a process that does not hold a view (after a restart or an
//     eviction) reads it by _id, and uses it only if its fingerprint equals the day's model
//     level read by _id now: the check above. ForgetCostCache drops them too.
//   - Missing views that no summary answers are built by one scan of their level over those
//     days, and kept only if they agree with the model level read before the scan: a turn
//     being written, or levels that disagree (reconcile reports those), leave the day uncached,
//     and the scan answers.
//   - The (provider, model) pairs read by _id are the price book's and any seen in a scan or a
//     summary; the tools, those seen. A pair or tool never seen makes the sums disagree: the
//     day is scanned.
//   - At most reportMaxRows rows are kept; the least recently used days go first.
//   - A document whose _id is not derived from its key (written before ids were derived)
//     cannot be read by _id: once one is seen, every report scans.
//
// Days that have not begun an hour from now are not read (a settle's day is its turn's end).

var (
	// reportRecheck is how long a closed day's model level is trusted before it is read again,
	// until a read reportSettle after both the day's close and the cache's start, which is final.
	reportRecheck = 5 * time.Minute
	reportSettle  = time.Hour
	// reportMaxRows bounds the rows the cache keeps (about 130 bytes each): 30 days of 10,000
	// active users is 300,000.
	reportMaxRows = 1 << 19
	// reportMaxLookups bounds the tool documents one open day may read by _id to follow its
	// changes; beyond it the day is scanned.
	reportMaxLookups = 1500
)

// errLegacyIDs: a rollup document's _id is not derived from its key.
var errLegacyIDs = errors.New("rollup documents without derived _id")

type pairKey struct{ provider, model string }

// dayView is one day of one level. Views are not changed once stored, but for the fields
// named.
type dayView struct {
	rows    []viewRow
	fp      map[pairKey]counts // the model-level documents of the day the rows agree with
	checked time.Time          // model level only: when fp was read; guarded by level[levelModel]
	n       int                // len(rows); guarded by reportCache.mu
	used    uint64             // the tick of the last report that used it; guarded by reportCache.mu
	saved   bool               // persisted (or read from the store) as it is; guarded by level[its level]
}

// reportCache is a service's cache of day views (see above).
type reportCache struct {
	// level[l] is held by a report of level l while it checks, builds and sums its views;
	// level[levelModel] also by anyone reading or refreshing the model views. Order: a level,
	// then the model level, then mu.
	level  [numLevels]sync.Mutex
	mu     sync.Mutex // guards the fields below
	views  [numLevels]map[string]*dayView
	pairs  map[pairKey]bool
	tools  map[string]bool
	rows   int
	tick   uint64
	legacy bool
	born   time.Time // the service's clock when the cache was made

	// The persisted summaries (report_persist.go): sumMu guards sumReady (their collection is
	// created and indexed) and sumDrop (ForgetCostCache has not yet managed to drop them: they
	// are not read).
	sumMu    sync.Mutex
	sumReady bool
	sumDrop  bool
}

// newReportCache makes the service's cost report cache (New calls it once).
func newReportCache(s *Service) *reportCache {
	c := &reportCache{pairs: map[pairKey]bool{}, tools: map[string]bool{}, born: s.now()}
	for l := range c.views {
		c.views[l] = map[string]*dayView{}
	}
	for _, pm := range PricedModels(s.o.Prices) {
		c.pairs[pairKey{pm.Provider, pm.Model}] = true
	}
	return c
}

func (s *Service) reportCache() *reportCache { return s.reports }

// ProviderModel names a model of a provider.
type ProviderModel struct{ Provider, Model string }

// PricedModels lists every model the price book prices at any date, provider by provider in
// the order of providers.ProviderNames: the model-level rollups a report reads by _id.
func PricedModels(prices *providers.PriceBook) []ProviderModel {
	var out []ProviderModel
	for _, p := range providers.ProviderNames {
		for _, m := range prices.Models(p, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)) {
			out = append(out, ProviderModel{p, m.ID})
		}
	}
	return out
}

// ForgetCostCache drops the cost report's cached days and the summaries persisted for later
// processes, e.g. after a correction written straight into the rollups; otherwise a closed day
// is trusted for a few minutes, and its summary for as long as the day's model level is
// unchanged. It waits for the reports being read, so that none keeps or persists what it read
// before. Should the summaries not be dropped (an error, logged), this process reads none
// until a later attempt, at its next report, succeeds.
func (s *Service) ForgetCostCache() {
	c := s.reportCache()
	for _, l := range []int{levelFull, levelTool, levelUser, levelModel} { // the lock order: levels, then the model level
		c.level[l].Lock()
		defer c.level[l].Unlock()
	}
	c.mu.Lock()
	for l := range c.views {
		c.views[l] = map[string]*dayView{}
	}
	c.rows = 0
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c.sumMu.Lock()
	defer c.sumMu.Unlock()
	c.dropSummaries(ctx, s)
}

// reportDays lists the days of q that can hold rollups.
func (s *Service) reportDays(q CostQuery) []string {
	last := midnight(q.To)
	if lim := midnight(s.now().Add(time.Hour)); last.After(lim) {
		last = lim
	}
	var days []string
	for d := midnight(q.From); !d.After(last); d = d.AddDate(0, 0, 1) {
		days = append(days, dayOf(d))
	}
	return days
}

// closes is when day closes: no settle or recovery of a running deployment writes into it
// after that.
func (s *Service) closes(day string) time.Time {
	t, err := time.Parse(time.DateOnly, day)
	if err != nil {
		return time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	return t.Add(24*time.Hour + s.o.DanglingAfter + 15*time.Minute)
}

// recheckDue reports whether a closed day's model level read at checked is to be read again:
// every reportRecheck until a read made reportSettle after both the day's close and the
// cache's start, which is final. The spread keeps the days of one range from falling due at
// once.
func (c *reportCache) recheckDue(s *Service, day string, checked, now time.Time) bool {
	final := s.closes(day)
	if final.Before(c.born) {
		final = c.born
	}
	if !checked.Before(final.Add(reportSettle)) {
		return false
	}
	h := fnv.New32a()
	h.Write([]byte(day))
	spread := time.Duration(h.Sum32()) % (reportRecheck/2 + 1)
	return now.Sub(checked) >= reportRecheck+spread
}

func equalFP(a, b map[pairKey]counts) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

// agrees reports whether a day's rows of level lvl hold exactly the turns of fp.
func agrees(lvl int, rows []viewRow, fp map[pairKey]counts) bool {
	if lvl == levelTool {
		per := map[pairKey]counts{}
		for i := range rows {
			n := per[rows[i].pair()]
			n.add(&rows[i].n)
			per[rows[i].pair()] = n
		}
		return equalFP(per, fp)
	}
	var a, b counts
	for i := range rows {
		a.add(&rows[i].n)
	}
	for _, n := range fp {
		b.add(&n)
	}
	return a == b
}

// costs sums the days of q at level lvl (model, tool or user, every user) into agg.
func (c *reportCache) costs(ctx context.Context, s *Service, q CostQuery, lvl int, agg *costAgg, rd *ReadStats) error {
	c.level[lvl].Lock()
	defer c.level[lvl].Unlock()
	c.mu.Lock()
	c.tick++
	tick, legacy := c.tick, c.legacy
	c.mu.Unlock()
	if legacy {
		return errLegacyIDs
	}
	days := s.reportDays(q)
	if len(days) == 0 {
		return nil
	}
	model, err := c.modelViews(ctx, s, days, q.Fresh, lvl == levelModel, rd)
	views := model
	if err == nil && lvl != levelModel {
		views, err = c.levelViews(ctx, s, lvl, days, model, agg, rd)
	}
	if err != nil {
		return err
	}
	if lvl != levelModel {
		c.saveClosed(ctx, s, lvl, days, views, model)
	}
	for _, d := range days {
		v := views[d]
		if v == nil {
			continue // the scan summed the day into agg itself
		}
		for i := range v.rows {
			agg.add(d, &v.rows[i])
		}
	}
	c.evict(tick)
	return nil
}

// modelViews returns the model-level view of each day, current per the rules above. held: the
// caller holds level[levelModel].
func (c *reportCache) modelViews(ctx context.Context, s *Service, days []string, fresh, held bool, rd *ReadStats) (map[string]*dayView, error) {
	if !held {
		c.level[levelModel].Lock()
		defer c.level[levelModel].Unlock()
	}
	now := s.now()
	got := c.stored(levelModel, days)
	var scan, relook []string
	for _, d := range days {
		switch v := got[d]; {
		case v == nil:
			scan = append(scan, d)
		case fresh || now.Before(s.closes(d)) || c.recheckDue(s, d, v.checked, now):
			relook = append(relook, d)
		case held:
			rd.CachedDays++
		}
	}
	if len(scan) > 0 {
		var err error
		if scan, err = c.loadModel(ctx, s, scan, got, held, now, rd); err != nil {
			return nil, err
		}
	}
	if len(scan) > 0 {
		byDay, err := c.scanDays(ctx, s, levelModel, scan, nil, rd)
		if err != nil {
			return nil, err
		}
		for _, d := range scan {
			fp := map[pairKey]counts{}
			for _, r := range byDay[d] {
				fp[r.pair()] = r.n
			}
			got[d] = &dayView{rows: byDay[d], fp: fp, checked: now}
			c.put(levelModel, d, got[d])
		}
	}
	for _, d := range relook {
		fp, err := c.lookupModel(ctx, s, d, rd)
		if err != nil {
			return nil, err
		}
		if v := got[d]; equalFP(v.fp, fp) {
			v.checked = now
			continue
		}
		v := &dayView{fp: fp, checked: now}
		for p, n := range fp {
			v.rows = append(v.rows, viewRow{provider: p.provider, model: p.model, n: n})
		}
		got[d] = v
		c.put(levelModel, d, v)
	}
	c.saveClosed(ctx, s, levelModel, days, got, nil)
	return got, nil
}

// levelViews returns the views of level lvl (tool or user) of days, given their model views.
//
// A scan that would hold more than reportMaxRows rows sums them into agg instead, and its days
// are left out of the answer (and of the cache).
func (c *reportCache) levelViews(ctx context.Context, s *Service, lvl int, days []string, model map[string]*dayView, agg *costAgg, rd *ReadStats) (map[string]*dayView, error) {
	out := c.stored(lvl, days)
	var missing, follow []string
	for _, d := range days {
		switch v := out[d]; {
		case v != nil && equalFP(v.fp, model[d].fp):
			rd.CachedDays++
		case v != nil && lvl == levelTool:
			follow = append(follow, d)
		default:
			missing = append(missing, d)
		}
	}
	for _, d := range follow {
		v, err := c.followPairs(ctx, s, d, out[d], model[d].fp, rd)
		if err != nil {
			return nil, err
		}
		if v == nil {
			missing = append(missing, d)
			continue
		}
		out[d] = v
		c.put(lvl, d, v)
	}
	if len(missing) > 0 {
		var err error
		if missing, err = c.loadLevel(ctx, s, lvl, missing, model, out, agg, rd); err != nil {
			return nil, err
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	slices.Sort(missing)
	byDay, err := c.scanDays(ctx, s, lvl, missing, agg, rd)
	if err != nil {
		return nil, err
	}
	if byDay == nil { // summed into agg
		for _, d := range missing {
			delete(out, d)
		}
		return out, nil
	}
	for _, d := range missing {
		v := &dayView{rows: byDay[d], fp: model[d].fp}
		out[d] = v
		if agrees(lvl, v.rows, v.fp) {
			c.put(lvl, d, v)
		}
	}
	return out, nil
}

// followPairs brings a tool view up to fp by reading by _id the tool documents of each pair
// whose model document changed; nil when that cannot be done exactly (a tool never seen, a
// turn being written twice in a row, or too many reads), and the day is to be scanned.
func (c *reportCache) followPairs(ctx context.Context, s *Service, day string, v *dayView, fp map[pairKey]counts, rd *ReadStats) (*dayView, error) {
	changed := map[pairKey]bool{}
	for p, n := range fp {
		if v.fp[p] != n {
			changed[p] = true
		}
	}
	for p, n := range v.fp {
		if fp[p] != n {
			changed[p] = true
		}
	}
	c.mu.Lock()
	tools := slices.Sorted(maps.Keys(c.tools))
	c.mu.Unlock()
	if len(changed)*len(tools) > reportMaxLookups {
		return nil, nil
	}
	nv := &dayView{fp: maps.Clone(fp)}
	for _, r := range v.rows {
		if !changed[r.pair()] {
			nv.rows = append(nv.rows, r)
		}
	}
	for p := range changed {
		want := fp[p]
		for attempt := 0; ; attempt++ {
			var got counts
			var rows []viewRow
			for _, t := range tools {
				r := viewRow{provider: p.provider, model: p.model, tool: t}
				n, ok, err := s.lookupCounts(ctx, levelTool, levelID(levelTool, day, &r), rd)
				if err != nil {
					return nil, err
				}
				if ok {
					r.n = n
					got.add(&n)
					rows = append(rows, r)
				}
			}
			if got == want {
				nv.rows = append(nv.rows, rows...)
				nv.fp[p] = want
				break
			}
			if attempt == 1 {
				return nil, nil
			}
			// A turn may have been written between the reads: read the pair's total again.
			r := viewRow{provider: p.provider, model: p.model}
			n, _, err := s.lookupCounts(ctx, levelModel, levelID(levelModel, day, &r), rd)
			if err != nil {
				return nil, err
			}
			want = n
		}
	}
	return nv, nil
}

// lookupModel reads the model-level documents of day by _id, one per known pair.
func (c *reportCache) lookupModel(ctx context.Context, s *Service, day string, rd *ReadStats) (map[pairKey]counts, error) {
	c.mu.Lock()
	pairs := slices.SortedFunc(maps.Keys(c.pairs), comparePairs)
	c.mu.Unlock()
	fp := map[pairKey]counts{}
	for _, p := range pairs {
		r := viewRow{provider: p.provider, model: p.model}
		n, ok, err := s.lookupCounts(ctx, levelModel, levelID(levelModel, day, &r), rd)
		if err != nil {
			return nil, err
		}
		if ok {
			fp[p] = n
		}
	}
	return fp, nil
}

// lookupCounts reads one rollup document by _id.
func (s *Service) lookupCounts(ctx context.Context, lvl int, id string, rd *ReadStats) (counts, bool, error) {
	rd.Lookups++
	var d Rollup
	err := s.rollups[lvl].FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return counts{}, false, nil
	}
	if err != nil {
		return counts{}, false, err
	}
	return counts{d.Requests, d.Messages, d.Input, d.Output, d.CacheRead, d.CacheWrite, d.Reasoning, d.CostMicros}, true, nil
}

// scanDays reads level lvl's documents of days (sorted) with one scan, and learns the pairs and
// tools they name. Past reportMaxRows rows, with agg, it sums them all into agg and returns no
// rows: a range too big to keep is answered like a scan.
func (c *reportCache) scanDays(ctx context.Context, s *Service, lvl int, days []string, agg *costAgg, rd *ReadStats) (map[string][]viewRow, error) {
	want := map[string]bool{}
	for _, d := range days {
		want[d] = true
	}
	byDay := map[string][]viewRow{}
	kept := 0
	legacy := false
	pairs, tools := map[pairKey]bool{}, map[string]bool{}
	filter := bson.D{{Key: "day", Value: bson.D{{Key: "$gte", Value: days[0]}, {Key: "$lte", Value: days[len(days)-1]}}}}
	err := s.scanLevel(ctx, lvl, filter, rd, func(day string, r *viewRow, derived bool) {
		legacy = legacy || !derived
		if lvl != levelUser {
			pairs[r.pair()] = true
		}
		if lvl == levelTool {
			tools[r.tool] = true
		}
		switch {
		case !want[day]:
		case byDay == nil:
			agg.add(day, r)
		case agg != nil && kept == reportMaxRows:
			for d, rows := range byDay {
				for i := range rows {
					agg.add(d, &rows[i])
				}
			}
			byDay = nil
			agg.add(day, r)
		default:
			byDay[day] = append(byDay[day], *r)
			kept++
		}
	})
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	maps.Copy(c.pairs, pairs)
	maps.Copy(c.tools, tools)
	if legacy {
		c.legacy = true
		return nil, errLegacyIDs
	}
	return byDay, nil
}

// stored returns the stored views of days at level lvl, marked used.
func (c *reportCache) stored(lvl int, days []string) map[string]*dayView {
	c.mu.Lock()
	defer c.mu.Unlock()
	got := map[string]*dayView{}
	for _, d := range days {
		if v := c.views[lvl][d]; v != nil {
			v.used = c.tick
			got[d] = v
		}
	}
	return got
}

// put stores a view.
func (c *reportCache) put(lvl int, day string, v *dayView) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.views[lvl][day]; old != nil {
		c.rows -= old.n
	}
	v.n, v.used = len(v.rows), c.tick
	c.views[lvl][day] = v
	c.rows += v.n
}

// evict drops the least recently used views while more than reportMaxRows rows are kept, but
// none that the report of tick uses.
func (c *reportCache) evict(tick uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.rows > reportMaxRows {
		lvl, day, oldest := -1, "", tick
		for l := range c.views {
			for d, v := range c.views[l] {
				if v.used < oldest {
					lvl, day, oldest = l, d, v.used
				}
			}
		}
		if lvl < 0 {
			return
		}
		c.rows -= c.views[lvl][day].n
		delete(c.views[lvl], day)
	}
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
