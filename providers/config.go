package providers

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ProviderNames lists the upstream providers in display order; "echo" is
// the offline provider and comes last.
var ProviderNames = []string{"claude", "gpt", "grok", "mistral", "gemini", "echo"}

// ProviderConfig configures one provider.
type ProviderConfig struct {
	APIKey       string // empty = provider unavailable (echo: Enabled decides)
	BaseURL      string // "" = the provider's public endpoint
	DefaultModel string
	Fallback     []string // providers to try, in order, when this one fails before the first token
}

// RetryPolicy bounds retries before the first token.
type RetryPolicy struct {
	MaxAttempts  int           // attempts per provider, including the first
	BaseDelay    time.Duration // first backoff; doubles each attempt, with jitter
	MaxDelay     time.Duration // cap of one backoff
	MaxTotal     time.Duration // cap of all attempts and waits of one call, fallbacks included
	MaxRetryWait time.Duration // a Retry-After longer than this skips to the fallback instead of waiting
}

// DefaultRetryPolicy is used for zero fields of Config.Retry.
var DefaultRetryPolicy = RetryPolicy{
	MaxAttempts:  3,
	BaseDelay:    250 * time.Millisecond,
	MaxDelay:     4 * time.Second,
	MaxTotal:     30 * time.Second,
	MaxRetryWait: 10 * time.Second,
}

// Config holds keys, endpoints, default models, fallback chains, the retry
// policy and the echo switch. Build it with ConfigFromEnv or by hand.
type Config struct {
	Providers  map[string]ProviderConfig // keyed by provider name
	Retry      RetryPolicy
	Echo       bool          // MAULA_ECHO_PROVIDER: the offline echo provider is available
	EchoDelay  time.Duration // pause between echo words; 0 = DefaultEchoDelay, <0 = none
	PricesPath string        // MAULA_PRICES: price file replacing the embedded one
	// HTTPClient, when set, provides the transport for every adapter (tests,
	// proxies). Retry-After capture is layered on top of it.
	HTTPClient *http.Client
}

// Default models per provider, used when MAULA_DEFAULT_MODEL_<PROVIDER> is unset.
var defaultModels = map[string]string{
	"claude":  "claude-sonnet-4-5",
	"gpt":     "gpt-5-mini",
	"grok":    "grok-4-fast",
	"mistral": "mistral-medium-latest",
	"gemini":  "gemini-2.5-flash",
	"echo":    "echo-1",
}

// envNames maps each provider to the prefix of its key and URL variables.
var envNames = map[string]string{
	"claude":  "ANTHROPIC",
	"gpt":     "OPENAI",
	"grok":    "XAI",
	"mistral": "MISTRAL",
	"gemini":  "GEMINI",
}

// ConfigFromEnv reads the configuration from environment variables:
// <P>_API_KEY and <P>_BASE_URL for P in ANTHROPIC, OPENAI, XAI, MISTRAL,
// GEMINI; MAULA_ECHO_PROVIDER (1/true/on); MAULA_ECHO_DELAY (duration);
// MAULA_PRICES (path); MAULA_DEFAULT_MODEL_<PROVIDER> and
// MAULA_FALLBACK_<PROVIDER>=other,other with PROVIDER in CLAUDE, GPT, GROK,
// MISTRAL, GEMINI, ECHO; MAULA_RETRY_ATTEMPTS.
func ConfigFromEnv(getenv func(string) string) Config {
	cfg := Config{Providers: map[string]ProviderConfig{}, Retry: DefaultRetryPolicy}
	for _, name := range ProviderNames {
		pc := ProviderConfig{DefaultModel: defaultModels[name]}
		if pre, ok := envNames[name]; ok {
			pc.APIKey = strings.TrimSpace(getenv(pre + "_API_KEY"))
			pc.BaseURL = strings.TrimSpace(getenv(pre + "_BASE_URL"))
		}
		up := strings.ToUpper(name)
		if m := strings.TrimSpace(getenv("MAULA_DEFAULT_MODEL_" + up)); m != "" {
			pc.DefaultModel = m
		}
		for _, f := range strings.Split(getenv("MAULA_FALLBACK_"+up), ",") {
			if f = strings.ToLower(strings.TrimSpace(f)); f != "" && f != name {
				pc.Fallback = append(pc.Fallback, f)
			}
		}
		cfg.Providers[name] = pc
	}
	cfg.Echo = isOn(getenv("MAULA_ECHO_PROVIDER"))
	if d, err := time.ParseDuration(getenv("MAULA_ECHO_DELAY")); err == nil {
		cfg.EchoDelay = d
	}
	cfg.PricesPath = strings.TrimSpace(getenv("MAULA_PRICES"))
	if n, err := strconv.Atoi(getenv("MAULA_RETRY_ATTEMPTS")); err == nil && n > 0 {
		cfg.Retry.MaxAttempts = n
	}
	return cfg
}

func isOn(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "on", "yes":
		return true
	}
	return false
}

// retry returns the policy with defaults filled in.
func (c Config) retry() RetryPolicy {
	r, d := c.Retry, DefaultRetryPolicy
	if r.MaxAttempts <= 0 {
		r.MaxAttempts = d.MaxAttempts
	}
	if r.BaseDelay <= 0 {
		r.BaseDelay = d.BaseDelay
	}
	if r.MaxDelay <= 0 {
		r.MaxDelay = d.MaxDelay
	}
	if r.MaxTotal <= 0 {
		r.MaxTotal = d.MaxTotal
	}
	if r.MaxRetryWait <= 0 {
		r.MaxRetryWait = d.MaxRetryWait
	}
	return r
}

// provider returns the config of name with the default model filled in.
func (c Config) provider(name string) ProviderConfig {
	pc := c.Providers[name]
	if pc.DefaultModel == "" {
		pc.DefaultModel = defaultModels[name]
	}
	return pc
}
