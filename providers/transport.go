package providers

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// respInfo records the status and headers of a failed HTTP response. The
// SDKs turn error responses into their own error types and drop the
// headers (go-openai, genai), so the adapters read Retry-After from here.
type respInfo struct {
	mu     sync.Mutex
	status int
	header http.Header
}

type respInfoKey struct{}

// withRespInfo returns a context whose HTTP error responses are recorded in
// the returned respInfo.
func withRespInfo(ctx context.Context) (context.Context, *respInfo) {
	ri := &respInfo{}
	return context.WithValue(ctx, respInfoKey{}, ri), ri
}

func (ri *respInfo) retryAfter() time.Duration {
	ri.mu.Lock()
	defer ri.mu.Unlock()
	return parseRetryAfter(ri.header, nowFunc())
}

func (ri *respInfo) lastStatus() int {
	ri.mu.Lock()
	defer ri.mu.Unlock()
	return ri.status
}

// captureTransport records error responses into the request's respInfo.
type captureTransport struct{ base http.RoundTripper }

// RoundTrip forwards the request and notes the headers of error responses.
func (t captureTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if resp != nil && resp.StatusCode >= 400 {
		if ri, ok := r.Context().Value(respInfoKey{}).(*respInfo); ok {
			ri.mu.Lock()
			ri.status = resp.StatusCode
			ri.header = resp.Header.Clone()
			ri.mu.Unlock()
		}
	}
	return resp, err
}

// defaultTransport is shared by every adapter so connections to one upstream
// are reused across calls. No overall client timeout: streams are long, and
// cancellation comes from the caller's context.
var defaultTransport = &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	ForceAttemptHTTP2:     true,
	MaxIdleConns:          512,
	MaxIdleConnsPerHost:   256,
	IdleConnTimeout:       90 * time.Second,
	TLSHandshakeTimeout:   10 * time.Second,
	ResponseHeaderTimeout: 120 * time.Second,
}

// httpClient wraps base (or the shared transport) with error capture.
func httpClient(base *http.Client) *http.Client {
	rt := http.RoundTripper(defaultTransport)
	if base != nil && base.Transport != nil {
		rt = base.Transport
	}
	c := &http.Client{Transport: captureTransport{base: rt}}
	if base != nil {
		c.CheckRedirect = base.CheckRedirect
		c.Jar = base.Jar
	}
	return c
}
