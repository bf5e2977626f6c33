package main

import (
	"github.com/maula-ai/maula-chat/config"
	"github.com/maula-ai/maula-chat/server"
	"github.com/maula-ai/maula-chat/tools"
	"github.com/maula-ai/maula-chat/web"
)

// mountWeb serves the pages (/, /chat, /admin, /account), their assets and GET /api/tools.
// The pages reach everything else through the public HTTP and WebSocket routes, so this needs
// nothing but the base path their URLs are built on.
func mountWeb(srv *server.Server, cfg *config.Config) error {
	return web.Routes(srv.Mux, web.Options{BasePath: cfg.BasePath, Tools: tools.Default()})
}
