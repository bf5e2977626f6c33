package plans

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultTable(t *testing.T) {
	tab := Default()
	for _, name := range []string{Free, Pro, Enterprise} {
		if _, ok := tab.Get(name); !ok {
			t.Fatalf("default table lacks %q", name)
		}
	}
	free := tab.Lookup(Free)
	if free.AnalysisRetention() != 7*24*time.Hour {
		t.Errorf("free retention = %v, want 7 days (seed)", free.AnalysisRetention())
	}
	if got := tab.Lookup("no-such-plan"); got.Name != Free {
		t.Errorf("Lookup(unknown) = %q, want free", got.Name)
	}
	start := time.Date(2025, 1, 31, 0, 0, 0, 0, time.UTC)
	if got := free.NextBillingDate(start); !got.After(start) || got.Sub(start) > 32*24*time.Hour {
		t.Errorf("monthly next billing = %v", got)
	}
	ent := tab.Lookup(Enterprise)
	if got := ent.NextBillingDate(start); got.Year() != 2026 {
		t.Errorf("yearly next billing = %v", got)
	}
}

func TestParseRejects(t *testing.T) {
	valid := `{"name":"free","aiCredits":1,"maxAPIRequests":1,"maxTools":1,"supportLevel":"basic","chatMessagesPerMinute":1,"apiKeyRequestsPerMinute":1,"apiKeyRequestsPerDay":1,"analysisRetentionDays":7,"price":0,"currency":"USD","interval":"monthly"}`
	mut := func(from, to string) string { return `{"plans":[` + strings.Replace(valid, from, to, 1) + `]}` }
	cases := []struct{ name, doc, want string }{
		{"valid", `{"plans":[` + valid + `]}`, ""},
		{"unknown field", mut(`"price":0`, `"price":0,"aiCredit":5`), "unknown field"},
		{"no free", mut(`"name":"free"`, `"name":"pro"`), "required"},
		{"negative credits", mut(`"aiCredits":1`, `"aiCredits":-1`), "aiCredits"},
		{"bad support", mut(`"basic"`, `"gold"`), "supportLevel"},
		{"bad currency", mut(`"USD"`, `"usd"`), "currency"},
		{"bad interval", mut(`"monthly"`, `"weekly"`), "interval"},
		{"day below minute", mut(`"apiKeyRequestsPerDay":1`, `"apiKeyRequestsPerDay":0`), "apiKeyRequestsPerDay"},
		{"fraction of cent", mut(`"price":0`, `"price":1.234`), "decimals"},
		{"zero chat", mut(`"chatMessagesPerMinute":1`, `"chatMessagesPerMinute":0`), "chatMessagesPerMinute"},
		{"bad name", mut(`"name":"free"`, `"name":"Free Plan"`), "name"},
		{"duplicate", `{"plans":[` + valid + `,` + valid + `]}`, "twice"},
		{"trailing", `{"plans":[` + valid + `]} {}`, "trailing"},
		{"not json", `plans: []`, "parse plans"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.doc))
			if c.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v, want one mentioning %q", err, c.want)
			}
		})
	}
}

func TestFromEnv(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "plans.json")
	custom := strings.Replace(string(defaultJSON), `"chatMessagesPerMinute": 10`, `"chatMessagesPerMinute": 3`, 1)
	if err := os.WriteFile(good, []byte(custom), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"plans":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, path string
		wantChat   int
		wantErr    bool
	}{
		{"unset uses embedded", "", 10, false},
		{"file overrides", good, 3, false},
		{"invalid file", bad, 0, true},
		{"missing file", filepath.Join(dir, "nope.json"), 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tab, err := FromEnv(func(k string) string {
				if k == EnvVar {
					return c.path
				}
				return ""
			})
			if c.wantErr {
				if err == nil || !strings.Contains(err.Error(), EnvVar) {
					t.Fatalf("error = %v, want one naming %s", err, EnvVar)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tab.Lookup(Free).ChatMessagesPerMinute; got != c.wantChat {
				t.Errorf("free chat/min = %d, want %d", got, c.wantChat)
			}
		})
	}
}
