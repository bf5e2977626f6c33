package auth

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/maula-ai/maula-chat/internal/testenv"
	"github.com/maula-ai/maula-chat/kv"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// TestHostileInput feeds every route bad input and forged credentials: each must answer a 4xx
// JSON error with a code, never a 5xx.
func TestHostileInput(t *testing.T) {
	ms := testenv.Mongo(t)
	clock := newClock()
	in := newInstance(t, ms, kv.NewMemory(), instanceOpts{clock: clock})
	const password = "a fine long password"
	reg := must(t, in.do(t, req{method: "POST", path: "/auth/register", body: map[string]string{"email": "eve@example.com", "password": password}}), http.StatusCreated)
	token := str(reg.body, "token")
	uid := str(reg.body, "user", "id")
	sid := sessionID(t, in.svc, token)
	kid := in.svc.keyring.current
	sign := func(method jwt.SigningMethod, key any, hdr map[string]any, c jwt.RegisteredClaims) string {
		tk := jwt.NewWithClaims(method, c)
		for k, v := range hdr {
			tk.Header[k] = v
		}
		s, err := tk.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	claims := func(exp time.Time) jwt.RegisteredClaims {
		return jwt.RegisteredClaims{Issuer: issuer, Subject: uid, ID: sid, IssuedAt: jwt.NewNumericDate(clock.Now()), ExpiresAt: jwt.NewNumericDate(exp)}
	}
	later := clock.Now().Add(time.Hour)
	secret := []byte(testSecret)
	other := []byte("another-secret-0123456789-0123456789-xyz")
	parts := strings.Split(token, ".")
	tampered := parts[0] + "." + strings.TrimRight(parts[1], "A") + "B." + parts[2]
	big := `{"email":"` + strings.Repeat("x", 70<<10) + `@example.com","password":"0123456789"}`

	cases := []struct {
		name   string
		q      req
		status int
		code   string
	}{
		{"register unknown field", req{method: "POST", path: "/auth/register", body: `{"email":"x@example.com","password":"0123456789","admin":true}`}, 400, "unknown_field"},
		{"register wrong type", req{method: "POST", path: "/auth/register", body: `{"email":5,"password":"0123456789"}`}, 400, "bad_request"},
		{"register huge body", req{method: "POST", path: "/auth/register", body: big}, 413, "too_large"},
		{"register malformed", req{method: "POST", path: "/auth/register", body: `{"email":`}, 400, "bad_json"},
		{"register not json", req{method: "POST", path: "/auth/register", body: `email=x`}, 400, "bad_json"},
		{"register empty", req{method: "POST", path: "/auth/register", body: ``}, 400, "bad_request"},
		{"register two values", req{method: "POST", path: "/auth/register", body: `{} {}`}, 400, "bad_request"},
		{"register array", req{method: "POST", path: "/auth/register", body: `[]`}, 400, "bad_request"},
		{"register bad email", req{method: "POST", path: "/auth/register", body: `{"email":"not an email","password":"0123456789"}`}, 400, "invalid_email"},
		{"register display-name email", req{method: "POST", path: "/auth/register", body: `{"email":"Eve <eve2@example.com>","password":"0123456789"}`}, 400, "invalid_email"},
		{"register short password", req{method: "POST", path: "/auth/register", body: `{"email":"s@example.com","password":"short"}`}, 400, "invalid_password"},
		{"register 73-byte password", req{method: "POST", path: "/auth/register", body: `{"email":"l@example.com","password":"` + strings.Repeat("p", 73) + `"}`}, 400, "invalid_password"},
		{"register duplicate", req{method: "POST", path: "/auth/register", body: `{"email":"EVE@example.com","password":"0123456789"}`}, 409, "email_taken"},
		{"login unknown field", req{method: "POST", path: "/auth/login", body: `{"email":"eve@example.com","password":"x","remember":true}`}, 400, "unknown_field"},
		{"login wrong type", req{method: "POST", path: "/auth/login", body: `{"email":"eve@example.com","password":123}`}, 400, "bad_request"},
		{"login missing password", req{method: "POST", path: "/auth/login", body: `{"email":"eve@example.com"}`}, 400, "bad_request"},
		{"login null", req{method: "POST", path: "/auth/login", body: `null`}, 400, "bad_request"},
		{"me without credentials", req{method: "GET", path: "/auth/me"}, 401, "unauthorized"},
		{"me basic auth", req{method: "GET", path: "/auth/me", hdr: map[string]string{"Authorization": "Basic dXNlcjpwdw=="}}, 401, "invalid_authorization"},
		{"me empty bearer", req{method: "GET", path: "/auth/me", hdr: map[string]string{"Authorization": "Bearer "}}, 401, "invalid_authorization"},
		{"me garbage token", req{method: "GET", path: "/auth/me", token: "abc.def.ghi"}, 401, "invalid_token"},
		{"me alg none", req{method: "GET", path: "/auth/me", token: sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, map[string]any{"kid": kid}, claims(later))}, 401, "invalid_token"},
		{"me alg HS512 same secret", req{method: "GET", path: "/auth/me", token: sign(jwt.SigningMethodHS512, secret, map[string]any{"kid": kid}, claims(later))}, 401, "invalid_token"},
		{"me other secret, real kid", req{method: "GET", path: "/auth/me", token: sign(jwt.SigningMethodHS256, other, map[string]any{"kid": kid}, claims(later))}, 401, "invalid_token"},
		{"me other secret, own kid", req{method: "GET", path: "/auth/me", token: sign(jwt.SigningMethodHS256, other, map[string]any{"kid": kidOf(other)}, claims(later))}, 401, "invalid_token"},
		{"me no kid", req{method: "GET", path: "/auth/me", token: sign(jwt.SigningMethodHS256, secret, nil, claims(later))}, 401, "invalid_token"},
		{"me kid not a string", req{method: "GET", path: "/auth/me", token: sign(jwt.SigningMethodHS256, secret, map[string]any{"kid": 7}, claims(later))}, 401, "invalid_token"},
		{"me expired", req{method: "GET", path: "/auth/me", token: sign(jwt.SigningMethodHS256, secret, map[string]any{"kid": kid}, claims(clock.Now().Add(-time.Minute)))}, 401, "token_expired"},
		{"me tampered payload", req{method: "GET", path: "/auth/me", token: tampered}, 401, "invalid_token"},
		{"me forged session id", req{method: "GET", path: "/auth/me", token: func() string {
			c := claims(later)
			c.ID = bson.NewObjectID().Hex()
			return sign(jwt.SigningMethodHS256, secret, map[string]any{"kid": kid}, c)
		}()}, 401, "session_revoked"},
		{"me session of another user", req{method: "GET", path: "/auth/me", token: func() string {
			c := claims(later)
			c.Subject = bson.NewObjectID().Hex()
			return sign(jwt.SigningMethodHS256, secret, map[string]any{"kid": kid}, c)
		}()}, 401, "invalid_token"},
		{"me malformed key", req{method: "GET", path: "/auth/me", apiKey: "mk_ipintel_short"}, 401, "invalid_api_key"},
		{"me key of unknown tool", req{method: "GET", path: "/auth/me", apiKey: "mk_nosuchtool_" + strings.Repeat("a", keyRandLen)}, 401, "invalid_api_key"},
		{"me unknown key", req{method: "GET", path: "/auth/me", token: "mk_ipintel_" + strings.Repeat("a", keyRandLen)}, 401, "invalid_api_key"},
		{"me key with bad chars", req{method: "GET", path: "/auth/me", apiKey: "mk_ipintel_" + strings.Repeat("-", keyRandLen)}, 401, "invalid_api_key"},
		{"cookie cross-site logout", req{method: "POST", path: "/auth/logout", cookie: token, hdr: map[string]string{"Origin": "https://evil.example"}}, 403, "bad_origin"},
		{"key create unknown tool", req{method: "POST", path: "/auth/api-keys", token: token, body: `{"toolName":"nope"}`}, 400, "unknown_tool"},
		{"key create bad permission", req{method: "POST", path: "/auth/api-keys", token: token, body: `{"toolName":"ipintel","permissions":["admin"]}`}, 400, "invalid_permission"},
		{"key create above plan", req{method: "POST", path: "/auth/api-keys", token: token, body: `{"toolName":"ipintel","rateLimit":{"requestsPerMinute":100000,"requestsPerDay":100000}}`}, 400, "invalid_rate_limit"},
		{"key create past expiry", req{method: "POST", path: "/auth/api-keys", token: token, body: `{"toolName":"ipintel","expiresAt":"2001-01-01T00:00:00Z"}`}, 400, "invalid_expiry"},
		{"key create bad date", req{method: "POST", path: "/auth/api-keys", token: token, body: `{"toolName":"ipintel","expiresAt":"tomorrow"}`}, 400, "bad_request"},
		{"key create huge", req{method: "POST", path: "/auth/api-keys", token: token, body: `{"toolName":"` + strings.Repeat("a", 70<<10) + `"}`}, 413, "too_large"},
		{"key rotate bad id", req{method: "POST", path: "/auth/api-keys/zzz/rotate", token: token}, 404, "not_found"},
		{"key rotate unknown id", req{method: "POST", path: "/auth/api-keys/" + bson.NewObjectID().Hex() + "/rotate", token: token}, 404, "not_found"},
		{"key delete bad id", req{method: "DELETE", path: "/auth/api-keys/%00", token: token}, 404, "not_found"},
		{"session delete unknown", req{method: "DELETE", path: "/auth/sessions/" + bson.NewObjectID().Hex(), token: token}, 404, "not_found"},
		{"session delete bad id", req{method: "DELETE", path: "/auth/sessions/x", token: token}, 404, "not_found"},
		{"verify no token", req{method: "GET", path: "/auth/verify"}, 400, "invalid_token"},
		{"verify forged", req{method: "GET", path: "/auth/verify?token=AAAAAAAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAA"}, 400, "invalid_token"},
		{"verify junk", req{method: "GET", path: "/auth/verify?token=" + strings.Repeat("%FF", 100)}, 400, "invalid_token"},
		{"2fa enable before setup", req{method: "POST", path: "/auth/2fa/enable", token: token, body: `{"code":"123456"}`}, 409, "totp_setup_required"},
		{"2fa disable when off", req{method: "POST", path: "/auth/2fa/disable", token: token, body: `{"code":"123456"}`}, 409, "totp_disabled"},
		{"2fa enable wrong type", req{method: "POST", path: "/auth/2fa/enable", token: token, body: `{"code":123456}`}, 400, "bad_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := in.do(t, c.q)
			if a.status != c.status || a.errCode() != c.code {
				t.Fatalf("= %d %s, want %d %s", a.status, a.raw, c.status, c.code)
			}
			if ct := a.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}

	// The verification token of one user does not verify after expiry.
	t.Run("verify expired", func(t *testing.T) {
		oid, _ := bson.ObjectIDFromHex(uid)
		tok := in.svc.verificationToken(oid, clock.Now().Add(-time.Second))
		if a := in.do(t, req{method: "GET", path: "/auth/verify?token=" + tok}); a.status != 400 || a.errCode() != "token_expired" {
			t.Errorf("= %d %s", a.status, a.raw)
		}
	})

	// Logout, then the same token and a replayed logout are 401, never 5xx.
	t.Run("replayed logout", func(t *testing.T) {
		must(t, in.do(t, req{method: "POST", path: "/auth/logout", token: token}), 200)
		for range 2 {
			if a := in.do(t, req{method: "POST", path: "/auth/logout", token: token}); a.status != 401 || a.errCode() != "session_revoked" {
				t.Errorf("= %d %s", a.status, a.raw)
			}
		}
	})

	// Expiry by the clock: a session token is refused once its exp passes.
	t.Run("session expiry", func(t *testing.T) {
		l := must(t, in.do(t, req{method: "POST", path: "/auth/login", body: map[string]string{"email": "eve@example.com", "password": password}}), 200)
		tok := str(l.body, "token")
		must(t, in.do(t, req{method: "GET", path: "/auth/me", token: tok}), 200)
		clock.Advance(in.svc.o.SessionTTL + time.Second)
		if a := in.do(t, req{method: "GET", path: "/auth/me", token: tok}); a.status != 401 || a.errCode() != "token_expired" {
			t.Errorf("= %d %s", a.status, a.raw)
		}
	})

	t.Run("login limit per email and IP", func(t *testing.T) {
		creds := map[string]string{"email": "victim@example.com", "password": "wrong password!"}
		for i := range in.svc.o.LoginAttempts {
			if a := in.do(t, req{method: "POST", path: "/auth/login", body: creds}); a.status != 401 {
				t.Fatalf("attempt %d = %d", i, a.status)
			}
		}
		a := in.do(t, req{method: "POST", path: "/auth/login", body: creds})
		if a.status != 429 || a.errCode() != "rate_limited" || a.header.Get("Retry-After") == "" || a.header.Get("X-RateLimit-Reset") == "" {
			t.Fatalf("= %d %v %s", a.status, a.header, a.raw)
		}
		// Another email from the same address is not affected.
		creds["email"] = "other@example.com"
		if a := in.do(t, req{method: "POST", path: "/auth/login", body: creds}); a.status != 401 {
			t.Errorf("other email = %d", a.status)
		}
	})

	// Unknown email and wrong password: the same answer, and comparable time (both pay one
	// bcrypt comparison at the configured cost).
	t.Run("login answers indistinguishable", func(t *testing.T) {
		// Interleaved samples, so a load spike on this shared machine hits both sides alike;
		// the medians are compared, and a noisy round is measured again (at most 3 rounds).
		login := func(email string) (time.Duration, answer) {
			start := time.Now()
			a := in.do(t, req{method: "POST", path: "/auth/login", body: map[string]string{"email": email, "password": "not the password"}})
			return time.Since(start), a
		}
		median := func(ds []time.Duration) time.Duration {
			sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
			return ds[len(ds)/2]
		}
		var ratio float64
		for round := range 3 {
			var wrongDs, unknownDs []time.Duration
			for range 3 { // eve: 1 earlier login + 3 rounds x 3 stays within the 10-per-window limit
				d, wrong := login("eve@example.com")
				wrongDs = append(wrongDs, d)
				d, unknown := login(fmt.Sprintf("nobody%d@example.com", round))
				unknownDs = append(unknownDs, d)
				if wrong.status != unknown.status || wrong.raw != unknown.raw {
					t.Fatalf("answers differ:\n wrong password: %d %s\n unknown email:  %d %s", wrong.status, wrong.raw, unknown.status, unknown.raw)
				}
			}
			wrongT, unknownT := median(wrongDs), median(unknownDs)
			ratio = float64(max(wrongT, unknownT)) / float64(min(wrongT, unknownT))
			t.Logf("round %d: median login time: wrong password %v, unknown email %v", round, wrongT, unknownT)
			if ratio <= 2 {
				return
			}
		}
		t.Errorf("timing differs %.1fx after 3 rounds", ratio)
	})

	// The dummy hash costs what a real one does.
	t.Run("dummy hash cost", func(t *testing.T) {
		if !strings.HasPrefix(string(in.svc.dummy), "$2a$04$") {
			t.Errorf("dummy hash %q is not at cost 4", in.svc.dummy)
		}
	})
}
