package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/maula-ai/maula-chat/config"
	"github.com/maula-ai/maula-chat/kv"
	"github.com/maula-ai/maula-chat/server"
	"github.com/maula-ai/maula-chat/store"
	"github.com/maula-ai/maula-chat/tools"
)

// stores are the opened MongoDB and key-value primitives.
type stores struct {
	mongo     *store.Store
	kv        kv.Store
	retention store.RetentionMode
}

func toolDBs(reg *tools.Registry) []string {
	var dbs []string
	for _, t := range reg.All() {
		dbs = append(dbs, t.Database())
	}
	return dbs
}

// openStores opens MongoDB (embedded or external), migrates it, and opens the primitives.
func openStores(ctx context.Context, cfg *config.Config, log *slog.Logger, forceMigrate bool) (*stores, error) {
	if cfg.MongoURI == "" {
		if err := store.CheckDataDir(cfg.DataDir); err != nil {
			return nil, usageErr(&config.SettingError{Setting: "MAULA_DATA_DIR", Err: err})
		}
	}
	ms, err := store.Open(ctx, store.Options{URI: cfg.MongoURI, DataDir: cfg.DataDir, Listen: cfg.MongoListen, Wait: cfg.StoreWait, Logger: log})
	if err != nil {
		if cfg.MongoListen != "" && cfg.MongoURI == "" {
			return nil, usageErr(&config.SettingError{Setting: "MAULA_MONGO_LISTEN", Err: err})
		}
		return nil, runErr(err)
	}
	res, err := ms.Migrate(ctx, store.Schema(toolDBs(tools.Default())), forceMigrate)
	if err != nil {
		_ = ms.Close(context.Background())
		return nil, runErr(err)
	}
	s := &stores{mongo: ms, retention: res.Mode}
	if cfg.RedisURL == "" {
		s.kv = kv.NewMemory()
	} else {
		r, err := kv.OpenRedis(ctx, cfg.RedisURL, cfg.StoreWait)
		if err != nil {
			_ = ms.Close(context.Background())
			return nil, runErr(err)
		}
		s.kv = r
	}
	return s, nil
}

func (s *stores) close() {
	_ = s.kv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.mongo.Close(ctx)
}

func (s *stores) describe(cfg *config.Config) string {
	m := "MongoDB " + cfg.MongoURI
	if s.mongo.Embedded {
		m = fmt.Sprintf("embedded FerretDB (data %s, wire %s)", cfg.DataDir, s.mongo.URI)
	}
	k := "in-process primitives"
	if s.kv.Kind() == "redis" {
		k = "Redis"
	}
	return m + "; " + k
}

func runServe(ctx context.Context, args []string) error {
	cfg, err := config.Load(args, os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg.LogFormat, cfg.LogLevel, os.Stderr)
	slog.SetDefault(log)
	if cfg.MongoURI == "" && os.Getenv("GOMAXPROCS") == "" {
		n := embeddedProcs(runtime.GOMAXPROCS(0))
		runtime.GOMAXPROCS(n)
		log.Info("scheduler: the store runs in this process", "GOMAXPROCS", n)
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return usageErr(&config.SettingError{Setting: "MAULA_CPUPROFILE", Err: err})
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return runErr(err)
		}
		defer pprof.StopCPUProfile()
	}
	// Bind first: a port in use is a setting error and should not wait for the stores.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return usageErr(&config.SettingError{Setting: "MAULA_ADDR", Err: err})
	}
	return serveOn(ctx, cfg, log, ln, func(line string) { fmt.Fprintln(os.Stderr, line) })
}

// embeddedProcs is GOMAXPROCS for a server whose store runs in its process: twice the
// CPUs it may use. The embedded SQLite runs long stretches of CPU and blocking file calls on
// the server's own Ps; with one P per CPU a turn's goroutine waits behind them (up to Go's
// 10 ms time slice), with two the kernel shares the CPUs among them at a finer grain. On 2
// cores, bench ttft at 64 streams: added TTFT p50 8–11 -> 2.2–3.1 ms, p99 37–77 -> 17–25 ms,
// recorded turns/s unchanged (docs/benchmarks.md). GOMAXPROCS in the environment wins. Set
// once at start: the runtime then no longer follows a change of the container's CPU limit.
func embeddedProcs(cpus int) int { return 2 * cpus }

// serveOn runs the server on ln until ctx is done, then shuts down in order: stop accepting,
// drain the hub, flush auth's batches, close the stores. ready receives the one line saying
// where it listens and which stores it uses.
func serveOn(ctx context.Context, cfg *config.Config, log *slog.Logger, ln net.Listener, ready func(string)) error {
	defer ln.Close()
	start := time.Now()
	st, err := openStores(ctx, cfg, log, false)
	if err != nil {
		return err
	}
	defer st.close()
	log.Info("retention", "mode", st.retention)
	if st.retention == store.RetentionSweeper {
		rules := store.RetentionRules(store.Schema(toolDBs(tools.Default())))
		sweepCtx, stopSweep := context.WithCancel(context.Background())
		defer stopSweep()
		go st.mongo.RunSweeper(sweepCtx, rules, cfg.SweepInterval, log)
	}
	srv := server.New(log, cfg.BasePath,
		server.Check{Name: "mongodb", Fn: st.mongo.Ping},
		server.Check{Name: st.kv.Kind(), Fn: st.kv.Ping},
	)
	a, err := mount(ctx, srv, cfg, st, log)
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return err
		}
		return runErr(err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.close(cctx)
	}()
	ready(fmt.Sprintf("maula-chat listening on http://%s%s/ (%s; ready in %s)",
		ln.Addr(), cfg.BasePath, st.describe(cfg), time.Since(start).Round(time.Millisecond)))
	if err := srv.Serve(ctx, ln, cfg.ShutdownTimeout); err != nil {
		return runErr(err)
	}
	log.Info("stopped")
	return nil
}

func runMigrate(ctx context.Context, args []string) error {
	cfg, err := config.Load(args, os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg.LogFormat, cfg.LogLevel, os.Stderr)
	start := time.Now()
	st, err := openStores(ctx, cfg, log, true)
	if err != nil {
		return err
	}
	defer st.close()
	fmt.Fprintf(os.Stderr, "migrated %d tool databases and %s in %s (retention: %s)\n",
		len(tools.Default().All()), store.AuthDB, time.Since(start).Round(time.Millisecond), st.retention)
	return nil
}
