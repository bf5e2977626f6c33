package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/maula-ai/maula-chat/auth"
	"github.com/maula-ai/maula-chat/billing"
	"github.com/maula-ai/maula-chat/chat"
	"github.com/maula-ai/maula-chat/config"
	"github.com/maula-ai/maula-chat/plans"
	"github.com/maula-ai/maula-chat/providers"
	"github.com/maula-ai/maula-chat/server"
	"github.com/maula-ai/maula-chat/tools"
	"github.com/maula-ai/maula-chat/webhooks"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// app holds the services mount started, for the order of shutdown.
type app struct {
	auth    *auth.Service
	billing *billing.Service
	hub     *chat.Hub
	stopBg  context.CancelFunc
	tools   func(context.Context) // stops the webhook worker and flushes analytics
}

// mount wires the feature packages onto the server: providers, auth, billing and the chat
// hub. The hub drains on shutdown through the server's drain hook.
func mount(ctx context.Context, srv *server.Server, cfg *config.Config, st *stores, log *slog.Logger) (*app, error) {
	reg, err := providers.NewRegistry(providers.ConfigFromEnv(os.Getenv), nil)
	if err != nil {
		return nil, usageErr(&config.SettingError{Setting: "MAULA_PRICES", Err: err})
	}
	for _, p := range reg.List() {
		if p.Available {
			log.Info("provider available", "provider", p.Name, "defaultModel", p.DefaultModel)
		}
	}
	a := &app{}
	if a.auth, err = mountAuth(ctx, srv, cfg, st, log); err != nil {
		return nil, err
	}
	a.billing, err = billing.New(ctx, billing.Options{Mongo: st.mongo, KV: st.kv, Prices: reg.Prices(),
		Plans: billingPlans{a.auth.Plans()}, Policy: cfg.CreditPolicy, MicrosPerCredit: cfg.MicrosPerCredit, Log: log, Locking: lockMode(st)})
	if err != nil {
		a.close(context.Background())
		return nil, fmt.Errorf("billing: %w", err)
	}
	a.auth.SetBalanceBarrier(a.billing.WaitApplied) // /auth/me shows every turn answered
	tapi, err := mountToolsAPI(ctx, srv, cfg, st, a.auth, log)
	if err != nil {
		a.close(context.Background())
		return nil, fmt.Errorf("tool APIs: %w", err)
	}
	a.tools = tapi.close
	var biller chat.Biller = billAdapter{a.billing}
	if cfg.Recording == "off" {
		log.Warn("recording is off (MAULA_RECORDING=off): turns are neither stored nor billed; for benchmarks only")
		biller = unbilled{}
	}
	a.hub, err = chat.New(ctx, chat.Options{Auth: authAdapter{a.auth}, Billing: biller, Unrecorded: cfg.Recording == "off",
		Events:    turnEvents{wh: tapi.webhooks, plans: a.auth.Plans(), log: log, billed: cfg.Recording != "off"},
		Providers: reg, Prices: reg.Prices(), Mongo: st.mongo, KV: st.kv, Tools: tools.Default(), Log: log,
		AllowedOrigins: cfg.AllowedOrigins, CookieName: auth.CookieName, Grace: cfg.GracePeriod, Metrics: srv.Registry})
	if err != nil {
		a.close(context.Background())
		return nil, fmt.Errorf("chat: %w", err)
	}
	tapi.hub.Store(a.hub)
	a.hub.Routes(srv.Mux, a.auth.RequireUser, func(r *http.Request) (chat.Identity, bool) {
		p := auth.PrincipalFrom(r.Context())
		if p == nil {
			return chat.Identity{}, false
		}
		return chat.Identity{UserID: p.UserID, Tool: p.Tool}, true
	})
	a.billing.Routes(srv.Mux, a.auth.RequireUser, a.auth.RequireAdmin, func(ctx context.Context) (bson.ObjectID, bool) {
		p := auth.PrincipalFrom(ctx)
		if p == nil {
			return bson.ObjectID{}, false
		}
		return p.UserID, true
	})
	srv.Mux.Handle("GET /api/providers", a.auth.RequireUser(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeProviders(w, reg.List())
	})))
	if err := mountWeb(srv, cfg); err != nil {
		a.close(context.Background())
		return nil, fmt.Errorf("web: %w", err)
	}
	if cfg.Pprof {
		// Profiles reveal internals and cost CPU: admins only, and only when asked for.
		srv.Mux.Handle("/debug/pprof/", a.auth.RequireAdmin(http.HandlerFunc(pprof.Index)))
		srv.Mux.Handle("/debug/pprof/profile", a.auth.RequireAdmin(http.HandlerFunc(pprof.Profile)))
		srv.Mux.Handle("/debug/pprof/trace", a.auth.RequireAdmin(http.HandlerFunc(pprof.Trace)))
		srv.Mux.Handle("/debug/pprof/symbol", a.auth.RequireAdmin(http.HandlerFunc(pprof.Symbol)))
		srv.Mux.Handle("/debug/pprof/cmdline", a.auth.RequireAdmin(http.HandlerFunc(pprof.Cmdline)))
	}
	srv.OnDrain(a.hub.Shutdown)
	bgCtx, stop := context.WithCancel(context.Background())
	a.stopBg = stop
	go a.billing.Run(bgCtx, time.Minute, a.hub.StoredUsage)
	return a, nil
}

// close stops what mount started, after the server drained and before the stores close.
func (a *app) close(ctx context.Context) {
	if a.stopBg != nil {
		a.stopBg()
	}
	if a.hub != nil {
		a.hub.Shutdown(ctx)
	}
	if a.billing != nil {
		// Reservations answered before they were written: their writes finish before the
		// store closes (their turns' settles wait for them too).
		a.billing.WaitEarly()
	}
	if a.tools != nil {
		a.tools(ctx)
	}
	if a.auth != nil {
		_ = a.auth.Close(ctx)
	}
}

