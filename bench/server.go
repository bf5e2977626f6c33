package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// server is a maula-chat child process with embedded stores, every provider pointed at the
// bench's fake upstream, and a plan that never runs out of credits or message rate.
type server struct {
	URL  string
	cmd  *exec.Cmd
	dir  string
	done chan error
}

const benchPlans = `{"plans":[{"name":"free","aiCredits":1000000000,"maxAPIRequests":1000000000,"maxTools":50,
"supportLevel":"basic","chatMessagesPerMinute":100000000,"apiKeyRequestsPerMinute":100000000,"apiKeyRequestsPerDay":1000000000,
"analysisRetentionDays":7,"price":0,"currency":"USD","interval":"monthly"}]}`

// serversStarted numbers the servers of one bench run, for their profile files.
var serversStarted atomic.Int64

func startServer(ctx context.Context, cfg Config, upstreamURL string, extraEnv ...string) (*server, error) {
	exe := cfg.Exe
	if cfg.ServerCPUProfile != "" {
		path := cfg.ServerCPUProfile
		if n := serversStarted.Add(1); n > 1 {
			path += "." + strconv.FormatInt(n, 10)
		}
		extraEnv = append(extraEnv, "MAULA_CPUPROFILE="+path)
	}
	dir, err := os.MkdirTemp("", "maula-bench-*")
	if err != nil {
		return nil, err
	}
	plans := filepath.Join(dir, "plans.json")
	if err := os.WriteFile(plans, []byte(benchPlans), 0o600); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(exe, "serve")
	cmd.Env = append(os.Environ(), "MAULA_ADDR="+addr, "MAULA_DATA_DIR="+filepath.Join(dir, "data"),
		"MAULA_BCRYPT_COST=4", "MAULA_LOG_LEVEL=error", "MAULA_PLANS="+plans,
		"OPENAI_API_KEY=bench", "OPENAI_BASE_URL="+upstreamURL+"/v1",
		"ANTHROPIC_API_KEY=bench", "ANTHROPIC_BASE_URL="+upstreamURL)
	cmd.Env = append(cmd.Env, extraEnv...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{URL: "http://" + addr, cmd: cmd, dir: dir, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), "listening on") {
				close(ready)
				once = true
			}
		}
	}()
	go func() { s.done <- cmd.Wait() }()
	select {
	case <-ready:
		return s, nil
	case err := <-s.done:
		return nil, fmt.Errorf("maula-chat serve exited: %v", err)
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("maula-chat serve not ready in 90 s")
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		return nil, ctx.Err()
	}
}

func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	os.RemoveAll(s.dir)
}

// register creates a user and returns its session token.
func (s *server) register(email string) (string, error) {
	body, _ := json.Marshal(map[string]string{"email": email, "password": "bench password 123", "name": "Bench"})
	resp, err := http.Post(s.URL+"/auth/register", "application/json", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		Token string `json:"token"`
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &out) != nil || out.Token == "" {
		return "", fmt.Errorf("register %s: %d %s", email, resp.StatusCode, b)
	}
	return out.Token, nil
}

// rss reads the child's resident set size in bytes.
func (s *server) rss() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n * 1024
		}
	}
	return 0
}

// cpuTime is the child's user+system CPU time so far.
func (s *server) cpuTime() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // clock ticks (USER_HZ 100)
}

// heapInuse reads go_memstats_heap_inuse_bytes from /metrics.
func (s *server) heapInuse() int64 {
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return int64(f)
		}
	}
	return 0
}

// phaseMeans reads the hub's per-phase turn durations from /metrics: the mean of each phase
// since start, which says what a full turn's time to first token is made of.
func (s *server) phaseMeans() map[string]time.Duration {
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	sums, counts := map[string]float64{}, map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for suffix, m := range map[string]map[string]float64{"_sum": sums, "_count": counts} {
			prefix := "maula_chat_turn_phase_seconds" + suffix + `{phase="`
			if rest, ok := strings.CutPrefix(line, prefix); ok {
				name, val, _ := strings.Cut(rest, `"} `)
				f, _ := strconv.ParseFloat(val, 64)
				m[name] = f
			}
		}
	}
	out := map[string]time.Duration{}
	for k, sum := range sums {
		if c := counts[k]; c > 0 {
			out[k] = time.Duration(sum / c * float64(time.Second))
		}
	}
	return out
}
