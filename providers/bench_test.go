package providers

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/providers/mockllm"
)

// benchPaths are the mock endpoints each adapter calls.
var benchPaths = map[string]string{
	"claude": "/v1/messages", "gpt": "/v1/chat/completions", "gemini": "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
}

// recordedBody renders the mock's stream for provider once, so the
// benchmark measures the adapter (SDK parsing included), not the network.
func recordedBody(b *testing.B, provider string, o mockllm.Options) []byte {
	body := `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`
	r := httptest.NewRequest(http.MethodPost, benchPaths[provider], strings.NewReader(body))
	r.Header.Set(mockllm.HeaderName, o.Header())
	w := httptest.NewRecorder()
	mockllm.New(o).ServeHTTP(w, r)
	if w.Code != 200 {
		b.Fatalf("mock answered %d", w.Code)
	}
	return w.Body.Bytes()
}

// bodyTransport answers every request with a fresh reader over body.
type bodyTransport struct {
	body []byte
	pipe func() io.ReadCloser // when set, the body comes from here
}

func (t bodyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		_ = r.Body.Close()
	}
	var rc io.ReadCloser = io.NopCloser(bytes.NewReader(t.body))
	if t.pipe != nil {
		rc = t.pipe()
	}
	return &http.Response{StatusCode: 200, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"text/event-stream"}}, Body: rc, ContentLength: -1, Request: r}, nil
}

func benchProvider(b *testing.B, name string, rt http.RoundTripper) Provider {
	cfg := mockConfig("http://bench.invalid", rt)
	hc := httpClient(cfg.HTTPClient)
	pc := cfg.provider(name)
	switch name {
	case "claude":
		return newClaude(pc, hc)
	case "gemini":
		p, err := newGemini(pc, hc)
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	return newOpenAICompatible(name, pc, hc)
}

// BenchmarkAdapterChunk measures the adapter's CPU cost per streamed chunk
// (SDK decoding plus our mapping), over an in-memory 256-chunk stream.
func BenchmarkAdapterChunk(b *testing.B) {
	const chunks = 256
	for _, name := range []string{"claude", "gpt", "gemini"} {
		b.Run(name, func(b *testing.B) {
			o := mockllm.DefaultOptions
			o.Chunks, o.ChunkSize = chunks, 16
			p := benchProvider(b, name, bodyTransport{body: recordedBody(b, name, o)})
			req := testRequest()
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := 0; i < b.N; i++ {
				s, err := p.Stream(context.Background(), req)
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				for {
					ev, err := s.Recv()
					if err != nil || ev.Type != EventDelta {
						break
					}
					n++
				}
				_ = s.Close()
				if n != chunks {
					b.Fatalf("%d deltas, want %d", n, chunks)
				}
			}
			// CPU time (this process, GC included) is reported besides wall
			// time because the benchmark machines are shared and loaded.
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N*chunks), "cpu-ns/chunk")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*chunks), "ns/chunk")
		})
	}
}

