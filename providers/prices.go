package providers

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"sort"
	"strings"
	"time"
)

//go:embed prices.json
var embeddedPrices []byte

// Plausibility bounds for prices in USD per million tokens. Above the upper
// bound is not a real 2026 price; a non-zero value below the lower bound is
// what a $/token figure looks like when typed into a $/M field (e.g.
// 0.000003 for $3/M), which would bill a million times too little.
const (
	maxMicrosPerM = 1000 * 1_000_000 // $1,000 per million tokens
	minMicrosPerM = 1000             // $0.001 per million tokens
)

// Price is one dated price entry, in micro-dollars (1e-6 USD) per million
// tokens, so that every figure with up to six decimals is exact.
type Price struct {
	ID            string // "provider/model@YYYY-MM-DD", recorded with each cost
	Provider      string
	Model         string
	Effective     time.Time // the entry applies from this instant (UTC midnight) on
	Input         int64     // µ$ per million uncached input tokens
	Output        int64     // µ$ per million output tokens (reasoning included)
	CacheRead     int64     // µ$ per million cache-read input tokens
	CacheWrite    int64     // µ$ per million cache-write input tokens
	ContextWindow int64
	MaxOutput     int64
}

// Cost is an exact amount with the price entry it came from.
type Cost struct {
	Micros  int64  // micro-dollars, rounded up (never under-bill)
	PriceID string // which dated entry
}

// PriceBook holds dated price entries per provider and model. It is
// immutable after loading and safe for concurrent use.
type PriceBook struct {
	entries map[string][]Price // key provider/model, sorted by Effective ascending
}

// priceFile is the JSON layout; prices are decimal strings or numbers in USD
// per million tokens, parsed exactly (no float).
type priceFile struct {
	Unit   string       `json:"unit"`
	Models []priceModel `json:"models"`
}

type priceModel struct {
	Provider      string       `json:"provider"`
	Model         string       `json:"model"`
	ContextWindow int64        `json:"context_window"`
	MaxOutput     int64        `json:"max_output"`
	Prices        []priceEntry `json:"prices"`
}

type priceEntry struct {
	Effective  string      `json:"effective"`
	Input      json.Number `json:"input"`
	Output     json.Number `json:"output"`
	CacheRead  json.Number `json:"cache_read"`
	CacheWrite json.Number `json:"cache_write"`
}

// PriceUnit is the only unit accepted in a price file.
const PriceUnit = "usd_per_million_tokens"

// LoadPrices parses a price file. It rejects implausible units (any price
// above $1000/M, a non-zero price below $0.001/M, or a negative one), bad
// dates and duplicates, naming the entry.
func LoadPrices(data []byte) (*PriceBook, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	var f priceFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("prices: %w", err)
	}
	if f.Unit != PriceUnit {
		return nil, fmt.Errorf("prices: unit is %q, want %q", f.Unit, PriceUnit)
	}
	pb := &PriceBook{entries: map[string][]Price{}}
	for _, m := range f.Models {
		if m.Provider == "" || m.Model == "" {
			return nil, fmt.Errorf("prices: entry with empty provider or model (%q/%q)", m.Provider, m.Model)
		}
		name := m.Provider + "/" + m.Model
		if m.ContextWindow < 0 || m.MaxOutput < 0 {
			return nil, fmt.Errorf("prices: %s: negative context window or max output", name)
		}
		if len(m.Prices) == 0 {
			return nil, fmt.Errorf("prices: %s: no dated price", name)
		}
		for _, e := range m.Prices {
			p, err := parseEntry(m, e)
			if err != nil {
				return nil, fmt.Errorf("prices: %s@%s: %w", name, e.Effective, err)
			}
			for _, q := range pb.entries[name] {
				if q.Effective.Equal(p.Effective) {
					return nil, fmt.Errorf("prices: %s: two entries effective %s", name, e.Effective)
				}
			}
			pb.entries[name] = append(pb.entries[name], p)
		}
		sort.Slice(pb.entries[name], func(i, j int) bool {
			return pb.entries[name][i].Effective.Before(pb.entries[name][j].Effective)
		})
	}
	return pb, nil
}

func parseEntry(m priceModel, e priceEntry) (Price, error) {
	eff, err := time.Parse(time.DateOnly, e.Effective)
	if err != nil {
		return Price{}, fmt.Errorf("effective date: %w", err)
	}
	p := Price{ID: m.Provider + "/" + m.Model + "@" + e.Effective, Provider: m.Provider, Model: m.Model,
		Effective: eff, ContextWindow: m.ContextWindow, MaxOutput: m.MaxOutput}
	for _, f := range []struct {
		name string
		in   json.Number
		out  *int64
	}{{"input", e.Input, &p.Input}, {"output", e.Output, &p.Output},
		{"cache_read", e.CacheRead, &p.CacheRead}, {"cache_write", e.CacheWrite, &p.CacheWrite}} {
		v, err := parseMicros(string(f.in))
		if err != nil {
			return Price{}, fmt.Errorf("%s: %w", f.name, err)
		}
		switch {
		case v < 0:
			return Price{}, fmt.Errorf("%s: negative price %s", f.name, f.in)
		case v > maxMicrosPerM:
			return Price{}, fmt.Errorf("%s: %s USD per million tokens is implausible (over $1000/M): wrong unit?", f.name, f.in)
		case v != 0 && v < minMicrosPerM:
			return Price{}, fmt.Errorf("%s: %s USD per million tokens is implausibly small: a $/token figure in a $/M field?", f.name, f.in)
		}
		*f.out = v
	}
	return p, nil
}

