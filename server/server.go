// Package server runs maula-chat's HTTP server: the operational endpoints (/healthz, /readyz,
// /metrics, admin-only pprof), the shared middleware (request ids, access log, panic recovery,
// base path), and a bounded graceful shutdown that lets the chat hub drain before the stores
// close. Feature packages mount their routes on it; it knows none of them.
package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/maula-ai/maula-chat/httpx"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is a named readiness probe (e.g. "mongodb", "redis").
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Server is the HTTP server. Mount routes with Handle before Serve.
type Server struct {
	Mux      *http.ServeMux
	Registry *prometheus.Registry

	log      *slog.Logger
	basePath string
	checks   []Check
	draining chanFlag

	mu        sync.Mutex // guards onDrain
	onDrain   []func(ctx context.Context)
	requests  *prometheus.CounterVec
	durations *prometheus.HistogramVec
}

type chanFlag struct {
	once sync.Once
	ch   chan struct{}
}

// New returns a server with the operational endpoints mounted.
func New(log *slog.Logger, basePath string, checks ...Check) *Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := &Server{
		Mux: http.NewServeMux(), Registry: reg, log: log, basePath: basePath, checks: checks,
		draining: chanFlag{ch: make(chan struct{})},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "maula_http_requests_total", Help: "HTTP requests by method and status code.",
		}, []string{"method", "code"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "maula_http_request_seconds", Help: "HTTP request latency.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"method"}),
	}
	reg.MustRegister(s.requests, s.durations)
	s.Mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.Mux.HandleFunc("GET /readyz", s.ready)
	s.Mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	s.Mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteError(w, http.StatusNotFound, "not_found", "no route for "+r.Method+" "+r.URL.Path)
	})
	return s
}

// OnDrain registers f to run at shutdown, after the listener stops accepting and before
// in-flight HTTP requests are awaited; the chat hub uses it to finish or cancel its turns.
func (s *Server) OnDrain(f func(ctx context.Context)) {
	s.mu.Lock()
	s.onDrain = append(s.onDrain, f)
	s.mu.Unlock()
}

// Draining is closed when shutdown begins.
func (s *Server) Draining() <-chan struct{} { return s.draining.ch }

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.draining.ch:
		httpx.WriteError(w, http.StatusServiceUnavailable, "draining", "shutting down")
		return
	default:
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	status := map[string]string{}
	failed := false
	for _, c := range s.checks {
		if err := c.Fn(ctx); err != nil {
			status[c.Name] = err.Error()
			failed = true
		} else {
			status[c.Name] = "ok"
		}
	}
	if failed {
		httpx.WriteJSON(w, http.StatusServiceUnavailable, map[string]any{
			"error": httpx.Error{Code: "not_ready", Message: "a dependency does not answer"}, "checks": status})
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"status": "ready", "checks": status})
}

// Handler returns the full handler: middleware, metrics and the base path around the mux.
func (s *Server) Handler() http.Handler {
	var h http.Handler = s.Mux
	h = s.metrics(h)
	h = httpx.Middleware(s.log, h)
	if s.basePath != "" {
		inner := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p := strings.TrimPrefix(r.URL.Path, s.basePath)
			if len(p) == len(r.URL.Path) || (p != "" && p[0] != '/') {
				httpx.WriteError(w, http.StatusNotFound, "not_found", "outside "+s.basePath)
				return
			}
			if p == "" {
				p = "/"
			}
			r2 := r.Clone(r.Context())
			r2.URL.Path, r2.URL.RawPath = p, ""
			inner.ServeHTTP(w, r2)
		})
	}
	return h
}

func (s *Server) metrics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &codeWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		s.requests.WithLabelValues(r.Method, fmt.Sprint(rec.code)).Inc()
		s.durations.WithLabelValues(r.Method).Observe(time.Since(start).Seconds())
	})
}

type codeWriter struct {
	http.ResponseWriter
	code int
}

func (c *codeWriter) WriteHeader(code int)        { c.code = code; c.ResponseWriter.WriteHeader(code) }
func (c *codeWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// Hijack lets WebSocket upgrades through (gorilla/websocket asserts http.Hijacker directly).
func (c *codeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c.code = http.StatusSwitchingProtocols
	return http.NewResponseController(c.ResponseWriter).Hijack()
}

// Serve serves on ln until ctx is done, then shuts down within timeout: it stops accepting,
// runs the drain hooks, and waits for in-flight requests. Hijacked connections (WebSockets)
// are the drain hooks' business.
func (s *Server) Serve(ctx context.Context, ln net.Listener, timeout time.Duration) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http serve: %w", err)
	case <-ctx.Done():
	}
	s.draining.once.Do(func() { close(s.draining.ch) })
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// Stop accepting first, then drain hooks and in-flight requests in parallel.
	var wg sync.WaitGroup
	shutErr := make(chan error, 1)
	wg.Add(1)
	go func() { defer wg.Done(); shutErr <- srv.Shutdown(sctx) }()
	s.mu.Lock()
	hooks := append([]func(context.Context){}, s.onDrain...)
	s.mu.Unlock()
	for _, f := range hooks {
		wg.Add(1)
		go func() { defer wg.Done(); f(sctx) }()
	}
	wg.Wait()
	if err := <-shutErr; err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("http shutdown: %w", err)
	}
	return nil
}
