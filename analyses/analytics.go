package analyses

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/store"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// topN is how many countries and threats the analytics documents rank.
const topN = 10

// counterTTL keeps a day's kv counters a little past the day.
const counterTTL = 48 * time.Hour

// dayKey names one analytics document: a user's day in a tool's database.
type dayKey struct {
	tool string
	user bson.ObjectID
	day  time.Time
}

// delta is what happened in one analytics document since the last flush.
type delta struct {
	total, ok, failed, highRisk, uniqueIPs int64
	procTotal                              float64
	procN                                  int64
	countries, threats                     map[string]int64
}

func (d *delta) add(o *delta) {
	d.total += o.total
	d.ok += o.ok
	d.failed += o.failed
	d.highRisk += o.highRisk
	d.uniqueIPs += o.uniqueIPs
	d.procTotal += o.procTotal
	d.procN += o.procN
	for k, n := range o.countries {
		d.countries[k] += n
	}
	for k, n := range o.threats {
		d.threats[k] += n
	}
}

// Analytics keeps the seed's per-user per-day Analytics.metrics of recorded analyses:
// totalRequests, successfulRequests, failedRequests, averageProcessingTime,
// highRiskDetections, uniqueIPs, topCountries and topThreats.
//
// Requests add to an in-process delta (no database write on the request path); Flush, run
// every few seconds by Run and once at shutdown, writes each document's delta with one $inc
// upsert and, when countries, threats or processing times changed, re-ranks the top lists from
// the per-key counts kept beside them. Unique IPs are counted exactly: each day's addresses are
// the fields of a kv hash (analytics:ips:{tool}:{userId}:{date}, Redis with REDIS_URL), and only
// the request whose HINCRBY created the field counts one. billing $inc-s the same documents
// (chat turns) under the "rollups" lease lock because FerretDB updates are read-modify-write;
// Flush takes the same lock (store.SharedLocks).
type Analytics struct {
	o     Options
	locks *store.SharedLocks // nil when locking is off

	mu      sync.Mutex
	pending map[dayKey]*delta // guarded by mu; swapped out whole by Flush

	flushMu sync.Mutex // one Flush at a time
}

func newAnalytics(ctx context.Context, o Options) (*Analytics, error) {
	a := &Analytics{o: o, pending: map[dayKey]*delta{}}
	on, err := store.NeedsLocking(ctx, o.Mongo, o.Locking)
	if err != nil {
		return nil, err
	}
	if on {
		a.locks = store.NewSharedLocks(o.Mongo, o.Locking == "local", o.Log)
	}
	return a, nil
}

func midnight(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

func (a *Analytics) deltaFor(k dayKey) *delta {
	d := a.pending[k]
	if d == nil {
		d = &delta{countries: map[string]int64{}, threats: map[string]int64{}}
		a.pending[k] = d
	}
	return d
}

// Failed counts a refused analysis.
func (a *Analytics) Failed(tool string, user bson.ObjectID, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	d := a.deltaFor(dayKey{tool, user, midnight(at)})
	d.total++
	d.failed++
}

// Recorded counts a stored analysis.
func (a *Analytics) Recorded(ctx context.Context, tool string, user bson.ObjectID, at time.Time, v *valid) {
	day := midnight(at)
	var unique bool
	if v.ip != "" {
		n, err := a.o.KV.HIncrBy(ctx, "analytics:ips:"+tool+":"+user.Hex()+":"+day.Format(time.DateOnly), v.ip, 1, counterTTL)
		if err != nil {
			a.o.Log.Warn("analyses: unique IP counter", "err", err)
		}
		unique = n == 1
	}
	// The seed's realtime counter (billing adds the chat turns to the same hash).
	if _, err := a.o.KV.HIncrBy(ctx, "analytics:"+user.Hex()+":"+day.Format(time.DateOnly), "totalRequests", 1, counterTTL); err != nil {
		a.o.Log.Warn("analyses: realtime counter", "err", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	d := a.deltaFor(dayKey{tool, user, day})
	d.total++
	d.ok++
	if v.riskScore >= HighRiskScore {
		d.highRisk++
	}
	if unique {
		d.uniqueIPs++
	}
	d.procTotal += v.procTime
	d.procN++
	if v.countryCode != "" {
		d.countries[v.countryCode]++
	}
	for _, t := range v.threats {
		d.threats[t]++
	}
}

// Run flushes every interval until ctx is done, then flushes once more.
func (a *Analytics) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.Flush(ctx); err != nil && ctx.Err() == nil {
				a.o.Log.Warn("analyses: analytics flush failed; kept for the next one", "err", err)
			}
		}
	}
}

