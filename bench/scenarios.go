package bench

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/maula-ai/maula-chat/providers/mockllm"
)

// rig is what a streaming scenario runs against: the fake upstream, the relay, the server.
type rig struct {
	up     *upstream
	relay  *relay
	srv    *server
	tokens []string
	opts   mockllm.Options
}

func newRig(ctx context.Context, cfg Config, opts mockllm.Options, users int) (*rig, error) {
	up, err := startUpstream(opts)
	if err != nil {
		return nil, err
	}
	rel, err := startRelay(up.URL)
	if err != nil {
		up.close()
		return nil, err
	}
	srv, err := startServer(ctx, cfg, up.URL)
	if err != nil {
		rel.close()
		up.close()
		return nil, err
	}
	r := &rig{up: up, relay: rel, srv: srv, opts: opts}
	// Two streams per user: a realistic spread (money steps serialise per user) and well under
	// the per-user limit of running replies.
	for i := range max(users, 1) {
		tok, err := srv.register(fmt.Sprintf("bench%d@bench.example", i))
		if err != nil {
			r.close()
			return nil, err
		}
		r.tokens = append(r.tokens, tok)
	}
	return r, nil
}

func (r *rig) close() {
	r.srv.stop()
	r.relay.close()
	r.up.close()
}

func (r *rig) spec(t target, conc, per int, period, stall time.Duration) loadSpec {
	return loadSpec{target: t, conc: conc, perWorker: per, period: period, stall: stall,
		want: mockllm.Text(r.opts), wsURL: map[target]string{targetRelay: r.relay.URL,
			targetFull: "ws" + r.srv.URL[len("http"):] + "/ai/chat"}[t],
		upstream: r.up.URL, tokens: r.tokens}
}

// rounds runs fn for each target, interleaved, three times, and checks the results.
func rounds(ctx context.Context, rep *Report, r *rig, label string, targets []target, sp func(target) loadSpec) map[target][]*loadResult {
	out := map[target][]*loadResult{}
	for range 3 {
		for _, t := range targets {
			res := runLoad(ctx, sp(t))
			out[t] = append(out[t], res)
			if res.Errors > 0 || res.Lost > 0 {
				rep.Checks = append(rep.Checks, fmt.Sprintf("%s %s: %d errors (%s), %d replies with lost or changed text",
					label, t, res.Errors, res.FirstErr, res.Lost))
			}
		}
	}
	return out
}

func medianOf(rs []*loadResult, f func(*loadResult) float64) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = f(r)
	}
	return median(xs)
}

// checkOK records that the run's correctness checks passed, unless one already failed.
func checkOK(rep *Report, what string) {
	if len(rep.Checks) == 0 {
		rep.Checks = append(rep.Checks, what)
	}
}

func runTTFT(ctx context.Context, cfg Config, rep *Report) error {
	opts := mockllm.Options{Chunks: 16, ChunkSize: 8, Delay: 5 * time.Millisecond, ErrorAfter: -1, ResetAfter: -1, InputTokens: 50}
	levels, per := []int{1, 64, 256}, 20
	if cfg.Short {
		levels, per = []int{1, 16}, 4
	}
	if len(cfg.Streams) > 0 {
		levels = cfg.Streams
	}
	if cfg.PerWorker > 0 {
		per = cfg.PerWorker
	}
	r, err := newRig(ctx, cfg, opts, levels[len(levels)-1]/2+1)
	if err != nil {
		return err
	}
	defer r.close()
	period := 250 * time.Millisecond
	for _, conc := range levels {
		res := rounds(ctx, rep, r, fmt.Sprintf("ttft@%d", conc), []target{targetDirect, targetRelay, targetFull},
			func(t target) loadSpec { return r.spec(t, conc, per, period, 0) })
		for _, q := range []struct {
			name string
			q    float64
		}{{"p50", 0.5}, {"p99", 0.99}} {
			m := func(t target) float64 {
				return medianOf(res[t], func(lr *loadResult) float64 { return us(lr.TTFT.Quantile(q.q)) })
			}
			d, rl, f := m(targetDirect), m(targetRelay), m(targetFull)
			rep.Rows = append(rep.Rows,
				Row{Scenario: "ttft", Metric: fmt.Sprintf("time to first token %s @%d streams", q.name, conc), Value: f, Relay: rl, Direct: d, Unit: "µs"},
				Row{Scenario: "ttft", Metric: fmt.Sprintf("added TTFT %s @%d (full turn − direct; relay − direct)", q.name, conc), Value: f - d, Relay: rl - d, Direct: na, Unit: "µs",
					Note: "full turn: auth'd socket, context + history load, credit reserve"})
		}
	}
	addPhases(rep, r.srv)
	checkOK(rep, "every reply complete and exact, no errors")
	return nil
}

