package auth

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/internal/testenv"
	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/store"
	"github.com/maula-ai/maula-chat/tools"
	"github.com/pquerna/otp/totp"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// TestDoneMeans runs issue 3's "Done means" script against two instances sharing one MongoDB
// (embedded FerretDB) and one real Redis, through HTTP.
func TestDoneMeans(t *testing.T) {
	ctx := context.Background()
	ms := testenv.Mongo(t)
	rd := testenv.Redis(t)
	clock := newClock()
	logs := new(syncBuffer)
	a := newInstance(t, ms, rd, instanceOpts{clock: clock, logs: logs, adminEmails: []string{"Boss@Example.com"}})
	b := newInstance(t, ms, rd, instanceOpts{clock: clock, logs: logs})

	const password = "correct horse battery"
	// 1. Register: 201 with the user, a token, its expiry, the cookie and 50 plaintext keys.
	reg := must(t, a.do(t, req{method: "POST", path: "/auth/register",
		body: map[string]string{"email": "Alice@Example.COM", "password": password, "name": "Alice"}}), http.StatusCreated)
	token := str(reg.body, "token")
	if token == "" || str(reg.body, "expiresAt") == "" {
		t.Fatalf("register answer lacks token/expiresAt: %s", reg.raw)
	}
	if got := str(reg.body, "user", "email"); got != "alice@example.com" {
		t.Errorf("email = %q, want lower-cased", got)
	}
	if strings.Contains(reg.raw, `"password"`) || strings.Contains(reg.raw, "twoFactorSecret") {
		t.Errorf("register answer leaks the password hash or TOTP secret: %s", reg.raw)
	}
	cookie := sessionCookie(t, reg.header)
	if cookie.Value != token || !cookie.HttpOnly || cookie.SameSite != http.SameSiteLaxMode || cookie.Path != "/" {
		t.Errorf("cookie = %+v, want the token, HttpOnly, SameSite=Lax, Path=/", cookie)
	}
	keys := map[string]string{} // tool -> key text
	keyIDs := map[string]string{}
	rawKeys, _ := reg.body["apiKeys"].([]any)
	keyRe := regexp.MustCompile(`^mk_([a-z0-9]+)_[0-9A-Za-z]{43}$`)
	for _, k := range rawKeys {
		m := k.(map[string]any)
		text, tool := m["key"].(string), m["toolName"].(string)
		if mm := keyRe.FindStringSubmatch(text); mm == nil || mm[1] != tool {
			t.Errorf("key %q does not look like mk_%s_<43 base62>", text, tool)
		}
		keys[tool], keyIDs[tool] = text, m["id"].(string)
	}
	if len(keys) != len(tools.Default().All()) || len(keys) != 50 {
		t.Fatalf("got %d distinct tool keys, want 50", len(keys))
	}
	if sub, _ := reg.body["subscription"].(map[string]any); str(sub, "plan") != "free" {
		t.Errorf("subscription = %v, want a free plan", reg.body["subscription"])
	}

	// The verification mail carries a link that verifies the address.
	<-a.mail.got
	link := regexp.MustCompile(`https?://\S+/auth/verify\?token=\S+`).FindString(a.mail.sent[0])
	u, err := url.Parse(link)
	if err != nil || link == "" {
		t.Fatalf("no verification link in %q", a.mail.sent[0])
	}
	must(t, a.do(t, req{method: "GET", path: "/auth/verify?token=" + url.QueryEscape(u.Query().Get("token"))}), http.StatusOK)
	me := must(t, a.do(t, req{method: "GET", path: "/auth/me", token: token}), http.StatusOK)
	if v, _ := me.body["user"].(map[string]any)["emailVerified"].(bool); !v {
		t.Errorf("emailVerified false after verify: %s", me.raw)
	}
	if str(me.body, "auth", "method") != "session" {
		t.Errorf("auth.method = %q, want session", str(me.body, "auth", "method"))
	}

	// 2. Read the 50 keys (hashes never served).
	list := must(t, a.do(t, req{method: "GET", path: "/auth/api-keys", token: token}), http.StatusOK)
	if n := len(list.body["apiKeys"].([]any)); n != 50 {
		t.Errorf("GET /auth/api-keys lists %d keys, want 50", n)
	}
	for _, text := range keys {
		if strings.Contains(list.raw, text) || strings.Contains(list.raw, hashToken(text)) {
			t.Fatal("GET /auth/api-keys shows a key text or hash")
		}
	}

	// 3. Log in on the other instance; duplicate registration is 409 whatever the case.
	login := must(t, b.do(t, req{method: "POST", path: "/auth/login", body: map[string]string{"email": "ALICE@example.com", "password": password}}), http.StatusOK)
	token2 := str(login.body, "token")
	dup := a.do(t, req{method: "POST", path: "/auth/register", body: map[string]string{"email": "alice@EXAMPLE.com", "password": password}})
	if dup.status != http.StatusConflict || dup.errCode() != "email_taken" {
		t.Errorf("duplicate register = %d %s, want 409 email_taken", dup.status, dup.raw)
	}

	// 4. /auth/me with the token, with the cookie, and with every tool's key on its tool.
	for _, in := range []*instance{a, b} {
		must(t, in.do(t, req{method: "GET", path: "/auth/me", token: token}), http.StatusOK)
		c := must(t, in.do(t, req{method: "GET", path: "/auth/me", cookie: token}), http.StatusOK)
		if str(c.body, "auth", "method") != "cookie" {
			t.Errorf("cookie auth method = %q", str(c.body, "auth", "method"))
		}
	}
	i := 0
	for tool, key := range keys {
		in := []*instance{a, b}[i%2]
		i++
		q := req{method: "GET", path: "/auth/me?tool=" + tool, apiKey: key}
		if i%3 == 0 { // the other accepted form
			q.apiKey, q.token = "", key
		}
		r := must(t, in.do(t, q), http.StatusOK)
		if str(r.body, "auth", "tool") != tool || str(r.body, "auth", "method") != "api_key" {
			t.Fatalf("key of %s authenticated as %s", tool, r.raw)
		}
		if r.header.Get("X-RateLimit-Limit") == "" {
			t.Errorf("no X-RateLimit-Limit on an API key answer")
		}
	}
	// A key on another tool: 403, by query, by header.
	for _, q := range []req{
		{method: "GET", path: "/auth/me?tool=fraudguard", apiKey: keys["ipintel"]},
		{method: "GET", path: "/auth/me", apiKey: keys["ipintel"], hdr: map[string]string{ToolHeader: "botshield"}},
	} {
		if r := a.do(t, q); r.status != http.StatusForbidden || r.errCode() != "wrong_tool" {
			t.Errorf("key on another tool = %d %s, want 403 wrong_tool", r.status, r.raw)
		}
	}
	// Keys cannot manage the account.
	if r := a.do(t, req{method: "GET", path: "/auth/api-keys", apiKey: keys["ipintel"]}); r.status != http.StatusForbidden {
		t.Errorf("key listing keys = %d, want 403", r.status)
	}

	// 5. A deleted key is refused on both instances (b had it cached: pub/sub drops it).
	must(t, b.do(t, req{method: "GET", path: "/auth/me", apiKey: keys["georisk"]}), http.StatusOK)
	must(t, a.do(t, req{method: "DELETE", path: "/auth/api-keys/" + keyIDs["georisk"], token: token}), http.StatusOK)
	b.waitInvalidation(t, "key", hashToken(keys["georisk"]))
	for _, in := range []*instance{a, b} {
		if r := in.do(t, req{method: "GET", path: "/auth/me", apiKey: keys["georisk"]}); r.status != http.StatusUnauthorized {
			t.Errorf("deleted key = %d %s, want 401", r.status, r.raw)
		}
	}
	if r := a.do(t, req{method: "DELETE", path: "/auth/api-keys/" + keyIDs["georisk"], token: token}); r.status != http.StatusNotFound {
		t.Errorf("second delete = %d, want 404", r.status)
	}

	// Rotation: the old text stops, the new one works, the id stays.
	must(t, b.do(t, req{method: "GET", path: "/auth/me", apiKey: keys["vpndetect"]}), http.StatusOK)
	rot := must(t, a.do(t, req{method: "POST", path: "/auth/api-keys/" + keyIDs["vpndetect"] + "/rotate", token: token}), http.StatusOK)
	newKey := str(rot.body, "apiKey", "key")
	if str(rot.body, "apiKey", "id") != keyIDs["vpndetect"] || newKey == keys["vpndetect"] {
		t.Errorf("rotate answer %s", rot.raw)
	}
	b.waitInvalidation(t, "key", hashToken(keys["vpndetect"]))
	if r := b.do(t, req{method: "GET", path: "/auth/me", apiKey: keys["vpndetect"]}); r.status != http.StatusUnauthorized {
		t.Errorf("rotated-out key = %d, want 401", r.status)
	}
	must(t, b.do(t, req{method: "GET", path: "/auth/me", apiKey: newKey}), http.StatusOK)
	keys["vpndetect"] = newKey

	// 6. An expiring key works until its expiry, then is refused (injected clock).
	exp := must(t, a.do(t, req{method: "POST", path: "/auth/api-keys", token: token, body: map[string]any{
		"toolName": "ipintel", "name": "short-lived", "permissions": []string{"read"},
		"expiresAt": clock.Now().Add(time.Hour).UTC().Format(time.RFC3339)}}), http.StatusCreated)
	expKey := str(exp.body, "apiKey", "key")
	must(t, b.do(t, req{method: "GET", path: "/auth/me?tool=ipintel", apiKey: expKey}), http.StatusOK)
	if r := b.do(t, req{method: "POST", path: "/auth/logout", apiKey: expKey}); r.status != http.StatusForbidden || r.errCode() != "insufficient_permission" {
		t.Errorf("read-only key on POST = %d %s, want 403 insufficient_permission", r.status, r.raw)
	}
	clock.Advance(2 * time.Hour)
	for _, in := range []*instance{a, b} {
		if r := in.do(t, req{method: "GET", path: "/auth/me", apiKey: expKey}); r.status != http.StatusUnauthorized || r.errCode() != "api_key_expired" {
			t.Errorf("expired key = %d %s, want 401 api_key_expired", r.status, r.raw)
		}
	}

	// 7. Per-minute key limit: exactly N of N+3 pass, alternating between the instances.
	t.Run("key per-minute limit across instances", func(t *testing.T) {
		const limit = 7
		exactlyN(t, limit, func(attempt int) (allowed int, denied answer, resets []string) {
			k := must(t, a.do(t, req{method: "POST", path: "/auth/api-keys", token: token, body: map[string]any{
				"toolName": "botshield", "name": fmt.Sprint("limited-", attempt),
				"rateLimit": map[string]int{"requestsPerMinute": limit, "requestsPerDay": 1000}}}), http.StatusCreated)
			text := str(k.body, "apiKey", "key")
			for j := range limit + 3 {
				r := []*instance{a, b}[j%2].do(t, req{method: "GET", path: "/auth/me", apiKey: text})
				resets = append(resets, r.header.Get("X-RateLimit-Reset"))
				switch r.status {
				case http.StatusOK:
					allowed++
				case http.StatusTooManyRequests:
					denied = r
				default:
					t.Fatalf("limited key: %d %s", r.status, r.raw)
				}
			}
			return allowed, denied, resets
		})
	})

	// 8. Sessions: both listed, one current; revoke the login session from the account page.
	third := str(must(t, a.do(t, req{method: "POST", path: "/auth/login", body: map[string]string{"email": "alice@example.com", "password": password}}), http.StatusOK).body, "token")
	sl := must(t, a.do(t, req{method: "GET", path: "/auth/sessions", token: token}), http.StatusOK)
	sessions := sl.body["sessions"].([]any)
	if len(sessions) != 3 {
		t.Fatalf("GET /auth/sessions lists %d, want 3: %s", len(sessions), sl.raw)
	}
	thirdID := sessionID(t, a.svc, third)
	must(t, b.do(t, req{method: "GET", path: "/auth/me", token: third}), http.StatusOK) // warm b
	must(t, a.do(t, req{method: "DELETE", path: "/auth/sessions/" + thirdID, token: token}), http.StatusOK)
	b.waitInvalidation(t, "session", thirdID)
	if r := b.do(t, req{method: "GET", path: "/auth/me", token: third}); r.status != http.StatusUnauthorized {
		t.Errorf("revoked session on b = %d, want 401", r.status)
	}

	// 9. Two-factor: setup, enable with a code, login asks for it, disable with a code.
	t.Run("two-factor", func(t *testing.T) {
		setup := must(t, a.do(t, req{method: "POST", path: "/auth/2fa/setup", token: token}), http.StatusOK)
		secret := str(setup.body, "secret")
		if !strings.HasPrefix(str(setup.body, "otpauthUri"), "otpauth://totp/") {
			t.Fatalf("otpauth URI = %q", str(setup.body, "otpauthUri"))
		}
		code := func() string {
			clock.Advance(time.Minute) // a fresh time step: each code is accepted once
			c, err := totp.GenerateCode(secret, clock.Now())
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		if r := a.do(t, req{method: "POST", path: "/auth/2fa/enable", token: token, body: map[string]string{"code": "000000"}}); r.status != http.StatusBadRequest {
			t.Errorf("enable with a wrong code = %d, want 400", r.status)
		}
		c := code()
		must(t, a.do(t, req{method: "POST", path: "/auth/2fa/enable", token: token, body: map[string]string{"code": c}}), http.StatusOK)
		creds := map[string]string{"email": "alice@example.com", "password": password}
		if r := b.do(t, req{method: "POST", path: "/auth/login", body: creds}); r.status != http.StatusUnauthorized || r.errCode() != "totp_required" {
			t.Errorf("login without code = %d %s, want 401 totp_required", r.status, r.raw)
		}
		creds["code"] = c // already used
		if r := b.do(t, req{method: "POST", path: "/auth/login", body: creds}); r.status != http.StatusUnauthorized {
			t.Errorf("login with a replayed code = %d, want 401", r.status)
		}
		creds["code"] = code()
		must(t, b.do(t, req{method: "POST", path: "/auth/login", body: creds}), http.StatusOK)
		must(t, a.do(t, req{method: "POST", path: "/auth/2fa/disable", token: token, body: map[string]string{"code": code()}}), http.StatusOK)
		delete(creds, "code")
		must(t, b.do(t, req{method: "POST", path: "/auth/login", body: creds}), http.StatusOK)
	})

	// 10. Admins: MAULA_ADMIN_EMAILS at registration; others get 403.
	if r := a.do(t, req{method: "GET", path: "/admin/ping", token: token}); r.status != http.StatusForbidden {
		t.Errorf("non-admin on admin route = %d, want 403", r.status)
	}
	boss := must(t, a.do(t, req{method: "POST", path: "/auth/register", body: map[string]string{"email": "boss@example.com", "password": password}}), http.StatusCreated)
	if str(boss.body, "user", "role") != "admin" {
		t.Errorf("admin email registered as %q", str(boss.body, "user", "role"))
	}
	must(t, a.do(t, req{method: "GET", path: "/admin/ping", token: str(boss.body, "token")}), http.StatusOK)

	// 11. Chat limit from the plan (free: 10 a minute), shared by both instances.
	t.Run("chat limit", func(t *testing.T) {
		p, err := a.svc.AuthenticateToken(ctx, token)
		if err != nil {
			t.Fatal(err)
		}
		limit := a.svc.Plans().Lookup(p.Plan).ChatMessagesPerMinute
		exactlyN(t, limit, func(attempt int) (int, answer, []string) {
			q := *p
			q.UserID = bson.NewObjectID() // a fresh counter per attempt
			n := 0
			var resets []string
			for j := range limit + 2 {
				d, err := []*instance{a, b}[j%2].svc.AllowChat(ctx, &q)
				if err != nil {
					t.Fatal(err)
				}
				resets = append(resets, strconv.FormatInt(d.Reset.Unix(), 10))
				if d.Allowed {
					n++
				}
			}
			return n, answer{status: http.StatusTooManyRequests, header: http.Header{"Retry-After": {"1"}, "X-Ratelimit-Limit": {"1"}, "X-Ratelimit-Remaining": {"0"}}}, resets
		})
	})

	// 12. Log out on a; the token is refused on b, which had it cached; logout replay is 401.
	must(t, b.do(t, req{method: "GET", path: "/auth/me", token: token}), http.StatusOK)
	sid := sessionID(t, a.svc, token)
	out := must(t, a.do(t, req{method: "POST", path: "/auth/logout", token: token}), http.StatusOK)
	if c := sessionCookie(t, out.header); c.MaxAge >= 0 {
		t.Errorf("logout did not clear the cookie: %+v", c)
	}
	b.waitInvalidation(t, "session", sid)
	for _, in := range []*instance{b, a} {
		for _, q := range []req{{method: "GET", path: "/auth/me", token: token}, {method: "GET", path: "/auth/me", cookie: token}} {
			if r := in.do(t, q); r.status != http.StatusUnauthorized || r.errCode() != "session_revoked" {
				t.Errorf("logged-out token = %d %s, want 401 session_revoked", r.status, r.raw)
			}
		}
	}
	if r := a.do(t, req{method: "POST", path: "/auth/logout", token: token}); r.status != http.StatusUnauthorized {
		t.Errorf("replayed logout = %d, want 401", r.status)
	}
	// A third instance that never saw the token refuses it too (kv and database agree).
	c3 := newInstance(t, ms, rd, instanceOpts{clock: clock, logs: logs})
	if r := c3.do(t, req{method: "GET", path: "/auth/me", token: token}); r.status != http.StatusUnauthorized {
		t.Errorf("fresh instance accepted a logged-out token: %d", r.status)
	}
	must(t, c3.do(t, req{method: "GET", path: "/auth/me", token: token2}), http.StatusOK)

	// 13. Batched writes: flush, then usage counters and api_logs are in the database.
	for _, in := range []*instance{a, b} {
		if err := in.svc.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var ipKey model.APIKey
	oid, _ := bson.ObjectIDFromHex(keyIDs["ipintel"])
	if err := a.svc.keys.FindOne(ctx, bson.D{{Key: "_id", Value: oid}}).Decode(&ipKey); err != nil {
		t.Fatal(err)
	}
	// ipintel's key: one /me on its tool and one authenticated-but-forbidden key listing;
	// the two refused on other tools are not counted.
	if ipKey.Usage.TotalRequests != 2 || ipKey.Usage.LastRequest == nil {
		t.Errorf("ipintel key usage = %+v, want 2 requests with a lastRequest", ipKey.Usage)
	}
	var logsDocs []model.APILog
	cur, err := ms.DB("ipintel-db").Collection(model.CollAPILogs).Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cur.All(ctx, &logsDocs); err != nil {
		t.Fatal(err)
	}
	if len(logsDocs) < 2 { // the default key's /me and the short-lived key's /me
		t.Errorf("ipintel api_logs has %d entries, want at least 2", len(logsDocs))
	}
	for _, l := range logsDocs {
		for h, v := range l.Request.Headers {
			if (strings.EqualFold(h, "X-Api-Key") || strings.EqualFold(h, "Authorization")) && v != redacted {
				t.Errorf("api_logs header %s not redacted: %q", h, v)
			}
		}
	}

	// 14. No plaintext secrets anywhere: database (auth and tool logs) and the process logs.
	secrets := []string{password}
	for _, k := range keys {
		secrets = append(secrets, k)
	}
	dump := dumpDatabases(t, ms, []string{model.AuthDB, "ipintel-db", "botshield-db"})
	for _, sec := range secrets {
		if strings.Contains(dump, sec) {
			t.Errorf("database holds a plaintext secret %.12s...", sec)
		}
		if strings.Contains(logs.String(), sec) {
			t.Errorf("logs hold a plaintext secret %.12s...", sec)
		}
	}
	var users []model.User
	cur, _ = ms.DB(model.AuthDB).Collection(model.CollUsers).Find(ctx, bson.D{})
	_ = cur.All(ctx, &users)
	for _, u := range users {
		if !strings.HasPrefix(u.Password, "$2a$") {
			t.Errorf("user %s password is not a bcrypt hash", u.Email)
		}
	}
	var stored []model.APIKey
	cur, _ = a.svc.keys.Find(ctx, bson.D{})
	_ = cur.All(ctx, &stored)
	hexRe := regexp.MustCompile(`^[0-9a-f]{64}$`)
	for _, k := range stored {
		if !hexRe.MatchString(k.Key) || !strings.HasPrefix(k.Prefix, "mk_"+k.ToolName+"_") || len(k.Prefix) > len("mk_"+k.ToolName+"_")+displayLen {
			t.Errorf("stored key %s: key %q prefix %q", k.ID.Hex(), k.Key, k.Prefix)
		}
	}
	var sess []model.Session
	cur, _ = a.svc.sessions.Find(ctx, bson.D{})
	_ = cur.All(ctx, &sess)
	for _, s := range sess {
		if !hexRe.MatchString(s.Token) {
			t.Errorf("session %s token field is not a SHA-256: %q", s.ID.Hex(), s.Token)
		}
	}
}

// exactlyN runs try until one attempt stays inside one rate-limit window (the Reset values it
// saw agree), then asserts exactly n passed and the denial carried the 429 headers. A window
// boundary falling inside an attempt is the only reason to retry; no sleeping is involved.
func exactlyN(t *testing.T, n int, try func(attempt int) (allowed int, denied answer, resets []string)) {
	t.Helper()
	for attempt := range 3 {
		allowed, denied, resets := try(attempt)
		sorted := slices.Clone(resets)
		sort.Strings(sorted)
		if len(slices.Compact(sorted)) > 1 {
			continue // crossed a window boundary: counts are not comparable
		}
		if allowed != n {
			t.Fatalf("%d passed, want exactly %d", allowed, n)
		}
		for _, h := range []string{"Retry-After", "X-Ratelimit-Limit", "X-Ratelimit-Remaining"} {
			if denied.header.Get(h) == "" {
				t.Errorf("429 without %s", h)
			}
		}
		if denied.status == http.StatusTooManyRequests && denied.body != nil && denied.errCode() != "rate_limited" {
			t.Errorf("429 code = %q", denied.errCode())
		}
		return
	}
	t.Fatal("three attempts each crossed a window boundary")
}

func sessionCookie(t *testing.T, h http.Header) *http.Cookie {
	t.Helper()
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.Name == CookieName {
			return c
		}
	}
	t.Fatalf("no %s cookie in %v", CookieName, h["Set-Cookie"])
	return nil
}

func sessionID(t *testing.T, s *Service, tok string) string {
	t.Helper()
	c, err := s.keyring.parse(tok, s.now)
	if err != nil {
		t.Fatal(err)
	}
	return c.ID
}

// dumpDatabases renders every document of the databases as extended JSON.
func dumpDatabases(t *testing.T, ms *store.Store, dbs []string) string {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	for _, name := range dbs {
		db := ms.DB(name)
		colls, err := db.ListCollectionNames(ctx, bson.D{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range colls {
			cur, err := db.Collection(c).Find(ctx, bson.D{})
			if err != nil {
				t.Fatal(err)
			}
			for cur.Next(ctx) {
				j, err := bson.MarshalExtJSON(cur.Current, false, false)
				if err != nil {
					t.Fatal(err)
				}
				b.Write(j)
				b.WriteByte('\n')
			}
			cur.Close(ctx)
		}
	}
	if b.Len() == 0 {
		t.Fatal("database dump is empty")
	}
	return b.String()
}