// cpuTime is the user+system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAdapterLatency measures the time from an upstream chunk arriving
// (written into the response body) to its event leaving Recv, one chunk
// at a time on an idle pipeline; it reports p50 and p99.
func BenchmarkAdapterLatency(b *testing.B) {
	for _, name := range []string{"baseline", "claude", "gpt", "gemini"} {
		b.Run(name, func(b *testing.B) {
			o := mockllm.DefaultOptions
			o.Chunks, o.ChunkSize = 64, 16
			wire := name
			if name == "baseline" {
				wire = "gpt"
			}
			body := recordedBody(b, wire, o)
			events := splitEvents(body)
			marker := []byte(textMarkers[wire])
			sent := make(chan time.Time, 1)
			recvd := make(chan struct{})
			var pr *io.PipeReader // the current stream's body; set before each Stream call
			rt := bodyTransport{pipe: func() io.ReadCloser { return pr }}
			var p Provider = rawSSEProvider{body: func() io.Reader { return pr }, marker: marker}
			if name != "baseline" {
				p = benchProvider(b, name, rt)
			}
			req := testRequest()
			samples := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for len(samples) < b.N {
				ctx, cancel := context.WithCancel(context.Background())
				var pw *io.PipeWriter
				pr, pw = io.Pipe()
				done := make(chan struct{})
				var s Stream
				go func() {
					// The upstream: write one event, wait until its delta left
					// the adapter, then the next.
					defer close(done)
					for _, ev := range events {
						isText := bytes.Contains(ev, marker) && !bytes.Contains(ev, append(marker, '"'))
						if isText {
							sent <- time.Now()
						}
						if _, err := pw.Write(ev); err != nil {
							return
						}
						if isText {
							select {
							case <-recvd:
							case <-ctx.Done():
								return
							}
						}
					}
					_ = pw.Close()
				}()
				var err error
				s, err = p.Stream(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				for len(samples) < b.N {
					ev, err := s.Recv()
					if err != nil || ev.Type != EventDelta {
						break
					}
					samples = append(samples, time.Since(<-sent))
					recvd <- struct{}{}
				}
				cancel()
				_ = s.Close()
				_ = pr.Close()
				<-done
				select { // drain a timestamp sent for an unread chunk
				case <-sent:
				default:
				}
			}
			b.StopTimer()
			slices.Sort(samples)
			b.ReportMetric(float64(samples[len(samples)/2].Nanoseconds())/1e3, "p50-µs")
			b.ReportMetric(float64(samples[len(samples)*99/100].Nanoseconds())/1e3, "p99-µs")
		})
	}
}

// rawSSEProvider is the latency floor: it only cuts SSE events out of the
// body and spots text events, with no SDK and no JSON decoding.
type rawSSEProvider struct {
	body   func() io.Reader
	marker []byte
}

func (rawSSEProvider) Name() string         { return "baseline" }
func (rawSSEProvider) DefaultModel() string { return "" }
func (p rawSSEProvider) Stream(ctx context.Context, req *Request) (Stream, error) {
	return &rawSSEStream{r: bufio.NewReader(p.body()), marker: p.marker}, nil
}

type rawSSEStream struct {
	r      *bufio.Reader
	marker []byte
	text   bool
}

func (s *rawSSEStream) Recv() (Event, error) {
	for {
		line, err := s.r.ReadSlice('\n')
		if err != nil {
			return Event{Type: EventFinish}, nil
		}
		if len(bytes.TrimSpace(line)) == 0 {
			if s.text {
				s.text = false
				return Event{Type: EventDelta, Text: "x"}, nil
			}
			continue
		}
		s.text = s.text || (bytes.Contains(line, s.marker) && !bytes.Contains(line, append(s.marker, '"')))
	}
}

func (s *rawSSEStream) Close() error { return nil }

// textMarkers identify the events that carry a text delta.
var textMarkers = map[string]string{
	"claude": `"text_delta","text":"`, "gpt": `"delta":{"content":"`, "gemini": `"parts":[{"text":"`,
}

// splitEvents cuts an SSE body after each blank line (LF or CRLF style).
func splitEvents(body []byte) [][]byte {
	var out [][]byte
	for len(body) > 0 {
		i, n := bytes.Index(body, []byte("\n\n")), 2
		if j := bytes.Index(body, []byte("\r\n\r\n")); j >= 0 && (i < 0 || j < i) {
			i, n = j, 4
		}
		if i < 0 {
			out = append(out, body)
			break
		}
		out = append(out, body[:i+n])
		body = body[i+n:]
	}
	return out
}

// BenchmarkMockServer measures the fake upstream itself over loopback, so
// the benchmark knows its upstream is not the bottleneck.
func BenchmarkMockServer(b *testing.B) {
	o := mockllm.DefaultOptions
	o.Chunks, o.ChunkSize = 64, 16
	srv := httptest.NewServer(mockllm.New(o))
	defer srv.Close()
	body := `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n == 0 {
			b.Fatal("empty body")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*o.Chunks), "ns/chunk")
}
