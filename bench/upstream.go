package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/maula-ai/maula-chat/providers/mockllm"
)

// upstream is the in-process fake upstream every scenario streams from.
type upstream struct {
	URL  string
	mock *mockllm.Server
	srv  *http.Server
}

func startUpstream(opts mockllm.Options) (*upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m := mockllm.New(opts)
	srv := &http.Server{Handler: m}
	go func() { _ = srv.Serve(ln) }()
	return &upstream{URL: "http://" + ln.Addr().String(), mock: m, srv: srv}, nil
}

func (u *upstream) close() { _ = u.srv.Close() }

// directClient is the floor's HTTP client: generous pools, no proxies.
var directClient = &http.Client{Transport: &http.Transport{MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, MaxConnsPerHost: 0}}

// streamDirect sends one streaming chat completion straight to the fake upstream and calls
// onDelta with each text delta and its arrival time. It returns the concatenated text.
func streamDirect(ctx context.Context, base, header string, onDelta func(string, time.Time)) (string, error) {
	body := `{"model":"gpt-5-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`
	req, err := http.NewRequestWithContext(ctx, "POST", base+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer bench")
	if header != "" {
		req.Header.Set(mockllm.HeaderName, header)
	}
	resp, err := directClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("upstream status %d", resp.StatusCode)
	}
	var text strings.Builder
	err = readSSE(resp, func(delta string) {
		onDelta(delta, time.Now())
		text.WriteString(delta)
	})
	return text.String(), err
}

// readSSE parses an OpenAI chat-completions stream and calls onDelta for each non-empty
// content delta.
func readSSE(resp *http.Response, onDelta func(string)) error {
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	type chunk struct {
		Choices []struct {
			Delta struct {
				Content string `json:"content"`
			} `json:"delta"`
		} `json:"choices"`
	}
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("data: ")) {
			continue
		}
		data := line[6:]
		if bytes.Equal(data, []byte("[DONE]")) {
			return nil
		}
		var ch chunk // fresh each time: decoding into a reused slice keeps stale fields
		if err := json.Unmarshal(data, &ch); err != nil {
			return err
		}
		for _, c := range ch.Choices {
			if c.Delta.Content != "" {
				onDelta(c.Delta.Content)
			}
		}
	}
	return sc.Err()
}
