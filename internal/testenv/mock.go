package testenv

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/providers"
	"github.com/maula-ai/maula-chat/providers/mockllm"
)

// MockLLM starts the fake upstream with opts and returns it with a provider registry whose
// five providers all point at it (and echo enabled), as a deployment would with real keys.
func MockLLM(t testing.TB, opts mockllm.Options) (*providers.Registry, *mockllm.Server) {
	t.Helper()
	mock := mockllm.New(opts)
	srv := httptest.NewServer(mock)
	t.Cleanup(srv.Close)
	cfg := providers.ConfigFromEnv(func(string) string { return "" })
	for name, base := range map[string]string{"claude": srv.URL, "gpt": srv.URL + "/v1", "grok": srv.URL + "/v1",
		"mistral": srv.URL + "/v1", "gemini": srv.URL} {
		pc := cfg.Providers[name]
		pc.APIKey, pc.BaseURL = "test-key-"+name, base
		cfg.Providers[name] = pc
	}
	cfg.Echo = true
	cfg.EchoDelay = -1
	cfg.HTTPClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	cfg.Retry = providers.RetryPolicy{MaxAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond,
		MaxTotal: 5 * time.Second, MaxRetryWait: time.Second}
	reg, err := providers.NewRegistry(cfg, providers.DefaultPrices())
	if err != nil {
		t.Fatal(err)
	}
	return reg, mock
}
