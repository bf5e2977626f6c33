package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/maula-ai/maula-chat/billing"
	"github.com/maula-ai/maula-chat/providers"
	"github.com/maula-ai/maula-chat/providers/mockllm"
	"github.com/maula-ai/maula-chat/tools"
)

// The admin scenario: GET /admin/costs over 30 days of rollups equivalent to N recorded turns
// (1,000,000; 100,000 in the short run) spread over the 50 tools, the priced models of the
// five providers and 10,000 users. The rollup documents are written straight into the
// server's embedded store (exposed with MAULA_MONGO_LISTEN) in the schema billing writes
// (billing/rollup.go: four levels, _id = the key fields joined by '|'), then every groupBy is
// requested repeatedly, three interleaved rounds, and each answer's rows and totals are checked
// against the seeded sums, to the micro-dollar. Last, the server is stopped (SIGTERM) and
// started again over the same data directory, and the first report of each groupBy is measured
// once more: what a restarted process pays, now that closed days' views are persisted
// (billing/report_persist.go), against the scan the first reports after the seed pay.

const adminEmail = "admin@bench.example"

// adminUsers is how many users the seeded turns are spread over (skewed: a few heavy users).
const adminUsers = 10_000

// costCounts are a rollup's sums, in billing's field order.
type costCounts [8]int64

var costFields = [8]string{"requests", "messages", "input", "output", "cacheRead", "cacheWrite", "reasoning", "costMicros"}

func (c *costCounts) add(o *costCounts) {
	for i := range c {
		c[i] += o[i]
	}
}

func rowCounts(r *billing.CostRow) costCounts {
	return costCounts{r.Requests, r.Messages, r.Input, r.Output, r.CacheRead, r.CacheWrite, r.Reasoning, r.CostMicros}
}

func rowKey(r *billing.CostRow, groupBy []string) string {
	var k []string
	for _, d := range groupBy {
		k = append(k, map[string]string{"provider": r.Provider, "model": r.Model, "tool": r.Tool, "user": r.User, "day": r.Day}[d])
	}
	return strings.Join(k, "|")
}

// seeded is what the seed wrote: the grand total and the sums of each measured grouping.
type seeded struct {
	total  costCounts
	groups map[string]map[string]*costCounts // groupBy ("tool,day") → key → sums
	docs   [4]int                            // documents per level: full, tool, model, user
	from   string
	to     string
}

// adminGroupings are the groupBy values measured, with their targets.
var adminGroupings = []struct {
	groupBy string
	limit   int
	target  time.Duration
}{
	{"provider", 0, 300 * time.Millisecond},
	{"model", 0, 300 * time.Millisecond},
	{"tool", 0, 300 * time.Millisecond},
	{"day", 0, 300 * time.Millisecond},
	{"user", 100, time.Second},
	{"tool,day", 0, 300 * time.Millisecond},
}

