// Package tools is the registry of MAULA.AI's 50 fraud and identity tools: their ids, display
// names, categories, database names and the system prompt each tool's assistant uses. The list
// is data (tools.json, embedded) so that adding a tool is a data change.
package tools

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

//go:embed tools.json
var toolsJSON []byte

// Tool describes one tool of the platform.
type Tool struct {
	ID           string `json:"id"`          // as in the seed, e.g. "ipintel"
	Name         string `json:"name"`        // display name, e.g. "IPIntel"
	Category     string `json:"category"`    // group shown in the tool picker
	Description  string `json:"description"` // one line
	SystemPrompt string `json:"systemPrompt,omitempty"`
}

// Database is the name of the tool's own MongoDB database, "<id>-db" as in the seed.
func (t Tool) Database() string { return t.ID + "-db" }

// Registry is an immutable, ordered set of tools. It is safe for concurrent use.
type Registry struct {
	list []Tool
	byID map[string]*Tool
}

// Default returns the registry of the 50 tools embedded in the binary.
func Default() *Registry {
	r, err := Parse(toolsJSON)
	if err != nil {
		panic(fmt.Sprintf("tools: embedded tools.json: %v", err)) // a build defect, caught by tests
	}
	return r
}

// Parse builds a registry from a JSON array of tools, in the order given.
func Parse(data []byte) (*Registry, error) {
	var list []Tool
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("parse tools: %w", err)
	}
	r := &Registry{list: list, byID: make(map[string]*Tool, len(list))}
	for i := range r.list {
		t := &r.list[i]
		if !validID(t.ID) {
			return nil, fmt.Errorf("tool %d: invalid id %q", i, t.ID)
		}
		if _, dup := r.byID[t.ID]; dup {
			return nil, fmt.Errorf("tool %q listed twice", t.ID)
		}
		if t.Name == "" || t.Category == "" {
			return nil, fmt.Errorf("tool %q: name and category are required", t.ID)
		}
		if t.SystemPrompt == "" {
			t.SystemPrompt = defaultPrompt(t)
		}
		r.byID[t.ID] = t
	}
	return r, nil
}

func validID(id string) bool {
	if id == "" || len(id) > 40 {
		return false
	}
	for _, c := range id {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

func defaultPrompt(t *Tool) string {
	return fmt.Sprintf("You are the %s assistant of MAULA.AI. %s is a %s tool: %s "+
		"Explain the user's %s analyses, what their risk scores and signals mean, and what to do next. "+
		"Be precise, cite the figures from the context you are given, and say so when the context does not answer the question.",
		t.Name, t.Name, strings.ToLower(t.Category), t.Description, t.Name)
}

// All returns the tools in their registry order. The slice must not be modified.
func (r *Registry) All() []Tool { return r.list }

// Get returns the tool with that id.
func (r *Registry) Get(id string) (Tool, bool) {
	t, ok := r.byID[id]
	if !ok {
		return Tool{}, false
	}
	return *t, true
}

// Categories returns the category names, sorted.
func (r *Registry) Categories() []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range r.list {
		if !seen[t.Category] {
			seen[t.Category] = true
			out = append(out, t.Category)
		}
	}
	sort.Strings(out)
	return out
}
