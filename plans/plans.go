// Package plans is the table of subscription plans (free, pro, enterprise): what each one
// grants (AI credits per billing period, API requests, tools, support level), the rate limits it
// implies (chat messages per minute, default API key limits), how long its analyses are kept,
// and what it costs. The default table is embedded (plans.json); MAULA_PLANS names a JSON file
// of the same shape that replaces it. Every table is validated before use, so a typo in a plan
// file stops the server at start rather than granting the wrong limits.
package plans

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"time"
)

//go:embed plans.json
var defaultJSON []byte

// EnvVar names the environment variable holding the path of a plan file that replaces the
// embedded table.
const EnvVar = "MAULA_PLANS"

// Plan names every deployment is expected to have. Free is required: new users start on it.
const (
	Free       = "free"
	Pro        = "pro"
	Enterprise = "enterprise"
)

// Billing intervals.
const (
	Monthly = "monthly"
	Yearly  = "yearly"
)

// Plan is one row of the table. JSON names match the seed's subscription features where the
// seed names them (aiCredits, maxAPIRequests, maxTools, supportLevel).
type Plan struct {
	Name string `json:"name"`
	// AICredits are granted per billing period (the seed's features.aiCredits).
	AICredits      int64  `json:"aiCredits"`
	MaxAPIRequests int    `json:"maxAPIRequests"`
	MaxTools       int    `json:"maxTools"`
	SupportLevel   string `json:"supportLevel"` // basic | priority | dedicated
	// ChatMessagesPerMinute limits one user's chat messages across every instance.
	ChatMessagesPerMinute int `json:"chatMessagesPerMinute"`
	// APIKeyRequestsPerMinute and APIKeyRequestsPerDay are the rateLimit given to new API keys.
	APIKeyRequestsPerMinute int `json:"apiKeyRequestsPerMinute"`
	APIKeyRequestsPerDay    int `json:"apiKeyRequestsPerDay"`
	// AnalysisRetentionDays is how long analyses are kept; 0 keeps them for ever.
	AnalysisRetentionDays int `json:"analysisRetentionDays"`
	// Price is charged per Interval in Currency (ISO 4217, e.g. USD).
	Price    float64 `json:"price"`
	Currency string  `json:"currency"`
	Interval string  `json:"interval"` // monthly | yearly
}

// AnalysisRetention returns the retention as a duration; 0 means "keep for ever".
func (p Plan) AnalysisRetention() time.Duration {
	return time.Duration(p.AnalysisRetentionDays) * 24 * time.Hour
}

// NextBillingDate returns the end of the billing period that starts at t.
func (p Plan) NextBillingDate(t time.Time) time.Time {
	if p.Interval == Yearly {
		return t.AddDate(1, 0, 0)
	}
	return t.AddDate(0, 1, 0)
}

// Table is a validated, immutable set of plans; safe for concurrent use.
type Table struct {
	list   []Plan
	byName map[string]Plan
}

var (
	nameRe     = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)
	currencyRe = regexp.MustCompile(`^[A-Z]{3}$`)
)

// Default returns the embedded table.
func Default() *Table {
	t, err := Parse(defaultJSON)
	if err != nil {
		panic(fmt.Sprintf("plans: embedded plans.json: %v", err)) // a build defect, caught by tests
	}
	return t
}

// FromEnv returns the table named by MAULA_PLANS (read through getenv), or the embedded one
// when it is unset.
func FromEnv(getenv func(string) string) (*Table, error) {
	path := getenv(EnvVar)
	if path == "" {
		return Default(), nil
	}
	t, err := Load(path)
	if err != nil {
		return nil, fmt.Errorf("%s=%s: %w", EnvVar, path, err)
	}
	return t, nil
}

// Load reads and validates a plan file.
func Load(path string) (*Table, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read plans: %w", err)
	}
	return Parse(b)
}

// Parse decodes {"plans":[...]} strictly (unknown fields are errors: a misspelt limit must not
// silently become 0) and validates it.
func Parse(data []byte) (*Table, error) {
	var doc struct {
		Plans []Plan `json:"plans"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parse plans: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("parse plans: trailing data after the JSON object")
	}
	t := &Table{list: doc.Plans, byName: make(map[string]Plan, len(doc.Plans))}
	for i, p := range doc.Plans {
		if err := validate(p); err != nil {
			return nil, fmt.Errorf("plan %d (%q): %w", i, p.Name, err)
		}
		if _, dup := t.byName[p.Name]; dup {
			return nil, fmt.Errorf("plan %q listed twice", p.Name)
		}
		t.byName[p.Name] = p
	}
	if _, ok := t.byName[Free]; !ok {
		return nil, fmt.Errorf("plans: the %q plan is required (new users start on it)", Free)
	}
	return t, nil
}

func validate(p Plan) error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(nameRe.MatchString(p.Name), "name must match %s", nameRe)
	check(p.AICredits >= 0, "aiCredits must not be negative")
	check(p.MaxAPIRequests >= 0, "maxAPIRequests must not be negative")
	check(p.MaxTools > 0, "maxTools must be positive")
	check(p.SupportLevel == "basic" || p.SupportLevel == "priority" || p.SupportLevel == "dedicated",
		"supportLevel must be basic, priority or dedicated")
	check(p.ChatMessagesPerMinute > 0, "chatMessagesPerMinute must be positive")
	check(p.APIKeyRequestsPerMinute > 0, "apiKeyRequestsPerMinute must be positive")
	check(p.APIKeyRequestsPerDay >= p.APIKeyRequestsPerMinute, "apiKeyRequestsPerDay must be at least apiKeyRequestsPerMinute")
	check(p.AnalysisRetentionDays >= 0, "analysisRetentionDays must not be negative (0 keeps for ever)")
	// Prices are money: no NaN, no negatives, no fractions of a cent.
	check(!math.IsNaN(p.Price) && !math.IsInf(p.Price, 0) && p.Price >= 0, "price must be a non-negative number")
	check(math.Abs(p.Price*100-math.Round(p.Price*100)) < 1e-6, "price must have at most 2 decimals")
	check(currencyRe.MatchString(p.Currency), "currency must be an ISO 4217 code like USD")
	check(p.Interval == Monthly || p.Interval == Yearly, "interval must be monthly or yearly")
	return errors.Join(errs...)
}

// Get returns the plan with that name.
func (t *Table) Get(name string) (Plan, bool) {
	p, ok := t.byName[name]
	return p, ok
}

// Lookup returns the plan with that name, or the free plan for an unknown name (a user whose
// plan was removed from the table keeps the most restrictive limits rather than none).
func (t *Table) Lookup(name string) Plan {
	if p, ok := t.byName[name]; ok {
		return p
	}
	return t.byName[Free]
}

// All returns the plans in table order. The slice must not be modified.
func (t *Table) All() []Plan { return t.list }