// addPhases reports the server's mean time in each phase of a turn over the whole run.
func addPhases(rep *Report, s *server) {
	ph := s.phaseMeans()
	for _, name := range []string{"rate", "prompt", "reserve", "first_token", "record", "settle"} {
		if d, ok := ph[name]; ok {
			rep.Rows = append(rep.Rows, Row{Scenario: rep.Scenario, Metric: "server: mean time in turn phase " + name,
				Value: us(d), Relay: na, Direct: na, Unit: "µs", Note: "from maula_chat_turn_phase_seconds"})
		}
	}
}

func runGap(ctx context.Context, cfg Config, rep *Report) error {
	opts := mockllm.Options{Chunks: 64, ChunkSize: 8, Delay: 20 * time.Millisecond, ErrorAfter: -1, ResetAfter: -1, InputTokens: 50}
	conc, per := 128, 2
	if cfg.Short {
		conc, per = 32, 1
	}
	if len(cfg.Streams) > 0 {
		conc = cfg.Streams[len(cfg.Streams)-1]
	}
	r, err := newRig(ctx, cfg, opts, conc/2+1)
	if err != nil {
		return err
	}
	defer r.close()
	res := rounds(ctx, rep, r, fmt.Sprintf("gap@%d", conc), []target{targetDirect, targetRelay, targetFull},
		func(t target) loadSpec { return r.spec(t, conc, per, 1500*time.Millisecond, 40*time.Millisecond) })
	for _, q := range []struct {
		name string
		q    float64
	}{{"p50", 0.5}, {"p99", 0.99}, {"max", 1}} {
		m := func(t target) float64 {
			return medianOf(res[t], func(lr *loadResult) float64 { return us(lr.Gaps.Quantile(q.q)) })
		}
		d, rl, f := m(targetDirect), m(targetRelay), m(targetFull)
		rep.Rows = append(rep.Rows,
			Row{Scenario: "gap", Metric: fmt.Sprintf("gap between tokens %s @%d streams (pace 20 ms)", q.name, conc), Value: f, Relay: rl, Direct: d, Unit: "µs"},
			Row{Scenario: "gap", Metric: fmt.Sprintf("added gap %s @%d (maula-chat − direct; relay − direct)", q.name, conc), Value: f - d, Relay: rl - d, Direct: na, Unit: "µs"})
	}
	checkOK(rep, "every reply complete and exact, no errors")
	return nil
}

func runCapacity(ctx context.Context, cfg Config, rep *Report) error {
	opts := mockllm.Options{Chunks: 64, ChunkSize: 8, Delay: 20 * time.Millisecond, ErrorAfter: -1, ResetAfter: -1, InputTokens: 50}
	levels := []int{128, 256, 512, 1024, 1536}
	if cfg.Short {
		levels = []int{16, 32, 64}
	}
	r, err := newRig(ctx, cfg, opts, levels[len(levels)-1]/2+1)
	if err != nil {
		return err
	}
	defer r.close()
	rep.Rounds = 1
	best := map[target]int{}
	fps := map[target]float64{}
	for _, t := range []target{targetRelay, targetFull} {
		for _, conc := range levels {
			res := runLoad(ctx, r.spec(t, conc, 1, time.Second, 40*time.Millisecond))
			ok := res.Stalls == 0 && res.Lost == 0 && res.Errors == 0
			rep.Checks = append(rep.Checks, fmt.Sprintf("%s @%d: %d stalls, %d lost, %d errors", t, conc, res.Stalls, res.Lost, res.Errors))
			if !ok {
				break
			}
			best[t] = conc
			fps[t] = float64(res.Deltas) / res.Elapsed.Seconds() / float64(runtime.NumCPU())
		}
	}
	rep.Rows = append(rep.Rows,
		Row{Scenario: "capacity", Metric: "most concurrent streams with no stall (gap > 40 ms) and no lost text, recording on", Value: float64(best[targetFull]), Relay: float64(best[targetRelay]), Direct: na, Unit: "streams",
			Note: fmt.Sprintf("levels tried: %v", levels)},
		Row{Scenario: "capacity", Metric: "delta frames per second per core at that level", Value: fps[targetFull], Relay: fps[targetRelay], Direct: na, Unit: "frames/s/core"})
	return nil
}

