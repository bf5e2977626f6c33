package auth

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestLRUTombstones(t *testing.T) {
	c := newLRU[int](3)
	c.Add("a", 1)
	c.Tombstone("a")
	c.Add("a", 2) // a stale load after a revocation must not resurrect the entry
	if _, ok, tomb := c.Get("a"); ok || !tomb {
		t.Fatalf("a: ok=%v tomb=%v, want tombstoned", ok, tomb)
	}
	c.Add("b", 1)
	c.Add("c", 1)
	c.Add("d", 1) // evicts the least recently used: a
	if c.Len() != 3 {
		t.Fatalf("len %d", c.Len())
	}
	if _, ok, tomb := c.Get("a"); ok || tomb {
		t.Errorf("a should be evicted")
	}
	c.RemoveIf(func(v int) bool { return v == 1 })
	if c.Len() != 0 {
		t.Errorf("RemoveIf left %d", c.Len())
	}
}

func TestParseKey(t *testing.T) {
	text, hash, prefix, err := generateKey("ipintel")
	if err != nil {
		t.Fatal(err)
	}
	if len(hash) != 64 || !strings.HasPrefix(text, prefix) || len(prefix) != len("mk_ipintel_")+displayLen {
		t.Fatalf("text %q hash %q prefix %q", text, hash, prefix)
	}
	cases := []struct {
		in   string
		tool string
		ok   bool
	}{
		{text, "ipintel", true},
		{"mk_ipintel_" + strings.Repeat("Z", keyRandLen), "ipintel", true},
		{"mk_ipintel_" + strings.Repeat("Z", keyRandLen-1), "", false},
		{"mk_ipintel_" + strings.Repeat("_", keyRandLen), "", false},
		{"mk__" + strings.Repeat("a", keyRandLen), "", false},
		{"mk_ipintel", "", false},
		{"xx_ipintel_" + strings.Repeat("a", keyRandLen), "", false},
		{"", "", false},
	}
	for _, c := range cases {
		tool, ok := parseKey(c.in)
		if ok != c.ok || tool != c.tool {
			t.Errorf("parseKey(%q) = %q,%v want %q,%v", c.in, tool, ok, c.tool, c.ok)
		}
	}
	// 1000 keys: all distinct, all the fixed length.
	seen := map[string]bool{}
	for range 1000 {
		k, _, _, _ := generateKey("x")
		if seen[k] || len(k) != len("mk_x_")+keyRandLen {
			t.Fatalf("bad or repeated key %q", k)
		}
		seen[k] = true
	}
}

func TestSecretFile(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	got := make([]string, 4)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := loadOrCreateSecret(dir)
			if err != nil {
				t.Error(err)
			}
			got[i] = s
		}()
	}
	wg.Wait()
	for _, s := range got {
		if s != got[0] || len(s) < 32 {
			t.Fatalf("instances disagree on the generated secret: %q", got)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, secretFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("secret file mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := loadOrCreateSecret(""); err == nil {
		t.Error("no data dir should be an error")
	}
}

func TestKeyringRotation(t *testing.T) {
	now := time.Now()
	oldSecret := strings.Repeat("o", 32)
	old, err := newKeyring(oldSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := old.sign("s1", "u1", now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := newKeyring(strings.Repeat("n", 32), []string{oldSecret})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rotated.parse(tok, func() time.Time { return now }); err != nil {
		t.Errorf("token of the previous secret refused after rotation: %v", err)
	}
	fresh, _ := newKeyring(strings.Repeat("n", 32), nil)
	if _, err := fresh.parse(tok, func() time.Time { return now }); err == nil {
		t.Error("token of a dropped secret accepted")
	}
	newTok, _ := rotated.sign("s2", "u1", now, now.Add(time.Hour))
	p, _, _ := jwt.NewParser().ParseUnverified(newTok, &jwt.RegisteredClaims{})
	if p.Header["kid"] != rotated.current || rotated.current == old.current {
		t.Errorf("new tokens must carry the new kid")
	}
	if _, err := newKeyring("short", nil); err == nil {
		t.Error("short secret accepted")
	}
}

func TestRedaction(t *testing.T) {
	r := httptest.NewRequest("GET", "/x?tool=ipintel&token=abc&q=mk_ipintel_zzz", nil)
	r.Header.Set("Authorization", "Bearer x")
	r.Header.Set("X-API-Key", "mk_a_b")
	r.Header.Set("Cookie", "maula_session=x")
	r.Header.Set("X-Custom", "has mk_ipintel_secret inside")
	r.Header.Set("Accept", "application/json")
	h := redactHeaders(r.Header)
	for _, k := range []string{"Authorization", "X-Api-Key", "Cookie", "X-Custom"} {
		if h[k] != redacted {
			t.Errorf("header %s = %q, want redacted", k, h[k])
		}
	}
	if h["Accept"] != "application/json" {
		t.Errorf("Accept = %q", h["Accept"])
	}
	p := redactParams(r)
	if p["token"] != redacted || p["q"] != redacted || p["tool"] != "ipintel" {
		t.Errorf("params = %v", p)
	}
}

func TestCanUseTool(t *testing.T) {
	session := &Principal{}
	key := &Principal{Tool: "ipintel"}
	cases := []struct {
		p    *Principal
		tool string
		want bool
	}{
		{session, "ipintel", true},
		{session, "fraudguard", true},
		{key, "ipintel", true},
		{key, "fraudguard", false},
		{key, "", false},
		{nil, "ipintel", false},
	}
	for _, c := range cases {
		if got := c.p.CanUseTool(c.tool); got != c.want {
			t.Errorf("%+v.CanUseTool(%q) = %v", c.p, c.tool, got)
		}
	}
}

func TestPlatformOf(t *testing.T) {
	for ua, want := range map[string]string{
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64)":         "windows",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac)": "ios",
		"Mozilla/5.0 (Linux; Android 14)":                   "android",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0)":      "macos",
		"curl/8.0": "other",
		"":         "unknown",
	} {
		if got := platformOf(ua); got != want {
			t.Errorf("platformOf(%q) = %q, want %q", ua, got, want)
		}
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if d := deviceOf(r); d.IP != "192.0.2.1" {
		t.Errorf("device IP %q", d.IP)
	}
}
