package web

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/maula-ai/maula-chat/server"
	"github.com/maula-ai/maula-chat/tools"
)

// newServer mounts the pages on a real server.Server (its base-path stripping included).
func newServer(t *testing.T, base string) *httptest.Server {
	t.Helper()
	srv := server.New(slog.New(slog.DiscardHandler), base)
	if err := Routes(srv.Mux, Options{BasePath: base}); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func TestPagesUnderBasePath(t *testing.T) {
	for _, base := range []string{"", "/maula"} {
		t.Run("base="+base, func(t *testing.T) {
			ts := newServer(t, base)
			for _, page := range []string{"/", "/chat", "/admin", "/account"} {
				res, body := get(t, ts.URL+base+page)
				if res.StatusCode != 200 {
					t.Fatalf("%s: %d", page, res.StatusCode)
				}
				if !strings.Contains(body, `<base href="`+base+`/">`) {
					t.Errorf("%s: base href not %q/", page, base)
				}
				if res.Header.Get("Content-Security-Policy") != ContentSecurityPolicy {
					t.Errorf("%s: CSP %q", page, res.Header.Get("Content-Security-Policy"))
				}
				// Every URL in a page must be relative so the base href applies.
				for _, attr := range []string{`src="/`, `href="/`} {
					if strings.Contains(strings.Replace(body, `<base href="`+base+`/">`, "", 1), attr) {
						t.Errorf("%s: absolute URL %s...", page, attr)
					}
				}
			}
			res, body := get(t, ts.URL+base+"/assets/js/chat.js")
			if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/javascript") || !strings.Contains(body, "connect(") {
				t.Fatalf("chat.js: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
			}
			etag := res.Header.Get("ETag")
			if res, _ := get(t, ts.URL+base+"/assets/js/chat.js", "If-None-Match", etag); res.StatusCode != http.StatusNotModified {
				t.Errorf("revalidation: %d, want 304", res.StatusCode)
			}
			if res, _ := get(t, ts.URL+base+"/assets/nope.js"); res.StatusCode != 404 {
				t.Errorf("unknown asset: %d", res.StatusCode)
			}
			if res, _ := get(t, ts.URL+base+"/assets/chat.html"); res.StatusCode != 404 {
				t.Errorf("pages are not assets (they need their base href): %d", res.StatusCode)
			}
		})
	}
}

func TestToolsList(t *testing.T) {
	ts := newServer(t, "")
	res, body := get(t, ts.URL+"/api/tools")
	if res.StatusCode != 200 {
		t.Fatal(res.StatusCode)
	}
	var out ToolList
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatal(err)
	}
	want := tools.Default().All()
	if len(out.Tools) != len(want) || len(out.Tools) != 50 {
		t.Fatalf("%d tools, want %d (50)", len(out.Tools), len(want))
	}
	for i, tl := range out.Tools {
		if tl.ID != want[i].ID || tl.Name != want[i].Name || tl.Category != want[i].Category || tl.Description != want[i].Description {
			t.Errorf("tool %d = %+v", i, tl)
		}
	}
	if strings.Contains(body, "systemPrompt") {
		t.Error("system prompts must stay on the server")
	}
}

func TestBadBasePath(t *testing.T) {
	for _, base := range []string{"maula", "/maula/"} {
		if err := Routes(http.NewServeMux(), Options{BasePath: base}); err == nil {
			t.Errorf("base %q accepted", base)
		}
	}
}

// The pages import the JS SDK from /assets/sdk/index.js: it must be the file npm publishes.
func TestServesTheJSSDK(t *testing.T) {
	want, err := os.ReadFile("../sdk/js/src/index.js")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	if err := Routes(mux, Options{}); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/assets/sdk/index.js", nil))
	if rec.Code != http.StatusOK || rec.Body.String() != string(want) {
		t.Fatalf("GET /assets/sdk/index.js: %d, body equal to sdk/js/src/index.js: %v", rec.Code, rec.Body.String() == string(want))
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/javascript") {
		t.Fatalf("content type %q", ct)
	}
}