func runIdle(ctx context.Context, cfg Config, rep *Report) error {
	n := 20000
	if cfg.Short {
		n = 1000
	}
	up, err := startUpstream(mockllm.Options{})
	if err != nil {
		return err
	}
	defer up.close()
	srv, err := startServer(ctx, cfg, up.URL)
	if err != nil {
		return err
	}
	defer srv.stop()
	var tokens []string
	for i := range 8 {
		tok, err := srv.register(fmt.Sprintf("idle%d@bench.example", i))
		if err != nil {
			return err
		}
		tokens = append(tokens, tok)
	}
	rep.Rounds = 1
	time.Sleep(500 * time.Millisecond) // let start-up work settle before the baseline
	rss0, heap0 := srv.rss(), srv.heapInuse()
	conns := make([]interface{ Close() error }, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		ws, err := dial(ctx, "ws"+srv.URL[len("http"):]+"/ai/chat", tokens[i%len(tokens)], i, 32)
		if err != nil {
			rep.Checks = append(rep.Checks, fmt.Sprintf("opened %d of %d connections: %v", i, n, err))
			break
		}
		conns = append(conns, ws)
	}
	got := len(conns)
	time.Sleep(time.Second)
	rss1, heap1 := srv.rss(), srv.heapInuse()
	cpu0 := srv.cpuTime()
	time.Sleep(5 * time.Second)
	cpu1 := srv.cpuTime()
	rep.Rows = append(rep.Rows,
		Row{Scenario: "idle", Metric: fmt.Sprintf("RSS per idle authenticated connection (%d open)", got), Value: float64(rss1-rss0) / float64(max(got, 1)) / 1024, Relay: na, Direct: na, Unit: "KiB"},
		Row{Scenario: "idle", Metric: "Go heap in use per idle connection", Value: float64(heap1-heap0) / float64(max(got, 1)) / 1024, Relay: na, Direct: na, Unit: "KiB"},
		Row{Scenario: "idle", Metric: "CPU at rest with them open", Value: 100 * (cpu1 - cpu0).Seconds() / 5 / float64(runtime.NumCPU()), Relay: na, Direct: na, Unit: "% of the machine"})
	return nil
}

func runRecord(ctx context.Context, cfg Config, rep *Report) error {
	opts := mockllm.Options{Chunks: 2, ChunkSize: 8, ErrorAfter: -1, ResetAfter: -1, InputTokens: 50}
	conc, per := 64, 40
	if cfg.Short {
		conc, per = 16, 5
	}
	r, err := newRig(ctx, cfg, opts, conc/2+1)
	if err != nil {
		return err
	}
	defer r.close()
	res := rounds(ctx, rep, r, "record", []target{targetRelay, targetFull},
		func(t target) loadSpec { return r.spec(t, conc, per, 0, 0) })
	rate := func(t target) float64 {
		return medianOf(res[t], func(lr *loadResult) float64 { return float64(lr.Requests-lr.Errors) / lr.Elapsed.Seconds() })
	}
	rep.Rows = append(rep.Rows, Row{Scenario: "record", Metric: "turns per second, each stored (2 messages) and settled before chat.done", Value: rate(targetFull), Relay: rate(targetRelay), Direct: na, Unit: "turns/s",
		Note: fmt.Sprintf("%d concurrent clients, 2-chunk replies; the relay stores nothing", conc)})
	checkOK(rep, "every reply complete and exact, no errors")
	return nil
}