// parseMicros parses a decimal USD amount into exact micro-dollars. An
// empty value is zero; more than six significant decimals is an error
// rather than a silent rounding.
func parseMicros(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	neg := false
	if s[0] == '-' || s[0] == '+' {
		neg = s[0] == '-'
		s = s[1:]
	}
	intPart, frac, _ := strings.Cut(s, ".")
	if intPart == "" && frac == "" {
		return 0, errors.New("empty number")
	}
	if strings.ContainsAny(s, "eE") {
		return 0, fmt.Errorf("exponent notation %q not accepted: write the decimal", s)
	}
	frac = strings.TrimRight(frac, "0")
	if len(frac) > 6 {
		return 0, fmt.Errorf("%q has more than 6 decimals (below a micro-dollar)", s)
	}
	if len(intPart) > 9 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	var v int64
	for _, r := range intPart + frac + strings.Repeat("0", 6-len(frac)) {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("%q is not a decimal number", s)
		}
		v = v*10 + int64(r-'0')
	}
	if neg {
		v = -v
	}
	return v, nil
}

// DefaultPrices returns the embedded price book. It panics if the embedded
// file is invalid, which the package tests rule out.
func DefaultPrices() *PriceBook {
	pb, err := LoadPrices(embeddedPrices)
	if err != nil {
		panic(fmt.Sprintf("providers: embedded prices.json: %v", err))
	}
	return pb
}

// LoadPricesFile returns the price book from path, or the embedded one when
// path is empty (MAULA_PRICES unset). A bad file is an error at start.
func LoadPricesFile(path string) (*PriceBook, error) {
	if path == "" {
		return DefaultPrices(), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("prices: %w", err)
	}
	pb, err := LoadPrices(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pb, nil
}

// ErrUnknownModel is wrapped by Price and Cost when no entry applies.
var ErrUnknownModel = errors.New("unknown or unpriced model")

// Price returns the entry for provider/model in force at t: the one with the
// latest effective date not after t.
func (p *PriceBook) Price(provider, model string, at time.Time) (Price, error) {
	es := p.entries[provider+"/"+model]
	for i := len(es) - 1; i >= 0; i-- {
		if !es[i].Effective.After(at) {
			return es[i], nil
		}
	}
	if len(es) > 0 {
		return Price{}, fmt.Errorf("%s/%s has no price before %s: %w", provider, model, at.Format(time.DateOnly), ErrUnknownModel)
	}
	return Price{}, fmt.Errorf("%s/%s: %w", provider, model, ErrUnknownModel)
}

// Cost prices u exactly: sum(tokens × µ$/M) / 1e6, rounded up to the next
// micro-dollar, in integers with overflow checks.
func (p *PriceBook) Cost(provider, model string, u Usage, at time.Time) (Cost, error) {
	pr, err := p.Price(provider, model, at)
	if err != nil {
		return Cost{}, err
	}
	var hi, lo uint64
	for _, t := range [...]struct{ n, price int64 }{
		{u.Input, pr.Input}, {u.Output, pr.Output}, {u.CacheRead, pr.CacheRead}, {u.CacheWrite, pr.CacheWrite},
	} {
		if t.n < 0 {
			return Cost{}, fmt.Errorf("cost %s: negative token count %d", pr.ID, t.n)
		}
		h, l := bits.Mul64(uint64(t.n), uint64(t.price))
		var c uint64
		lo, c = bits.Add64(lo, l, 0)
		hi += h + c
	}
	if hi >= 1_000_000 { // the quotient would not fit in 64 bits
		return Cost{}, fmt.Errorf("cost %s: overflow", pr.ID)
	}
	q, r := bits.Div64(hi, lo, 1_000_000)
	if r != 0 {
		q++
	}
	if q > 1<<62 {
		return Cost{}, fmt.Errorf("cost %s: overflow", pr.ID)
	}
	return Cost{Micros: int64(q), PriceID: pr.ID}, nil
}

// Models lists the models of provider priced at t, sorted by ID.
func (p *PriceBook) Models(provider string, at time.Time) []ModelInfo {
	var out []ModelInfo
	for _, es := range p.entries {
		if len(es) == 0 || es[0].Provider != provider {
			continue
		}
		if pr, err := p.Price(provider, es[0].Model, at); err == nil {
			out = append(out, ModelInfo{ID: pr.Model, ContextWindow: pr.ContextWindow, MaxOutput: pr.MaxOutput})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
