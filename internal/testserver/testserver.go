// Package testserver runs the real maula-chat binary for tests that must talk to it as a
// client would (the SDKs, the CLI, the browser): built once per test process, started with
// `serve` on a free loopback port, with the fake upstream (mock-llm, in process) behind every
// provider, and stopped with SIGTERM when the test ends.
package testserver

import (
	"bufio"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/providers/mockllm"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/maula-chat once and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir, err := os.MkdirTemp("", "maula-bin-*")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "maula-chat")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/maula-chat")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Server is a running maula-chat.
type Server struct {
	URL     string // http://127.0.0.1:port
	Mock    *mockllm.Server
	Options mockllm.Options // the fake upstream's defaults
	DataDir string
	cmd     *exec.Cmd
	done    chan error
}

// DefaultMock is a short, quick reply.
var DefaultMock = mockllm.Options{Chunks: 12, ChunkSize: 6, Delay: 2 * time.Millisecond, ErrorAfter: -1, ResetAfter: -1, InputTokens: 40}

// Start runs `maula-chat serve` with env added to the defaults (embedded stores in a temp data
// dir, bcrypt cost 4, echo on, every provider pointed at an in-process mock-llm with opts).
func Start(t testing.TB, opts mockllm.Options, env ...string) *Server {
	t.Helper()
	return StartOn(t, opts, t.TempDir(), env...)
}

// StartOn is Start on an existing data dir (e.g. to restart on what an earlier server wrote).
func StartOn(t testing.TB, opts mockllm.Options, dataDir string, env ...string) *Server {
	t.Helper()
	bin := Binary(t)
	mock := mockllm.New(opts)
	up := httptest.NewServer(mock)
	t.Cleanup(up.Close)
	port := freePort(t)
	s := &Server{URL: fmt.Sprintf("http://127.0.0.1:%d", port), Mock: mock, Options: opts, DataDir: dataDir, done: make(chan error, 1)}
	s.cmd = exec.Command(bin, "serve")
	s.cmd.Env = append(os.Environ(),
		"MAULA_ADDR=127.0.0.1:"+fmt.Sprint(port), "MAULA_DATA_DIR="+s.DataDir, "MAULA_BCRYPT_COST=4",
		"MAULA_ECHO_PROVIDER=1", "MAULA_ECHO_DELAY=1ms", "MAULA_LOG_LEVEL=warn",
		"ANTHROPIC_API_KEY=test", "ANTHROPIC_BASE_URL="+up.URL,
		"OPENAI_API_KEY=test", "OPENAI_BASE_URL="+up.URL+"/v1",
		"XAI_API_KEY=test", "XAI_BASE_URL="+up.URL+"/v1",
		"MISTRAL_API_KEY=test", "MISTRAL_BASE_URL="+up.URL+"/v1",
		"GEMINI_API_KEY=test", "GEMINI_BASE_URL="+up.URL,
	)
	s.cmd.Env = append(s.cmd.Env, env...)
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	var logMu sync.Mutex
	var logBuf strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			logMu.Lock()
			if logBuf.Len() < 64<<10 {
				logBuf.WriteString(line + "\n")
			}
			logMu.Unlock()
			if !signalled && strings.Contains(line, "maula-chat listening on") {
				close(ready)
				signalled = true
			}
		}
	}()
	go func() { s.done <- s.cmd.Wait() }()
	select {
	case <-ready:
	case err := <-s.done:
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("maula-chat serve exited at start: %v\n%s", err, logBuf.String())
	case <-time.After(90 * time.Second):
		_ = s.cmd.Process.Kill()
		t.Fatal("maula-chat serve not ready in 90 s")
	}
	t.Cleanup(func() { _ = s.Stop() })
	return s
}

// Stop sends SIGTERM and waits for the process to exit (killing it after 20 s).
func (s *Server) Stop() error {
	if s.cmd.ProcessState != nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		return fmt.Errorf("maula-chat did not stop in 20 s after SIGTERM")
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
