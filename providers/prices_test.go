package providers

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func priceDoc(entries string) []byte {
	return []byte(`{"unit":"usd_per_million_tokens","models":[` + entries + `]}`)
}

func TestLoadPricesRejects(t *testing.T) {
	const ok = `{"effective":"2025-01-01","input":"3","output":"15","cache_read":"0.3","cache_write":"3.75"}`
	cases := []struct {
		name, doc, want string
	}{
		{"$/token where $/M belongs", `{"provider":"claude","model":"m","prices":[{"effective":"2025-01-01","input":"0.000003","output":"0.000015"}]}`, "claude/m@2025-01-01: input"},
		{"$/M where $/token belongs (1e6x)", `{"provider":"gpt","model":"g","prices":[{"effective":"2025-01-01","input":"3000000","output":"15"}]}`, "gpt/g@2025-01-01: input"},
		{"above $1000/M", `{"provider":"gpt","model":"g","prices":[{"effective":"2025-01-01","input":"1","output":"1000.01"}]}`, "output"},
		{"negative", `{"provider":"grok","model":"x","prices":[{"effective":"2025-01-01","input":"-1","output":"1"}]}`, "grok/x@2025-01-01: input: negative"},
		{"too many decimals", `{"provider":"grok","model":"x","prices":[{"effective":"2025-01-01","input":"1.0000001","output":"1"}]}`, "more than 6 decimals"},
		{"exponent", `{"provider":"grok","model":"x","prices":[{"effective":"2025-01-01","input":3e-6,"output":"1"}]}`, "exponent"},
		{"bad date", `{"provider":"grok","model":"x","prices":[{"effective":"2025-13-01","input":"1","output":"1"}]}`, "effective date"},
		{"duplicate date", `{"provider":"claude","model":"m","prices":[` + ok + `,` + ok + `]}`, "two entries"},
		{"no prices", `{"provider":"claude","model":"m","prices":[]}`, "no dated price"},
		{"unknown field", `{"provider":"claude","model":"m","price_per_token":1,"prices":[` + ok + `]}`, "unknown field"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadPrices(priceDoc(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want mention of %q", err, tc.want)
			}
		})
	}
	if _, err := LoadPrices([]byte(`{"unit":"usd_per_token","models":[]}`)); err == nil {
		t.Fatal("wrong unit accepted")
	}
}

func TestCostExact(t *testing.T) {
	pb := DefaultPrices()
	day := func(s string) time.Time { t, _ := time.Parse(time.DateOnly, s); return t }
	cases := []struct {
		provider, model string
		u               Usage
		at              time.Time
		micros          int64
		priceID         string
	}{
		// 1000 in × $3 + 500 out × $15 + 2000 cache read × $0.30 + 100 cache write × $3.75 per M
		// = 3000 + 7500 + 600 + 375 µ$ = 11475 µ$
		{"claude", "claude-sonnet-4-5", Usage{Input: 1000, Output: 500, CacheRead: 2000, CacheWrite: 100}, day("2026-01-01"), 11475, "claude/claude-sonnet-4-5@2025-09-29"},
		// 1 token × $0.125/M = 0.125 µ$ -> rounded up to 1 µ$
		{"gpt", "gpt-5", Usage{CacheRead: 1}, day("2026-01-01"), 1, "gpt/gpt-5@2025-08-07"},
		// dated entries: the older price applies before the change
		{"gemini", "gemini-2.5-flash", Usage{Input: 1_000_000, Output: 1_000_000}, day("2025-05-01"), 750_000, "gemini/gemini-2.5-flash@2025-04-17"},
		{"gemini", "gemini-2.5-flash", Usage{Input: 1_000_000, Output: 1_000_000}, day("2025-06-17"), 2_800_000, "gemini/gemini-2.5-flash@2025-06-17"},
		{"echo", "echo-1", Usage{Input: 123, Output: 456}, day("2026-01-01"), 0, "echo/echo-1@2024-01-01"},
		// reasoning is part of Output and not billed again
		{"gpt", "gpt-5-mini", Usage{Input: 10, Output: 100, Reasoning: 80}, day("2026-01-01"), 203, "gpt/gpt-5-mini@2025-08-07"},
	}
	for _, tc := range cases {
		t.Run(tc.priceID, func(t *testing.T) {
			c, err := pb.Cost(tc.provider, tc.model, tc.u, tc.at)
			if err != nil {
				t.Fatal(err)
			}
			if c.Micros != tc.micros || c.PriceID != tc.priceID {
				t.Fatalf("cost = %+v, want %d µ$ from %s", c, tc.micros, tc.priceID)
			}
		})
	}
	if _, err := pb.Cost("claude", "nope", Usage{Input: 1}, time.Now()); !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("unknown model: %v", err)
	}
	if _, err := pb.Cost("gemini", "gemini-2.5-flash", Usage{Input: 1}, day("2020-01-01")); !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("before first entry: %v", err)
	}
	if _, err := pb.Cost("claude", "claude-opus-4-5", Usage{Input: 1 << 62, Output: 1 << 62}, time.Now()); err == nil {
		t.Fatal("overflow not reported")
	}
}

func TestDefaultModelsArePriced(t *testing.T) {
	pb := DefaultPrices()
	for name, m := range defaultModels {
		if _, err := pb.Price(name, m, time.Now()); err != nil {
			t.Errorf("default model of %s: %v", name, err)
		}
	}
}

// FuzzLoadPrices checks the loader never panics and that whatever it
// accepts is within the plausibility bounds and prices without error.
func FuzzLoadPrices(f *testing.F) {
	f.Add(embeddedPrices)
	f.Add(priceDoc(`{"provider":"a","model":"b","prices":[{"effective":"2025-01-01","input":"0.000003","output":"1"}]}`))
	f.Add(priceDoc(`{"provider":"a","model":"b","prices":[{"effective":"2025-01-01","input":"999.999999","output":1000}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		pb, err := LoadPrices(data)
		if err != nil {
			return
		}
		for _, es := range pb.entries {
			for _, p := range es {
				for _, v := range []int64{p.Input, p.Output, p.CacheRead, p.CacheWrite} {
					if v < 0 || v > maxMicrosPerM || (v != 0 && v < minMicrosPerM) {
						t.Fatalf("accepted implausible price %d in %s", v, p.ID)
					}
				}
				if _, err := pb.Cost(p.Provider, p.Model, Usage{Input: 1e6, Output: 1e6, CacheRead: 1e6, CacheWrite: 1e6}, p.Effective); err != nil {
					t.Fatalf("cost of accepted entry %s: %v", p.ID, err)
				}
			}
		}
	})
}

// TestPricesFileRefusedAtStart: a $/token value in MAULA_PRICES stops the
// registry from being built, naming the entry.
func TestPricesFileRefusedAtStart(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "prices.json")
	doc := priceDoc(`{"provider":"claude","model":"claude-sonnet-4-5","prices":[{"effective":"2025-09-29","input":"0.000003","output":"0.000015","cache_read":"0.0000003","cache_write":"0.00000375"}]}`)
	if err := os.WriteFile(bad, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := ConfigFromEnv(func(k string) string { return map[string]string{"MAULA_PRICES": bad}[k] })
	_, err := NewRegistry(cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "claude/claude-sonnet-4-5@2025-09-29") {
		t.Fatalf("err = %v", err)
	}
	good := filepath.Join(dir, "good.json")
	if err := os.WriteFile(good, embeddedPrices, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.PricesPath = good
	if _, err := NewRegistry(cfg, nil); err != nil {
		t.Fatal(err)
	}
}
