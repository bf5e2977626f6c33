package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/maula-ai/maula-chat/analyses"
	"github.com/maula-ai/maula-chat/auth"
	"github.com/maula-ai/maula-chat/chat"
	"github.com/maula-ai/maula-chat/config"
	"github.com/maula-ai/maula-chat/server"
	"github.com/maula-ai/maula-chat/tools"
	"github.com/maula-ai/maula-chat/webhooks"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// toolAPI is what mountToolsAPI started: the analyses routes, the webhook service (whose
// ChatCompleted and CreditsLow the chat hub may call) and their background loops.
type toolAPI struct {
	analyses *analyses.Service
	webhooks *webhooks.Service
	// hub is the chat hub once it runs (it is mounted after the tool APIs): told of every
	// stored analysis, so its context cache drops the user's analyses.
	hub  atomic.Pointer[chat.Hub]
	stop context.CancelFunc
	done chan struct{} // closed when both loops returned
}

// analysisListeners tells the webhooks and, once it runs, the chat hub of each stored analysis.
type analysisListeners struct {
	wh  *webhooks.Service
	hub *atomic.Pointer[chat.Hub]
}

func (l analysisListeners) AnalysisCreated(ctx context.Context, tool string, userID bson.ObjectID, analysis any, riskScore float64) error {
	if h := l.hub.Load(); h != nil {
		_ = h.AnalysisCreated(ctx, tool, userID, analysis, riskScore)
	}
	return l.wh.AnalysisCreated(ctx, tool, userID, analysis, riskScore)
}

// mountTools mounts the tool APIs (analyses, lookup, webhooks) and starts the webhook
// delivery worker and the analytics flusher. closeFn stops both, waits for the attempts in
// flight, and writes the pending analytics; call it after the server drained and before the
// stores close.
func mountTools(ctx context.Context, srv *server.Server, cfg *config.Config, st *stores, authSvc *auth.Service, log *slog.Logger) (closeFn func(context.Context), err error) {
	t, err := mountToolsAPI(ctx, srv, cfg, st, authSvc, log)
	if err != nil {
		return nil, err
	}
	return t.close, nil
}

// webhookSettings are the MAULA_WEBHOOK_* settings (not in config yet):
//
//	MAULA_WEBHOOK_ALLOW_PRIVATE=1   allow loopback, link-local and private destinations
//	MAULA_WEBHOOK_RETRY_BASE=30s    first retry delay (linear: base*n, exponential: base*2^(n-1))
//	MAULA_WEBHOOK_DISABLE_AFTER=20  consecutive failed attempts that disable a webhook
//	MAULA_WEBHOOK_TIMEOUT=10s       one attempt's timeout
//	MAULA_WEBHOOK_POLL=1s           how often the worker looks for due deliveries
//	MAULA_WEBHOOK_WORKERS=8         attempts in flight per instance
//	MAULA_ANALYTICS_FLUSH=2s        how often analytics deltas are written
func webhookSettings(getenv func(string) string) (webhooks.Options, time.Duration, error) {
	var o webhooks.Options
	flush := 2 * time.Second
	switch v := getenv("MAULA_WEBHOOK_ALLOW_PRIVATE"); v {
	case "", "0", "false":
	case "1", "true":
		o.AllowPrivate = true
	default:
		return o, 0, &config.SettingError{Setting: "MAULA_WEBHOOK_ALLOW_PRIVATE", Err: fmt.Errorf("%q: want 1 or 0", v)}
	}
	durs := []struct {
		name string
		dst  *time.Duration
	}{{"MAULA_WEBHOOK_RETRY_BASE", &o.RetryBase}, {"MAULA_WEBHOOK_TIMEOUT", &o.Timeout}, {"MAULA_WEBHOOK_POLL", &o.Poll}, {"MAULA_ANALYTICS_FLUSH", &flush}}
	for _, d := range durs {
		if v := getenv(d.name); v != "" {
			x, err := time.ParseDuration(v)
			if err != nil || x <= 0 {
				return o, 0, &config.SettingError{Setting: d.name, Err: fmt.Errorf("%q: want a positive duration such as 30s", v)}
			}
			*d.dst = x
		}
	}
	ints := []struct {
		name string
		dst  *int
	}{{"MAULA_WEBHOOK_DISABLE_AFTER", &o.DisableAfter}, {"MAULA_WEBHOOK_WORKERS", &o.Workers}}
	for _, n := range ints {
		if v := getenv(n.name); v != "" {
			x, err := strconv.Atoi(v)
			if err != nil || x < 1 || x > 1000 {
				return o, 0, &config.SettingError{Setting: n.name, Err: fmt.Errorf("%q: want an integer from 1 to 1000", v)}
			}
			*n.dst = x
		}
	}
	return o, flush, nil
}

// mountToolsAPI is mountTools returning the services, for wiring the chat hub's
// chat.completed and credits.low events to t.webhooks.
func mountToolsAPI(ctx context.Context, srv *server.Server, cfg *config.Config, st *stores, authSvc *auth.Service, log *slog.Logger) (*toolAPI, error) {
	wo, flush, err := webhookSettings(os.Getenv)
	if err != nil {
		return nil, usageErr(err)
	}
	reg := tools.Default()
	wo.Mongo, wo.Tools, wo.Log = st.mongo, reg, log
	wo.Identify = func(ctx context.Context) (bson.ObjectID, bool) {
		p := auth.PrincipalFrom(ctx)
		if p == nil {
			return bson.ObjectID{}, false
		}
		return p.UserID, true
	}
	wh, err := webhooks.New(ctx, wo)
	if err != nil {
		return nil, fmt.Errorf("webhooks: %w", err)
	}
	table := authSvc.Plans()
	t := &toolAPI{webhooks: wh}
	an, err := analyses.New(ctx, analyses.Options{
		Mongo: st.mongo, KV: st.kv, Tools: reg, Notifier: analysisListeners{wh, &t.hub}, Log: log, Locking: lockMode(st),
		Retention: func(plan string) time.Duration { return table.Lookup(plan).AnalysisRetention() },
		Identify: func(ctx context.Context) (analyses.Caller, bool) {
			p := auth.PrincipalFrom(ctx)
			if p == nil {
				return analyses.Caller{}, false
			}
			return analyses.Caller{UserID: p.UserID, Plan: p.Plan}, true
		},
	})
	if err != nil {
		return nil, fmt.Errorf("analyses: %w", err)
	}
	an.Routes(srv.Mux, authSvc.RequireUser)
	wh.Routes(srv.Mux, authSvc.RequireUser)
	if wo.AllowPrivate {
		log.Warn("webhooks may target loopback, link-local and private addresses (MAULA_WEBHOOK_ALLOW_PRIVATE)")
	}
	bg, stop := context.WithCancel(context.Background())
	t.analyses, t.stop, t.done = an, stop, make(chan struct{})
	go func() {
		defer close(t.done)
		loops := make(chan struct{}, 2)
		go func() { wh.Run(bg); loops <- struct{}{} }()
		go func() { an.Analytics().Run(bg, flush); loops <- struct{}{} }()
		<-loops
		<-loops
	}()
	return t, nil
}

// close stops the loops (an attempt in flight is cancelled and retried later, by this or
// another instance), then writes the pending analytics.
func (t *toolAPI) close(ctx context.Context) {
	t.stop()
	select {
	case <-t.done:
	case <-ctx.Done():
	}
	if err := t.analyses.Analytics().Flush(ctx); err != nil {
		slog.Default().Warn("analytics not written at shutdown", "err", err)
	}
}
