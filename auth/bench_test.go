package auth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/maula-ai/maula-chat/internal/testenv"
	"github.com/maula-ai/maula-chat/kv"
)

// benchSetup registers a user and returns the instance, a session token and an ipintel key,
// with both already validated once (the caches are warm).
func benchSetup(b *testing.B) (*instance, string, string) {
	b.Helper()
	in := newInstance(b, testenv.Mongo(b), kv.NewMemory(), instanceOpts{})
	reg, err := in.svc.CreateUser(context.Background(), NewUser{Email: "bench@example.com", Password: "benchmark password"}, false)
	if err != nil {
		b.Fatal(err)
	}
	tok, _, err := in.svc.createSession(context.Background(), reg.User, httptest.NewRequest("POST", "/auth/login", nil))
	if err != nil {
		b.Fatal(err)
	}
	var key string
	for _, k := range reg.Keys {
		if k.ToolName == "ipintel" {
			key = k.Key
		}
	}
	// Give the key a limit no benchmark reaches.
	if _, err := in.svc.keys.UpdateMany(context.Background(), map[string]any{"userId": reg.User.ID},
		map[string]any{"$set": map[string]any{"rateLimit.requestsPerMinute": 1 << 30, "rateLimit.requestsPerDay": 1 << 30}}); err != nil {
		b.Fatal(err)
	}
	return in, tok, key
}

// BenchmarkAuthenticateSessionWarm is the cost of validating a session bearer token with warm
// caches: HS256 verification, the SHA-256 binding check and one in-process LRU lookup. The
// issue's target is under 20 µs per request on one core: run with -cpu 1.
func BenchmarkAuthenticateSessionWarm(b *testing.B) {
	in, tok, _ := benchSetup(b)
	r := httptest.NewRequest(http.MethodGet, "/auth/me", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	if _, err := in.svc.Authenticate(r); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := in.svc.Authenticate(r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticateCookieWarm is the browser path: the same token from the cookie.
func BenchmarkAuthenticateCookieWarm(b *testing.B) {
	in, tok, _ := benchSetup(b)
	r := httptest.NewRequest(http.MethodGet, "/auth/me", nil)
	r.AddCookie(&http.Cookie{Name: CookieName, Value: tok})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := in.svc.Authenticate(r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticateAPIKeyWarm is an API key request with warm caches on the in-process
// kv: the LRU lookup plus the per-minute and per-day limiters and the usage counter (on Redis
// each of those three is a round trip, which dominates).
func BenchmarkAuthenticateAPIKeyWarm(b *testing.B) {
	in, _, key := benchSetup(b)
	r := httptest.NewRequest(http.MethodGet, "/auth/me?tool=ipintel", nil)
	r.Header.Set("X-API-Key", key)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := in.svc.Authenticate(r); err != nil {
			b.Fatal(err)
		}
	}
}
