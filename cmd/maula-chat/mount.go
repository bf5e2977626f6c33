package main

import (
	"context"
	"log/slog"

	"github.com/maula-ai/maula-chat/config"
	"github.com/maula-ai/maula-chat/server"
)

// mount wires the feature packages onto the server.
func mount(ctx context.Context, srv *server.Server, cfg *config.Config, st *stores, log *slog.Logger) error {
	return nil
}