func runAdmin(ctx context.Context, cfg Config, rep *Report) error {
	turns, per := 1_000_000, 20
	if cfg.Short {
		turns, per = 100_000, 10
	}
	if cfg.AdminTurns > 0 {
		turns = cfg.AdminTurns
	}
	up, err := startUpstream(mockllm.Options{})
	if err != nil {
		return err
	}
	defer up.close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mongoAddr := ln.Addr().String()
	ln.Close()
	env := []string{"MAULA_ADMIN_EMAILS=" + adminEmail, "MAULA_MONGO_LISTEN=" + mongoAddr}
	srv, err := startServer(ctx, cfg, up.URL, env...)
	if err != nil {
		return err
	}
	defer srv.stop()
	token, err := srv.register(adminEmail)
	if err != nil {
		return err
	}
	client, err := mongo.Connect(options.Client().ApplyURI("mongodb://" + mongoAddr + "/"))
	if err != nil {
		return err
	}
	defer client.Disconnect(context.Background())
	st := time.Now()
	seed, err := seedCosts(ctx, client.Database("maula-auth-db"), turns, time.Now().UTC())
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	fmt.Fprintf(cfg.Out, "seeded %d turns as %v rollup documents (full, tool, model, user) in %v\n", turns, seed.docs, time.Since(st).Round(time.Second))
	scale := fmt.Sprintf("30 closed days, %d turns, %d tools, %d users", turns, len(tools.Default().All()), adminUsers)

	hc := &http.Client{Timeout: 10 * time.Minute}
	get := func(groupBy string, limit int, fresh bool) (time.Duration, *costAnswer, error) {
		q := url.Values{"from": {seed.from}, "to": {seed.to}, "groupBy": {groupBy}}
		if limit > 0 {
			q.Set("limit", fmt.Sprint(limit))
		}
		if fresh {
			q.Set("fresh", "1")
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/admin/costs?"+q.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		start := time.Now()
		resp, err := hc.Do(req)
		if err != nil {
			return 0, nil, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if err != nil {
			return 0, nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, nil, fmt.Errorf("%s: %d %s", groupBy, resp.StatusCode, body)
		}
		var a costAnswer
		if err := json.Unmarshal(body, &a); err != nil {
			return 0, nil, err
		}
		a.read = resp.Header.Get("X-Cost-Read")
		return took, &a, nil
	}
	var failures []string
	check := func(groupBy string, limit int, a *costAnswer) {
		if msg := seed.check(groupBy, limit, a); msg != "" && len(failures) < 10 {
			failures = append(failures, msg)
		}
	}

	// The first request of each grouping after the seed builds its level's day views: one scan.
	reads := map[string]string{}
	firstAt := len(rep.Rows)
	firstTook := map[string]time.Duration{}
	for _, g := range adminGroupings {
		took, a, err := get(g.groupBy, g.limit, false)
		if err != nil {
			return err
		}
		check(g.groupBy, g.limit, a)
		firstTook[g.groupBy] = took
		rep.Rows = append(rep.Rows, Row{Scenario: "admin", Metric: fmt.Sprintf("GET /admin/costs groupBy=%s, first request after the seed", g.groupBy),
			Value: ms(took), Relay: na, Direct: na, Unit: "ms", Note: "read " + a.read})
	}
	lat := map[string][]*Hist{}
	for range 3 {
		for _, g := range adminGroupings {
			h := &Hist{}
			for range per {
				took, a, err := get(g.groupBy, g.limit, false)
				if err != nil {
					return err
				}
				h.Add(took)
				check(g.groupBy, g.limit, a)
				reads[g.groupBy] = a.read
			}
			lat[g.groupBy] = append(lat[g.groupBy], h)
		}
	}
	for _, g := range adminGroupings {
		what := g.groupBy
		if g.limit > 0 {
			what = fmt.Sprintf("%s (top %d)", g.groupBy, g.limit)
		}
		for _, q := range []struct {
			name string
			q    float64
		}{{"p50", 0.5}, {"p99", 0.99}} {
			xs := make([]float64, 0, 3)
			for _, h := range lat[g.groupBy] {
				xs = append(xs, ms(h.Quantile(q.q)))
			}
			rep.Rows = append(rep.Rows, Row{Scenario: "admin", Metric: fmt.Sprintf("GET /admin/costs groupBy=%s %s (%s)", what, q.name, scale),
				Value: median(xs), Relay: na, Direct: na, Unit: "ms", Note: fmt.Sprintf("target < %v; read %s", g.target, reads[g.groupBy])})
		}
	}
	// fresh=1: every day's model level read again by _id, as each closed day is every few minutes.
	h := &Hist{}
	var freshRead string
	for range min(per, 5) {
		took, a, err := get("tool", 0, true)
		if err != nil {
			return err
		}
		h.Add(took)
		check("tool", 0, a)
		freshRead = a.read
	}
	rep.Rows = append(rep.Rows, Row{Scenario: "admin", Metric: "GET /admin/costs groupBy=tool&fresh=1 p50 (every day re-checked by _id)",
		Value: ms(h.Quantile(0.5)), Relay: na, Direct: na, Unit: "ms", Note: "read " + freshRead})
	// One user's usage (the heaviest user): three reports, read by _id from the user level.
	heavy := seed.heaviest()
	uh := &Hist{}
	var usageRead string
	for range per {
		took, total, read, err := userUsage(ctx, hc, srv.URL, token, heavy, seed.from, seed.to)
		if err != nil {
			return err
		}
		uh.Add(took)
		usageRead = read
		if want := seed.groups["user"][heavy]; want == nil || total != *want {
			if len(failures) < 10 {
				failures = append(failures, fmt.Sprintf("usage of %s: totals %v, seeded %v", heavy, total, want))
			}
		}
	}
	rep.Rows = append(rep.Rows, Row{Scenario: "admin", Metric: fmt.Sprintf("GET /admin/users/{id}/usage p50 (the heaviest user, by day, model and tool; %s)", scale),
		Value: ms(uh.Quantile(0.5)), Relay: na, Direct: na, Unit: "ms", Note: "read " + usageRead})
	for l, name := range []string{"cost_rollups", "cost_rollups_tool", "cost_rollups_model", "cost_rollups_user"} {
		rep.Rows = append(rep.Rows, Row{Scenario: "admin", Metric: "rollup documents seeded in " + name, Value: float64(seed.docs[l]),
			Relay: na, Direct: na, Unit: "docs", Note: scale})
	}
	if len(failures) > 0 {
		rep.Checks = append(rep.Checks, failures...)
	} else {
		rep.Checks = append(rep.Checks, fmt.Sprintf("every answer's rows and totals equal the seeded sums exactly (total %d µ$ over %d requests, %s to %s)",
			seed.total[7], seed.total[0], seed.from, seed.to))
	}

	// A restart: the same data, an empty memory. Each grouping's first report, in the order of
	// those after the seed (so a grouping whose level an earlier one read is answered from
	// memory, as it was then), reads the closed days' summaries by _id instead of scanning.
	summaries, err := client.Database("maula-auth-db").Collection("cost_report_days").CountDocuments(ctx, bson.D{})
	if err != nil {
		return fmt.Errorf("count day summaries: %w", err)
	}
	// The bench's own connection to the embedded store goes first: held open, it keeps the
	// server's stop waiting ~3 s more (measured: stop 3.3 s with it, 0.4 s without).
	_ = client.Disconnect(ctx)
	stopTook, startTook, stopErr, err := srv.restart(ctx, cfg, up.URL, env...)
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	if stopErr != nil {
		rep.Checks = append(rep.Checks, fmt.Sprintf("the server did not stop cleanly on SIGTERM: %v", stopErr))
	}
	rep.Rows = append(rep.Rows,
		Row{Scenario: "admin", Metric: "day summaries in cost_report_days before the restart", Value: float64(summaries),
			Relay: na, Direct: na, Unit: "docs", Note: "levels model, tool, user × 30 closed days"},
		Row{Scenario: "admin", Metric: "server restart over the same data dir (SIGTERM to exit, then start to listening)", Value: ms(stopTook + startTook),
			Relay: na, Direct: na, Unit: "ms", Note: fmt.Sprintf("stop %v, start %v", stopTook.Round(time.Millisecond), startTook.Round(time.Millisecond))})
	var after []Row
	failures = nil
	var scanned []string
	for _, g := range adminGroupings {
		took, a, err := get(g.groupBy, g.limit, false)
		if err != nil {
			return fmt.Errorf("after the restart: %w", err)
		}
		check(g.groupBy, g.limit, a)
		if !strings.Contains(a.read, " scans=0 ") {
			scanned = append(scanned, fmt.Sprintf("groupBy=%s (read %s)", g.groupBy, a.read))
		}
		after = append(after, Row{Scenario: "admin", Metric: "GET /admin/costs first report after a restart, groupBy=" + g.groupBy,
			Value: ms(took), Relay: na, Direct: na, Unit: "ms",
			Note: fmt.Sprintf("read %s; after the seed %s ms", a.read, num(ms(firstTook[g.groupBy])))})
	}
	// Each after-restart row next to its after-the-seed row.
	rows := append([]Row(nil), rep.Rows[:firstAt]...)
	for i := range adminGroupings {
		rows = append(rows, rep.Rows[firstAt+i], after[i])
	}
	rep.Rows = append(rows, rep.Rows[firstAt+len(adminGroupings):]...)
	if len(failures) > 0 {
		for _, f := range failures {
			rep.Checks = append(rep.Checks, "after the restart: "+f)
		}
	} else {
		rep.Checks = append(rep.Checks, "after a restart over the same data, every grouping's first report equals the seeded sums exactly")
	}
	if len(scanned) > 0 {
		rep.Checks = append(rep.Checks, "after the restart these first reports still scanned a level: "+strings.Join(scanned, ", "))
	} else {
		rep.Checks = append(rep.Checks, "after the restart no first report scanned a level (closed days read from cost_report_days)")
	}
	return nil
}

// restart stops s gracefully (SIGTERM, then waits for the process to exit) and starts the
// server again over the same data directory, with the same environment (env: what s was
// started with beyond startServer's own). It returns how long the stop and the start took, and
// how the old process exited (nil: status 0). s keeps its directory, which its final stop
// removes. startServer makes a directory of its own; MAULA_DATA_DIR and MAULA_PLANS given last
// override its choice (os/exec: of duplicate keys the last wins), so that directory, holding
// only a copy of the plans, is removed at once.
func (s *server) restart(ctx context.Context, cfg Config, upstreamURL string, env ...string) (stopTook, startTook time.Duration, exitErr, err error) {
	st := time.Now()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, 0, nil, err
	}
	select {
	case exitErr = <-s.done:
	case <-time.After(60 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		exitErr = fmt.Errorf("not exited 60 s after SIGTERM: killed")
	}
	stopTook = time.Since(st)
	st = time.Now()
	env = append(env[:len(env):len(env)], "MAULA_DATA_DIR="+filepath.Join(s.dir, "data"), "MAULA_PLANS="+filepath.Join(s.dir, "plans.json"))
	n, err := startServer(ctx, cfg, upstreamURL, env...)
	if err != nil {
		return stopTook, 0, exitErr, err
	}
	startTook = time.Since(st)
	os.RemoveAll(n.dir)
	s.URL, s.cmd, s.done = n.URL, n.cmd, n.done
	return stopTook, startTook, exitErr, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// costAnswer is the JSON answer of /admin/costs.
type costAnswer struct {
	Rows   []billing.CostRow `json:"rows"`
	Totals billing.CostRow   `json:"totals"`
	read   string
}

// check compares an answer with the seeded sums; "" when they agree. With a limit, the rows
// must be the top ones by cost.
func (s *seeded) check(groupBy string, limit int, a *costAnswer) string {
	if got := rowCounts(&a.Totals); got != s.total {
		return fmt.Sprintf("groupBy=%s: totals %v, seeded %v", groupBy, got, s.total)
	}
	want := s.groups[groupBy]
	gb := strings.Split(groupBy, ",")
	if n := len(want); len(a.Rows) != n && (limit == 0 || len(a.Rows) != min(limit, n)) {
		return fmt.Sprintf("groupBy=%s: %d rows, seeded %d (limit %d)", groupBy, len(a.Rows), n, limit)
	}
	seen := map[string]bool{}
	var lowest int64 = -1
	for _, r := range a.Rows {
		k := rowKey(&r, gb)
		w := want[k]
		if w == nil || rowCounts(&r) != *w || r.CostUSD != float64(w[7])/1e6 {
			return fmt.Sprintf("groupBy=%s: row %s = %v, seeded %v", groupBy, k, rowCounts(&r), w)
		}
		seen[k] = true
		if lowest < 0 || r.CostMicros < lowest {
			lowest = r.CostMicros
		}
	}
	if limit > 0 { // the top rows: nothing left out costs more than the cheapest listed
		for k, w := range want {
			if !seen[k] && w[7] > lowest {
				return fmt.Sprintf("groupBy=%s: %s (%d µ$) missing from the top %d", groupBy, k, w[7], len(a.Rows))
			}
		}
	}
	return ""
}

// seedCosts writes the rollups of turns recorded over the 30 days before now's day.
func seedCosts(ctx context.Context, db *mongo.Database, turns int, now time.Time) (*seeded, error) {
	prices := providers.DefaultPrices()
	var pairs []billing.ProviderModel
	for _, pm := range billing.PricedModels(prices) {
		if pm.Provider != "echo" {
			pairs = append(pairs, pm)
		}
	}
	var toolIDs []string
	for _, t := range tools.Default().All() {
		toolIDs = append(toolIDs, t.ID)
	}
	users := make([]bson.ObjectID, adminUsers)
	for i := range users {
		users[i] = bson.NewObjectID()
	}
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	first := today.AddDate(0, 0, -30)
	s := &seeded{groups: map[string]map[string]*costCounts{}, from: first.Format(time.DateOnly), to: today.AddDate(0, 0, -1).Format(time.DateOnly)}
	for _, g := range adminGroupings {
		s.groups[g.groupBy] = map[string]*costCounts{}
	}
	group := func(groupBy, key string, c *costCounts) {
		m := s.groups[groupBy]
		if m[key] == nil {
			m[key] = &costCounts{}
		}
		m[key].add(c)
	}
	colls := [4]*mongo.Collection{db.Collection("cost_rollups"), db.Collection("cost_rollups_tool"), db.Collection("cost_rollups_model"), db.Collection("cost_rollups_user")}
	r := rand.New(rand.NewPCG(9, uint64(turns)))
	for d := range 30 {
		day := first.AddDate(0, 0, d)
		dayS := day.Format(time.DateOnly)
		type fullKey struct {
			pair, tool int
			user       int
		}
		full, tool, mdl, usr := map[fullKey]*costCounts{}, map[[2]int]*costCounts{}, map[int]*costCounts{}, map[int]*costCounts{}
		inc := func(c *costCounts, n *costCounts) *costCounts {
			if c == nil {
				c = &costCounts{}
			}
			c.add(n)
			return c
		}
		n := turns / 30
		if d < turns%30 {
			n++
		}
		for range n {
			p, t := r.IntN(len(pairs)), r.IntN(len(toolIDs))
			x := r.Float64()
			u := int(x * x * adminUsers) // skewed: the first users are the heaviest
			c := costCounts{1}
			if r.IntN(20) != 0 { // one turn in 20 failed before its first token: a request, nothing else
				// Cache reads in half the turns, cache writes in a quarter, reasoning in a third.
				use := providers.Usage{Input: r.Int64N(8000), Output: 1 + r.Int64N(2000), CacheRead: r.Int64N(2) * r.Int64N(20_000), CacheWrite: r.Int64N(4) / 3 * r.Int64N(5_000)}
				use.Reasoning = r.Int64N(3) / 2 * r.Int64N(use.Output+1)
				cost, err := prices.Cost(pairs[p].Provider, pairs[p].Model, use, day.Add(time.Duration(r.IntN(86400))*time.Second))
				if err != nil {
					return nil, err
				}
				c = costCounts{1, 1, use.Input, use.Output, use.CacheRead, use.CacheWrite, use.Reasoning, cost.Micros}
			}
			full[fullKey{p, t, u}] = inc(full[fullKey{p, t, u}], &c)
			tool[[2]int{p, t}] = inc(tool[[2]int{p, t}], &c)
			mdl[p] = inc(mdl[p], &c)
			usr[u] = inc(usr[u], &c)
			s.total.add(&c)
			// Every measured grouping, keyed as the check keys an answer's rows (rowKey).
			row := billing.CostRow{Provider: pairs[p].Provider, Model: pairs[p].Model, Tool: toolIDs[t], Day: dayS, User: users[u].Hex()}
			for _, g := range adminGroupings {
				group(g.groupBy, rowKey(&row, strings.Split(g.groupBy, ",")), &c)
			}
		}
		var docs [4][]any
		for k, c := range full {
			p := pairs[k.pair]
			docs[0] = append(docs[0], rollupDoc(c, "day", dayS, "provider", p.Provider, "model", p.Model, "tool", toolIDs[k.tool], "userId", users[k.user]))
		}
		for k, c := range tool {
			p := pairs[k[0]]
			docs[1] = append(docs[1], rollupDoc(c, "day", dayS, "provider", p.Provider, "model", p.Model, "tool", toolIDs[k[1]]))
		}
		for k, c := range mdl {
			docs[2] = append(docs[2], rollupDoc(c, "day", dayS, "provider", pairs[k].Provider, "model", pairs[k].Model))
		}
		// A user's day also carries its split by provider, model and tool (billing/userusage.go).
		by := map[int]bson.D{}
		for k, c := range full {
			p := pairs[k.pair]
			by[k.user] = append(by[k.user], bson.E{Key: billing.BreakdownKey(p.Provider, p.Model, toolIDs[k.tool]), Value: countsDoc(c)})
		}
		for k, c := range usr {
			docs[3] = append(docs[3], append(rollupDoc(c, "day", dayS, "userId", users[k]), bson.E{Key: "by", Value: by[k]}))
		}
		for l := range docs {
			s.docs[l] += len(docs[l])
			for i := 0; i < len(docs[l]); i += 2000 {
				if _, err := colls[l].InsertMany(ctx, docs[l][i:min(i+2000, len(docs[l]))]); err != nil {
					return nil, err
				}
			}
		}
	}
	return s, nil
}

// countsDoc is the sums as a document, in billing's field names.
func countsDoc(c *costCounts) bson.D {
	d := make(bson.D, len(costFields))
	for i, f := range costFields {
		d[i] = bson.E{Key: f, Value: c[i]}
	}
	return d
}

// rollupDoc is a rollup document as billing writes it: _id = the key values joined by '|' (a
// user as hex), the key fields, then the sums. kv alternates field names and values.
func rollupDoc(c *costCounts, kv ...any) bson.D {
	d := bson.D{{Key: "_id"}}
	for i := 0; i < len(kv); i += 2 {
		d = append(d, bson.E{Key: kv[i].(string), Value: kv[i+1]})
	}
	d[0].Value = billing.RollupID(d[1:])
	return append(d, countsDoc(c)...)
}

// heaviest is the user with the highest seeded cost (hex id).
func (s *seeded) heaviest() string {
	best, cost := "", int64(-1)
	for k, c := range s.groups["user"] {
		if c[7] > cost || c[7] == cost && k < best {
			best, cost = k, c[7]
		}
	}
	return best
}

// userUsage GETs /admin/users/{id}/usage and returns how long it took, the totals of its byTool
// report (each of its three reports has the user's totals) and the collection it was read from
// (cost_rollups_user: by _id; cost_rollups: a scan).
func userUsage(ctx context.Context, hc *http.Client, base, token, user, from, to string) (time.Duration, costCounts, string, error) {
	q := url.Values{"from": {from}, "to": {to}}
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/admin/users/"+user+"/usage?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, costCounts{}, "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		return 0, costCounts{}, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, costCounts{}, "", fmt.Errorf("usage of %s: %d %s", user, resp.StatusCode, body)
	}
	type report struct {
		Source string          `json:"source"`
		Totals billing.CostRow `json:"totals"`
	}
	var u struct {
		ByDay, ByModel, ByTool *report
	}
	if err := json.Unmarshal(body, &u); err != nil {
		return 0, costCounts{}, "", err
	}
	if u.ByDay == nil || u.ByModel == nil || u.ByTool == nil {
		return 0, costCounts{}, "", fmt.Errorf("usage of %s: a report is missing: %s", user, body)
	}
	t := rowCounts(&u.ByTool.Totals)
	if rowCounts(&u.ByDay.Totals) != t || rowCounts(&u.ByModel.Totals) != t {
		return 0, costCounts{}, "", fmt.Errorf("usage of %s: the three reports' totals differ", user)
	}
	return took, t, "from " + u.ByTool.Source, nil
}
