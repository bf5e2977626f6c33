package tools

import "testing"

func TestDefaultRegistryMatchesSeed(t *testing.T) {
	r := Default()
	if got := len(r.All()); got != 50 {
		t.Fatalf("tools = %d, want the seed's 50", got)
	}
	for _, tc := range []struct{ id, db string }{
		{"fraudguard", "fraudguard-db"},
		{"ipintel", "ipintel-db"},
		{"emaildefender", "emaildefender-db"},
		{"sessionguard", "sessionguard-db"},
	} {
		tool, ok := r.Get(tc.id)
		if !ok {
			t.Fatalf("tool %q missing", tc.id)
		}
		if tool.Database() != tc.db {
			t.Errorf("%s database = %q, want %q", tc.id, tool.Database(), tc.db)
		}
		if tool.SystemPrompt == "" {
			t.Errorf("%s has no system prompt", tc.id)
		}
	}
	if _, ok := r.Get("nope"); ok {
		t.Error("unknown tool found")
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ name, data string }{
		{"not json", `{`},
		{"bad id", `[{"id":"Bad-Id","name":"x","category":"c"}]`},
		{"duplicate", `[{"id":"a","name":"x","category":"c"},{"id":"a","name":"y","category":"c"}]`},
		{"no name", `[{"id":"a","category":"c"}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse([]byte(tc.data)); err == nil {
				t.Fatal("Parse accepted invalid data")
			}
		})
	}
}