// Flush writes the pending deltas. A delta that fails to write is put back for the next Flush.
func (a *Analytics) Flush(ctx context.Context) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	a.mu.Lock()
	batch := a.pending
	a.pending = map[dayKey]*delta{}
	a.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	var failed map[dayKey]*delta
	err := a.locks.With(ctx, lockName, func() error {
		var errs []error
		for k, d := range batch {
			if err := a.write(ctx, k, d); err != nil {
				errs = append(errs, err)
				if failed == nil {
					failed = map[dayKey]*delta{}
				}
				failed[k] = d
			}
		}
		return errors.Join(errs...)
	})
	if err != nil && failed == nil {
		failed = batch // the lock was not taken: nothing was written
	}
	if len(failed) > 0 {
		a.mu.Lock()
		for k, d := range failed {
			a.deltaFor(k).add(d)
		}
		a.mu.Unlock()
	}
	return err
}

func (a *Analytics) write(ctx context.Context, k dayKey, d *delta) error {
	t, ok := a.o.Tools.Get(k.tool)
	if !ok {
		return nil
	}
	coll := a.o.Mongo.DB(t.Database()).Collection(model.CollAnalytics)
	inc := bson.D{
		{Key: "metrics.totalRequests", Value: d.total}, {Key: "metrics.successfulRequests", Value: d.ok},
		{Key: "metrics.failedRequests", Value: d.failed}, {Key: "metrics.highRiskDetections", Value: d.highRisk},
		{Key: "metrics.uniqueIPs", Value: d.uniqueIPs},
	}
	if d.procN > 0 {
		inc = append(inc, bson.E{Key: "metrics.processingTimeTotal", Value: d.procTotal}, bson.E{Key: "metrics.processingSamples", Value: d.procN})
	}
	for _, c := range slices.Sorted(maps.Keys(d.countries)) {
		inc = append(inc, bson.E{Key: "metrics.countryCounts." + c, Value: d.countries[c]})
	}
	for _, th := range slices.Sorted(maps.Keys(d.threats)) {
		inc = append(inc, bson.E{Key: "metrics.threatCounts." + th, Value: d.threats[th]})
	}
	// Addressed by its derived _id: any other filter makes the embedded FerretDB scan the
	// collection (store.UpsertByID).
	key := bson.D{{Key: "userId", Value: k.user}, {Key: "date", Value: k.day}}
	res := store.UpsertByID(ctx, coll, store.AnalyticsID(k.user, k.day), key, bson.D{{Key: "$inc", Value: inc}})
	if d.procN == 0 && len(d.countries) == 0 && len(d.threats) == 0 {
		if err := res.Err(); err != nil {
			return fmt.Errorf("analyses: analytics of %s %s: %w", k.tool, k.user.Hex(), err)
		}
		return nil
	}
	var after model.Analytics
	if err := res.Decode(&after); err != nil {
		return fmt.Errorf("analyses: analytics of %s %s: %w", k.tool, k.user.Hex(), err)
	}
	m := after.Metrics
	set := bson.D{
		{Key: "metrics.topCountries", Value: rank(m.CountryCounts, func(k string, n int64) model.CountItem { return model.CountItem{Country: k, Count: n} })},
		{Key: "metrics.topThreats", Value: rank(m.ThreatCounts, func(k string, n int64) model.CountItem { return model.CountItem{Type: k, Count: n} })},
	}
	if m.ProcessingSamples > 0 {
		set = append(set, bson.E{Key: "metrics.averageProcessingTime", Value: m.ProcessingTimeTotal / float64(m.ProcessingSamples)})
	}
	if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: after.ID}}, bson.D{{Key: "$set", Value: set}}); err != nil {
		return fmt.Errorf("analyses: analytics top lists of %s %s: %w", k.tool, k.user.Hex(), err)
	}
	return nil
}

// rank returns the topN counts, largest first (ties by name).
func rank(counts map[string]int64, item func(string, int64) model.CountItem) []model.CountItem {
	keys := slices.Collect(maps.Keys(counts))
	slices.SortFunc(keys, func(a, b string) int {
		if c := cmp.Compare(counts[b], counts[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	out := make([]model.CountItem, 0, min(len(keys), topN))
	for _, k := range keys[:min(len(keys), topN)] {
		out = append(out, item(k, counts[k]))
	}
	return out
}

// lockName is billing's lock on the analytics and rollup documents (billing/lock.go). Flush
// takes the same shared lock so that billing's $inc of aiUsage and ours of metrics never
// interleave on FerretDB, whose updates are read-modify-write of the whole document.
const lockName = store.RollupsLock
