package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/maula-ai/maula-chat/providers/mockllm"
)

// rig is what a streaming scenario runs against: the fake upstream, the relay, the server.
type rig struct {
	up     *upstream
	relay  *relay
	srv    *server
	tokens []string
	opts   mockllm.Options
	// serverOnly: the upstream and relay belong to another rig (withServer).
	serverOnly bool
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
	if r.tokens, err = registerUsers(srv, users); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// registerUsers registers n bench users on srv and returns their session tokens. Scenarios
// run two streams per user: a realistic spread (money steps serialise per user) and well under
// the per-user limit of running replies.
func registerUsers(srv *server, n int) ([]string, error) {
	var tokens []string
	for i := range max(n, 1) {
		tok, err := srv.register(fmt.Sprintf("bench%d@bench.example", i))
		if err != nil {
			return nil, err
		}
		tokens = append(tokens, tok)
	}
	return tokens, nil
}

// withServer is r with another server on the same fake upstream and relay, started with
// extra environment (e.g. MAULA_RECORDING=off). Closing it stops only that server.
func (r *rig) withServer(ctx context.Context, cfg Config, users int, env ...string) (*rig, error) {
	srv, err := startServer(ctx, cfg, r.up.URL, env...)
	if err != nil {
		return nil, err
	}
	tokens, err := registerUsers(srv, users)
	if err != nil {
		srv.stop()
		return nil, err
	}
	return &rig{up: r.up, relay: r.relay, srv: srv, opts: r.opts, tokens: tokens, serverOnly: true}, nil
}

func (r *rig) close() {
	r.srv.stop()
	if r.serverOnly {
		return
	}
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
	users := levels[len(levels)-1]/2 + 1
	r, err := newRig(ctx, cfg, opts, users)
	if err != nil {
		return err
	}
	defer r.close()
	// The same turns on a server that records nothing (MAULA_RECORDING=off): what the chat
	// path adds apart from the store's write throughput, which every turn of the other server
	// also needs (each worker asks for a turn every period: conc/period recorded turns a
	// second, beyond the store's throughput at 64 streams, where TTFT then measures the queue).
	off, err := r.withServer(ctx, cfg, users, "MAULA_RECORDING=off")
	if err != nil {
		return err
	}
	defer off.close()
	period := 250 * time.Millisecond
	for _, conc := range levels {
		label := fmt.Sprintf("ttft@%d", conc)
		res := rounds(ctx, rep, r, label, []target{targetDirect, targetRelay, targetFull},
			func(t target) loadSpec { return r.spec(t, conc, per, period, 0) })
		// Its own direct floor, interleaved with it like every other figure's.
		resOff := rounds(ctx, rep, off, label+" recording off", []target{targetDirect, targetFull},
			func(t target) loadSpec { return off.spec(t, conc, per, period, 0) })
		for _, q := range []struct {
			name string
			q    float64
		}{{"p50", 0.5}, {"p99", 0.99}} {
			quant := func(lr *loadResult) float64 { return us(lr.TTFT.Quantile(q.q)) }
			m := func(t target) float64 { return medianOf(res[t], quant) }
			d, rl, f := m(targetDirect), m(targetRelay), m(targetFull)
			dOff, fOff := medianOf(resOff[targetDirect], quant), medianOf(resOff[targetFull], quant)
			rep.Rows = append(rep.Rows,
				Row{Scenario: "ttft", Metric: fmt.Sprintf("time to first token %s @%d streams", q.name, conc), Value: f, Relay: rl, Direct: d, Unit: "µs"},
				Row{Scenario: "ttft", Metric: fmt.Sprintf("added TTFT %s @%d (full turn − direct; relay − direct)", q.name, conc), Value: f - d, Relay: rl - d, Direct: na, Unit: "µs",
					Note: fmt.Sprintf("full turn: auth'd socket, context + history load, credit reserve; %.0f recorded turns/s asked", float64(conc)/period.Seconds())},
				Row{Scenario: "ttft", Metric: fmt.Sprintf("added TTFT %s @%d, recording off (full turn − direct)", q.name, conc), Value: fOff - dOff, Relay: na, Direct: na, Unit: "µs",
					Note: "MAULA_RECORDING=off: the chat path without the store's writes"})
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
	levels := []int{64, 128, 256, 512, 1024, 1536}
	if cfg.Short {
		levels = []int{8, 16, 32, 64}
	}
	users := levels[len(levels)-1]/2 + 1
	r, err := newRig(ctx, cfg, opts, users)
	if err != nil {
		return err
	}
	defer r.close()
	rep.Rounds = 1
	// climb raises the concurrency level by level until a stream stalls (a gap over twice the
	// pace), loses text or fails; it returns the last clean level and its frame rate per core.
	climb := func(r *rig, t target, label string) (int, float64) {
		best, fps := 0, 0.0
		for _, conc := range levels {
			res := runLoad(ctx, r.spec(t, conc, 1, time.Second, 40*time.Millisecond))
			rep.Checks = append(rep.Checks, fmt.Sprintf("%s @%d: %d stalls, %d lost, %d errors", label, conc, res.Stalls, res.Lost, res.Errors))
			if res.Stalls != 0 || res.Lost != 0 || res.Errors != 0 {
				break
			}
			best, fps = conc, float64(res.Deltas)/res.Elapsed.Seconds()/float64(runtime.NumCPU())
		}
		return best, fps
	}
	relayBest, relayFPS := climb(r, targetRelay, "relay")
	onBest, onFPS := climb(r, targetFull, "maula-chat, recording on")
	off, err := r.withServer(ctx, cfg, users, "MAULA_RECORDING=off")
	if err != nil {
		return err
	}
	offBest, _ := climb(off, targetFull, "maula-chat, recording off")
	off.close()
	ratio := na
	if offBest > 0 {
		ratio = float64(onBest) / float64(offBest)
	}
	rep.Rows = append(rep.Rows,
		Row{Scenario: "capacity", Metric: "most concurrent streams with no stall (gap > 40 ms) and no lost text, recording on", Value: float64(onBest), Relay: float64(relayBest), Direct: na, Unit: "streams",
			Note: fmt.Sprintf("levels tried: %v", levels)},
		Row{Scenario: "capacity", Metric: "delta frames per second per core at that level", Value: onFPS, Relay: relayFPS, Direct: na, Unit: "frames/s/core"},
		Row{Scenario: "capacity", Metric: "most concurrent streams, recording off (MAULA_RECORDING=off)", Value: float64(offBest), Relay: float64(relayBest), Direct: na, Unit: "streams"},
		Row{Scenario: "capacity", Metric: "capacity with recording on / off", Value: ratio, Relay: na, Direct: na, Unit: "ratio", Note: "target ≥ 0.8; a level is the limit of the measure"})
	return nil
}

func runIdle(ctx context.Context, cfg Config, rep *Report) error {
	n := 20000
	if cfg.Short {
		n = 1000
	}
	if len(cfg.Streams) > 0 {
		n = cfg.Streams[len(cfg.Streams)-1] // --streams N: N idle connections
	}
	// The server and this process each hold one descriptor per connection, under the same
	// open-file limit: past it the run would measure failed dials.
	if lim := openFileLimit(); lim > 0 && n > lim-idleSpareFDs {
		rep.Checks = append(rep.Checks, fmt.Sprintf("%d connections asked; %d at most under the open-file limit (ulimit -n) of %d", n, lim-idleSpareFDs, lim))
		n = lim - idleSpareFDs
	}
	up, err := startUpstream(mockllm.Options{})
	if err != nil {
		return err
	}
	defer up.close()
	// An admin may ask /debug/pprof/heap?gc=1, which collects garbage first: the live heap.
	const admin = "idle-admin@bench.example"
	srv, err := startServer(ctx, cfg, up.URL, "MAULA_PPROF=true", "MAULA_ADMIN_EMAILS="+admin)
	if err != nil {
		return err
	}
	defer srv.stop()
	adminTok, err := srv.register(admin)
	if err != nil {
		return err
	}
	tokens, err := registerUsers(srv, 8)
	if err != nil {
		return err
	}
	rep.Rounds = 1
	time.Sleep(500 * time.Millisecond) // let start-up work settle before the baseline
	heap0, gor0 := idleProbe(srv, adminTok, rep)
	rss0 := srv.rss()
	start := time.Now()
	conns, err := openIdle(ctx, "ws"+srv.URL[len("http"):]+"/ai/chat", tokens, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	got := len(conns)
	if err != nil {
		rep.Checks = append(rep.Checks, fmt.Sprintf("opened %d of %d connections: %v", got, n, err))
	}
	if took := time.Since(start); took > 45*time.Second {
		// They never answer pings: the server ends them 60 s after they opened.
		rep.Checks = append(rep.Checks, fmt.Sprintf("opening took %.0f s: the first ones near the 60 s pong timeout", took.Seconds()))
	}
	time.Sleep(time.Second)
	rss1 := srv.rss() // with the garbage of the handshakes: what the process really holds
	cpu0 := srv.cpuTime()
	time.Sleep(5 * time.Second)
	cpu1 := srv.cpuTime()
	heap1, gor1 := idleProbe(srv, adminTok, rep)
	per := func(d float64) float64 { return d / float64(max(got, 1)) }
	rep.Rows = append(rep.Rows,
		Row{Scenario: "idle", Metric: fmt.Sprintf("RSS per idle authenticated connection (%d open)", got), Value: per(float64(rss1-rss0)) / 1024, Relay: na, Direct: na, Unit: "KiB"},
		Row{Scenario: "idle", Metric: "Go heap in use per idle connection", Value: per(float64(heap1-heap0)) / 1024, Relay: na, Direct: na, Unit: "KiB",
			Note: "live: after a forced GC (/debug/pprof/heap?gc=1)"},
		Row{Scenario: "idle", Metric: "server goroutines per idle connection", Value: per(float64(gor1 - gor0)), Relay: na, Direct: na, Unit: "goroutines"},
		Row{Scenario: "idle", Metric: "CPU at rest with them open", Value: 100 * (cpu1 - cpu0).Seconds() / 5 / float64(runtime.NumCPU()), Relay: na, Direct: na, Unit: "% of the machine"})
	return nil
}

// openIdle opens n authenticated sockets, eight at a time, spread over 32 source addresses.
// On an error it returns those it opened.
func openIdle(ctx context.Context, url string, tokens []string, n int) ([]*websocket.Conn, error) {
	var (
		mu    sync.Mutex
		conns = make([]*websocket.Conn, 0, n)
		next  atomic.Int64
		first error
		wg    sync.WaitGroup
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				ws, err := dial(ctx, url, tokens[i%len(tokens)], i, 32)
				mu.Lock()
				if err != nil {
					if first == nil {
						first = err
					}
					next.Store(int64(n)) // stop the others
				} else {
					conns = append(conns, ws)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return conns, first
}

// idleAdminGet GETs a /debug/pprof path as the admin and returns the body; nil on failure.
func idleAdminGet(s *server, adminToken, path string) ([]byte, error) {
	req, _ := http.NewRequest(http.MethodGet, s.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return b, err
}

// idleLiveHeap has the server collect garbage (a heap profile with gc=1), then reads its heap
// in use: what is live.
func idleLiveHeap(s *server, adminToken string) (int64, error) {
	if _, err := idleAdminGet(s, adminToken, "/debug/pprof/heap?gc=1"); err != nil {
		return 0, fmt.Errorf("forced GC: %w", err)
	}
	return s.heapInuse(), nil
}

// idleGoroutines counts the server's goroutines ("goroutine profile: total N").
func idleGoroutines(s *server, adminToken string) (int, error) {
	b, err := idleAdminGet(s, adminToken, "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	n, err := strconv.Atoi(strings.TrimPrefix(line, "goroutine profile: total "))
	if err != nil {
		return 0, fmt.Errorf("goroutine count: unexpected profile header %q", line)
	}
	return n, nil
}

// idleProbe reads the live heap and the goroutine count; a failure goes to the report's checks
// (the figures would be meaningless) rather than silently into them.
func idleProbe(s *server, adminToken string, rep *Report) (int64, int) {
	heap, err := idleLiveHeap(s, adminToken)
	if err != nil {
		rep.Checks = append(rep.Checks, "live heap not measured: "+err.Error())
	}
	gor, err := idleGoroutines(s, adminToken)
	if err != nil {
		rep.Checks = append(rep.Checks, "goroutines not counted: "+err.Error())
	}
	return heap, gor
}

// idleSpareFDs is what the idle scenario leaves of the open-file limit for everything else:
// the server holds ~250 files of its own (the embedded store's SQLite files, its listener);
// past that its accept fails and dials time out.
const idleSpareFDs = 400

// openFileLimit is this process's soft limit on open files, which the server inherits; 0 where
// /proc does not say.
func openFileLimit() int {
	b, err := os.ReadFile("/proc/self/limits")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				n, _ := strconv.Atoi(f[0]) // "unlimited" gives 0
				return n
			}
		}
	}
	return 0
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
	addPhases(rep, r.srv)
	checkOK(rep, "every reply complete and exact, no errors")
	return nil
}
