package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/httpx"
	"github.com/maula-ai/maula-chat/kv"
	"github.com/maula-ai/maula-chat/store"
	"github.com/maula-ai/maula-chat/tools"
)

const testSecret = "test-secret-0123456789-0123456789-abcdef"

// fakeClock is a settable clock shared by the instances of a test.
type fakeClock struct{ ns atomic.Int64 }

func newClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// captureMailer keeps sent mail for assertions.
type captureMailer struct {
	mu   sync.Mutex
	sent []string // "to|body"
	got  chan struct{}
}

func newCaptureMailer() *captureMailer { return &captureMailer{got: make(chan struct{}, 100)} }

func (m *captureMailer) Send(_ context.Context, to, _, body string) error {
	m.mu.Lock()
	m.sent = append(m.sent, to+"|"+body)
	m.mu.Unlock()
	select {
	case m.got <- struct{}{}:
	default: // nobody is counting (fuzzing registers thousands)
	}
	return nil
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// instance is one Service with its own HTTP server, as one replica of the deployment.
type instance struct {
	svc   *Service
	srv   *httptest.Server
	h     http.Handler // the handler srv serves, for in-process calls (fuzzing)
	mail  *captureMailer
	inval chan string // "<kind>:<id>" invalidations this instance applied
}

type instanceOpts struct {
	clock       *fakeClock
	logs        io.Writer
	adminEmails []string
}

func newInstance(t testing.TB, ms *store.Store, kvs kv.Store, io instanceOpts) *instance {
	t.Helper()
	in := &instance{mail: newCaptureMailer(), inval: make(chan string, 1024)}
	logw := io.logs
	if logw == nil {
		logw = new(syncBuffer)
	}
	o := Options{
		Mongo: ms, KV: kvs, Tools: tools.Default(), Log: slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelDebug})),
		JWTSecret: testSecret, BcryptCost: 4, AdminEmails: io.adminEmails, Mailer: in.mail,
		FlushInterval: time.Hour, // tests flush explicitly
		OnInvalidate: func(kind, id string) {
			select {
			case in.inval <- kind + ":" + id:
			default:
			}
		},
	}
	if io.clock != nil {
		o.Now = io.clock.Now
	}
	svc, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	in.svc = svc
	mux := http.NewServeMux()
	svc.Routes(mux)
	mux.Handle("GET /admin/ping", svc.RequireAdmin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"ok": PrincipalFrom(r.Context()).Email})
	})))
	in.h = httpx.Middleware(o.Log, mux)
	in.srv = httptest.NewServer(in.h)
	t.Cleanup(func() {
		in.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := svc.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return in
}

// waitInvalidation waits until the instance applied kind:id from the pub/sub channel.
func (in *instance) waitInvalidation(t testing.TB, kind, id string) {
	t.Helper()
	want := kind + ":" + id
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-in.inval:
			if got == want {
				return
			}
		case <-deadline:
			t.Fatalf("invalidation %s never arrived", want)
		}
	}
}

// answer is a decoded HTTP response.
type answer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (a answer) errCode() string {
	e, _ := a.body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// req describes a request; hdr values are set as given.
type req struct {
	method, path string
	body         any // string, []byte or a value to encode
	token        string
	apiKey       string
	cookie       string
	hdr          map[string]string
}

func (in *instance) do(t testing.TB, q req) answer {
	t.Helper()
	var rd io.Reader
	switch b := q.body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	r, err := http.NewRequest(q.method, in.srv.URL+q.path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if q.token != "" {
		r.Header.Set("Authorization", "Bearer "+q.token)
	}
	if q.apiKey != "" {
		r.Header.Set("X-API-Key", q.apiKey)
	}
	if q.cookie != "" {
		r.AddCookie(&http.Cookie{Name: CookieName, Value: q.cookie})
	}
	for k, v := range q.hdr {
		r.Header.Set(k, v)
	}
	resp, err := in.srv.Client().Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &a.body)
	if resp.StatusCode >= 500 {
		t.Errorf("%s %s: %d %s", q.method, q.path, resp.StatusCode, raw)
	}
	return a
}

// must asserts the status and returns the answer.
func must(t testing.TB, a answer, status int) answer {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d: %s", a.status, status, a.raw)
	}
	return a
}

func str(m map[string]any, path ...string) string {
	var cur any = m
	for _, p := range path {
		mm, _ := cur.(map[string]any)
		cur = mm[p]
	}
	s, _ := cur.(string)
	return s
}
