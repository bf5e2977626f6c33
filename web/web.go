// Package web serves maula-chat's pages: sign-in (/), the chat (/chat), the admin cost
// dashboard (/admin) and the account page (/account), plus the small JSON endpoints only the
// pages need (GET /api/tools). The pages are plain ES modules embedded in the binary (no build
// step); they talk to the server through the same HTTP routes and the same JavaScript SDK
// (sdk/js, served from its own package at /assets/sdk/index.js) that third parties use, so the web package never reaches
// into the chat hub.
//
// Every URL a page uses is relative to the document's <base href>, which Routes sets to the
// server's base path: the pages work on any port and behind MAULA_BASE_PATH alike.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/maula-ai/maula-chat/httpx"
	jssdk "github.com/maula-ai/maula-chat/sdk/js"
	"github.com/maula-ai/maula-chat/tools"
)

//go:embed static
var staticFS embed.FS

// Options configure the pages.
type Options struct {
	// BasePath is the prefix the server is reached under (MAULA_BASE_PATH, e.g. "/chat"),
	// without a trailing slash; empty at the root. The server strips it before routing; the
	// pages need it to build their own URLs.
	BasePath string
	// Tools is the registry the tool picker lists; nil means tools.Default().
	Tools *tools.Registry
}

// pages maps each page route to its HTML file under static/.
var pages = map[string]string{
	"/{$}":     "index.html",
	"/chat":    "chat.html",
	"/admin":   "admin.html",
	"/account": "account.html",
}

// ContentSecurityPolicy is sent with every page. No inline script, no eval, no third-party
// origin: even if a model's reply slipped past the sanitiser, an injected handler or <script>
// could not run. Images are limited to our origin and data: URLs so a reply cannot beacon
// the reader's address to a tracking host.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"

// asset is one embedded file, prepared once at start.
type asset struct {
	body  []byte
	ctype string
	etag  string
}

// Routes mounts the pages, the static assets under /assets/ and GET /api/tools on mux.
func Routes(mux *http.ServeMux, o Options) error {
	if o.Tools == nil {
		o.Tools = tools.Default()
	}
	if o.BasePath != "" && (!strings.HasPrefix(o.BasePath, "/") || strings.HasSuffix(o.BasePath, "/")) {
		return fmt.Errorf("web: base path %q must start with / and not end with /", o.BasePath)
	}
	assets, err := loadAssets()
	if err != nil {
		return err
	}
	for route, file := range pages {
		a, ok := assets[file]
		if !ok {
			return fmt.Errorf("web: page %s missing from static/", file)
		}
		page := withBase(a, o.BasePath)
		mux.HandleFunc("GET "+route, func(w http.ResponseWriter, r *http.Request) {
			pageHeaders(w.Header())
			serveAsset(w, r, page)
		})
	}
	mux.HandleFunc("GET /assets/{path...}", func(w http.ResponseWriter, r *http.Request) {
		a, ok := assets[r.PathValue("path")]
		if !ok || strings.HasSuffix(r.PathValue("path"), ".html") {
			httpx.WriteError(w, http.StatusNotFound, "not_found", "no asset "+r.PathValue("path"))
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		serveAsset(w, r, a)
	})
	toolList := toolsJSON(o.Tools)
	mux.HandleFunc("GET /api/tools", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, toolList)
	})
	return nil
}

// ToolInfo is one row of GET /api/tools: what the tool picker shows. The system prompt stays
// on the server.
type ToolInfo struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Category    string `json:"category"`
	Description string `json:"description"`
}

// ToolList is the answer of GET /api/tools, in the registry's order.
type ToolList struct {
	Tools []ToolInfo `json:"tools"`
}

func toolsJSON(reg *tools.Registry) ToolList {
	out := ToolList{Tools: []ToolInfo{}}
	for _, t := range reg.All() {
		out.Tools = append(out.Tools, ToolInfo{ID: t.ID, Name: t.Name, Category: t.Category, Description: t.Description})
	}
	return out
}

func loadAssets() (map[string]*asset, error) {
	root, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	out := map[string]*asset{}
	err = fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(root, p)
		if err != nil {
			return err
		}
		out[p] = newAsset(p, b)
		return nil
	})
	// The JS SDK is served from its own package, the file npm publishes, not from a copy.
	out["sdk/index.js"] = newAsset("sdk/index.js", jssdk.Source)
	return out, err
}

func newAsset(name string, b []byte) *asset {
	ctype := mime.TypeByExtension(path.Ext(name))
	switch path.Ext(name) {
	case ".js", ".mjs":
		ctype = "text/javascript; charset=utf-8" // module scripts need a JavaScript MIME type everywhere
	case ".md", ".txt", "":
		ctype = "text/plain; charset=utf-8"
	}
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	sum := sha256.Sum256(b)
	return &asset{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
}

// withBase returns the page with its <base href="/"> pointing at the base path, so every
// relative URL of the page (scripts, fetches, the WebSocket) carries the prefix.
func withBase(a *asset, basePath string) *asset {
	b := bytes.Replace(a.body, []byte(`<base href="/">`), []byte(`<base href="`+basePath+`/">`), 1)
	return newAsset("page.html", b)
}

func pageHeaders(h http.Header) {
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
}

// serveAsset answers with a revalidated cache: the ETag is the content hash, so a page load
// after a deploy never mixes old and new modules, and an unchanged one costs a 304.
func serveAsset(w http.ResponseWriter, r *http.Request, a *asset) {
	w.Header().Set("Content-Type", a.ctype)
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
