package auth

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/maula-ai/maula-chat/internal/testenv"
	"github.com/maula-ai/maula-chat/kv"
)

// fuzzRoutes are the JSON handlers FuzzJSONHandlers drives; the authenticated ones get a valid
// session token.
var fuzzRoutes = []struct {
	method, path string
	authed       bool
}{
	{"POST", "/auth/register", false},
	{"POST", "/auth/login", false},
	{"POST", "/auth/api-keys", true},
	{"POST", "/auth/2fa/enable", true},
	{"POST", "/auth/2fa/disable", true},
}

// FuzzJSONHandlers sends arbitrary bodies to every JSON handler: the answer must never be a
// 5xx, and every error must have the {"error":{"code","message"}} shape. The seed corpus is in
// testdata/fuzz/FuzzJSONHandlers; run longer with
// `go test -run '^$' -fuzz FuzzJSONHandlers -fuzztime 60s ./auth/`.
func FuzzJSONHandlers(f *testing.F) {
	in := newInstance(f, testenv.Mongo(f), kv.NewMemory(), instanceOpts{})
	rec := httptest.NewRecorder()
	body := `{"email":"fuzz-owner@example.com","password":"fuzzing password"}`
	in.h.ServeHTTP(rec, httptest.NewRequest("POST", "/auth/register", bytes.NewBufferString(body)))
	var reg struct{ Token string }
	if err := json.Unmarshal(rec.Body.Bytes(), &reg); err != nil || reg.Token == "" {
		f.Fatalf("register the fuzz owner: %d %s", rec.Code, rec.Body)
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		r := httptest.NewRequest(rt.method, rt.path, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		if rt.authed {
			r.Header.Set("Authorization", "Bearer "+reg.Token)
		}
		w := httptest.NewRecorder()
		in.h.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", rt.method, rt.path, body, w.Code, w.Body)
		}
		if w.Code >= 400 {
			var e struct {
				Error struct{ Code, Message string }
			}
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
				t.Fatalf("%s %s: %d answer is not the error shape: %s", rt.method, rt.path, w.Code, w.Body)
			}
		}
		if w.Code < 300 && !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %s: invalid JSON answer %s", rt.method, rt.path, w.Body)
		}
		if w.Code == http.StatusTooManyRequests && w.Header().Get("Retry-After") == "" {
			t.Fatalf("429 without Retry-After")
		}
	})
}
