package main

import (
	"net/http"

	"github.com/maula-ai/maula-chat/httpx"
	"github.com/maula-ai/maula-chat/providers"
)

// providerJSON is one row of GET /api/providers, for the web's provider picker and the SDKs.
type providerJSON struct {
	Name         string      `json:"name"`
	Available    bool        `json:"available"`
	DefaultModel string      `json:"defaultModel"`
	Models       []modelJSON `json:"models"`
}

type modelJSON struct {
	ID            string `json:"id"`
	ContextWindow int64  `json:"contextWindow"`
	MaxOutput     int64  `json:"maxOutput"`
}

func writeProviders(w http.ResponseWriter, list []providers.ProviderInfo) {
	out := make([]providerJSON, 0, len(list))
	for _, p := range list {
		pj := providerJSON{Name: p.Name, Available: p.Available, DefaultModel: p.DefaultModel, Models: []modelJSON{}}
		for _, m := range p.Models {
			pj.Models = append(pj.Models, modelJSON{ID: m.ID, ContextWindow: m.ContextWindow, MaxOutput: m.MaxOutput})
		}
		out = append(out, pj)
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"providers": out})
}