// authAdapter gives the hub the identity it needs from the auth service.
type authAdapter struct{ s *auth.Service }

func (a authAdapter) Authenticate(r *http.Request) (chat.Identity, error) {
	p, err := a.s.Authenticate(r)
	if err != nil {
		return chat.Identity{}, err
	}
	viaCookie := r.Header.Get("Authorization") == "" && r.Header.Get("X-API-Key") == ""
	return chat.Identity{UserID: p.UserID, Tool: p.Tool, Plan: p.Plan, Cookie: viaCookie}, nil
}

func (a authAdapter) AuthenticateToken(ctx context.Context, token string) (chat.Identity, error) {
	p, err := a.s.AuthenticateToken(ctx, token)
	if err != nil {
		return chat.Identity{}, err
	}
	return chat.Identity{UserID: p.UserID, Tool: p.Tool, Plan: p.Plan}, nil
}

func (a authAdapter) AllowChat(ctx context.Context, id chat.Identity) (bool, time.Duration, error) {
	d, err := a.s.AllowChat(ctx, &auth.Principal{UserID: id.UserID, Plan: id.Plan})
	return d.Allowed, d.RetryAfter, err
}

// billAdapter gives the hub the billing service's reserve and settle.
type billAdapter struct{ s *billing.Service }

// unbilled is the chat.Biller of MAULA_RECORDING=off: every turn runs, nothing is charged.
type unbilled struct{}

func (unbilled) Reserve(_ context.Context, r chat.ReserveRequest) (chat.Reservation, error) {
	return chat.Reservation{MaxTokens: r.MaxTokens}, nil
}
func (unbilled) Settle(context.Context, chat.Reservation, chat.Outcome) (chat.Settlement, error) {
	return chat.Settlement{}, nil
}
func (unbilled) LiveCost(chat.Reservation, string, string, providers.Usage) (int64, int64) {
	return 0, 0
}

func (b billAdapter) Reserve(ctx context.Context, r chat.ReserveRequest) (chat.Reservation, error) {
	// Fresh: the hub's request ids hold a message id made for the turn, so billing may answer
	// before the reservation is written (billing/early.go).
	res, err := b.s.Reserve(ctx, billing.ReserveRequest{RequestID: r.RequestID, UserID: r.UserID, Tool: r.Tool,
		Provider: r.Provider, Model: r.Model, PromptTokens: r.PromptTokens, MaxTokens: r.MaxTokens, Fresh: true})
	if errors.Is(err, billing.ErrInsufficientCredits) {
		return chat.Reservation{}, chat.ErrInsufficientCredits
	}
	if err != nil {
		return chat.Reservation{}, err
	}
	return chat.Reservation{Handle: res, MaxTokens: res.MaxTokens, CapLowered: res.CapLowered, CreditsLeft: res.CreditsLeft}, nil
}

func (b billAdapter) Settle(ctx context.Context, r chat.Reservation, o chat.Outcome) (chat.Settlement, error) {
	res := *r.Handle.(*billing.Reservation)
	// Price what was served: a fallback before the first token may have changed provider.
	if o.Provider != "" {
		res.Provider, res.Model = o.Provider, o.Model
	}
	s, err := b.s.Settle(ctx, &res, billing.Outcome{Usage: o.Usage, ProducedOutput: o.ProducedOutput, Status: o.Status, At: o.At, Reason: o.Reason})
	if err != nil {
		return chat.Settlement{}, err
	}
	return chat.Settlement{CostMicros: s.CostMicros, Credits: s.Credits, CreditsLeft: s.CreditsLeft}, nil
}

func (b billAdapter) LiveCost(r chat.Reservation, provider, model string, u providers.Usage) (int64, int64) {
	return b.s.LiveCost(r.Handle.(*billing.Reservation), u)
}

// turnEvents turns finished chat turns into webhook events: chat.completed always, and
// credits.low when the balance fell under a tenth of the plan's credits.
type turnEvents struct {
	wh     *webhooks.Service
	plans  *plans.Table
	log    *slog.Logger
	billed bool // false with MAULA_RECORDING=off: there is no balance to be low
}

func (e turnEvents) TurnCompleted(ctx context.Context, t chat.CompletedTurn) {
	payload := map[string]any{"sessionId": t.SessionID, "requestId": t.ID, "provider": t.Provider, "model": t.Model,
		"status": t.Status, "finishReason": t.Finish, "costMicros": t.CostMicros, "creditsLeft": t.CreditsLeft,
		"usage": map[string]int64{"input": t.Usage.Input, "output": t.Usage.Output, "cacheRead": t.Usage.CacheRead,
			"cacheWrite": t.Usage.CacheWrite, "reasoning": t.Usage.Reasoning}}
	if err := e.wh.ChatCompleted(ctx, t.UserID, t.Tool, payload); err != nil {
		e.log.Warn("queue chat.completed", "err", err)
	}
	if p, ok := e.plans.Get(t.Plan); e.billed && ok && webhooks.CreditsAreLow(t.CreditsLeft, p.AICredits) {
		if err := e.wh.CreditsLow(ctx, t.UserID, "", map[string]any{"creditsLeft": t.CreditsLeft, "planCredits": p.AICredits}); err != nil {
			e.log.Warn("queue credits.low", "err", err)
		}
	}
}

// lockMode says how billing and analytics serialise writers of shared documents: with the
// embedded server and no other process able to reach it, a process-wide mutex; otherwise as
// the server needs (a lease lock on FerretDB, none on MongoDB).
func lockMode(st *stores) string {
	if st.mongo.SoleWriter() {
		return "local"
	}
	return "auto"
}
