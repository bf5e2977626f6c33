package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/maula-ai/maula-chat/auth"
	"github.com/maula-ai/maula-chat/config"
	"github.com/maula-ai/maula-chat/plans"
	"github.com/maula-ai/maula-chat/server"
	"github.com/maula-ai/maula-chat/tools"
)

// mountAuth opens the auth service on the stores and mounts its /auth/* routes. The caller
// owns the returned service and must Close it after the server has drained and before the
// stores close, so that batched key usage and API logs are written.
//
// Settings not (yet) in config are read from the environment here: MAULA_PLANS (a plan file
// replacing the embedded table) and MAULA_JWT_PREVIOUS_SECRETS (comma-separated secrets of
// earlier rotations, still accepted for verification).
func mountAuth(ctx context.Context, srv *server.Server, cfg *config.Config, st *stores, log *slog.Logger) (*auth.Service, error) {
	svc, err := newAuthService(ctx, cfg, st, log)
	if err != nil {
		return nil, err
	}
	svc.Routes(srv.Mux)
	return svc, nil
}

// newAuthService builds the auth service from the configuration; the admin commands use it
// without a server.
func newAuthService(ctx context.Context, cfg *config.Config, st *stores, log *slog.Logger) (*auth.Service, error) {
	table, err := plans.FromEnv(os.Getenv)
	if err != nil {
		return nil, usageErr(&config.SettingError{Setting: plans.EnvVar, Err: err})
	}
	var previous []string
	for _, p := range strings.Split(os.Getenv("MAULA_JWT_PREVIOUS_SECRETS"), ",") {
		if p = strings.TrimSpace(p); p != "" {
			previous = append(previous, p)
		}
	}
	svc, err := auth.New(ctx, auth.Options{
		Mongo: st.mongo, KV: st.kv, Tools: tools.Default(), Plans: table, Log: log,
		JWTSecret: cfg.JWTSecret, JWTPreviousSecrets: previous, DataDir: cfg.DataDir,
		BcryptCost: cfg.BcryptCost, AdminEmails: cfg.AdminEmails, SMTPURL: cfg.SMTPURL,
		PublicURL: cfg.PublicURL, BasePath: cfg.BasePath, AllowedOrigins: cfg.AllowedOrigins,
	})
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return svc, nil
}
