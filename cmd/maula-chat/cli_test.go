package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/maula-ai/maula-chat/internal/testserver"
	"github.com/maula-ai/maula-chat/providers/mockllm"
)

// The client commands run as a user runs them: the real binary against the real server
// (testserver: fake upstream only), chat inside a pseudo-terminal so Ctrl-C is the
// terminal's own interrupt character.

// cliMock is slow enough (50 chunks × 20 ms) for a Ctrl-C to land mid-reply.
var cliMock = mockllm.Options{Chunks: 50, ChunkSize: 6, Delay: 20 * time.Millisecond, ErrorAfter: -1, ResetAfter: -1, InputTokens: 40}

// term is a process in a pseudo-terminal with everything it printed so far.
type term struct {
	t    *testing.T
	cmd  *exec.Cmd
	pty  *os.File
	mu   sync.Mutex
	buf  bytes.Buffer
	wake chan struct{}
	done chan struct{} // closed when the output ends
	exit chan error
}

func startTerm(t *testing.T, env []string, args ...string) *term {
	t.Helper()
	cmd := exec.Command(testserver.Binary(t), args...)
	cmd.Env = env
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 200})
	if err != nil {
		t.Fatal(err)
	}
	tm := &term{t: t, cmd: cmd, pty: f, wake: make(chan struct{}, 1), done: make(chan struct{}), exit: make(chan error, 1)}
	go func() {
		defer close(tm.done)
		b := make([]byte, 4096)
		for {
			n, err := f.Read(b)
			tm.mu.Lock()
			tm.buf.Write(b[:n])
			tm.mu.Unlock()
			select {
			case tm.wake <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	go func() { tm.exit <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		f.Close()
		<-tm.done
	})
	return tm
}

func (tm *term) output() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.buf.String()
}

// waitFor waits until the output after offset from matches re; it returns the end offset of
// the match.
func (tm *term) waitFor(from int, re *regexp.Regexp, what string) int {
	tm.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		out := tm.output()
		if from > len(out) {
			from = len(out)
		}
		if loc := re.FindStringIndex(out[from:]); loc != nil {
			return from + loc[1]
		}
		select {
		case <-tm.wake:
		case <-tm.done:
			out = tm.output()
			if loc := re.FindStringIndex(out[from:]); loc != nil {
				return from + loc[1]
			}
			tm.t.Fatalf("the program ended waiting for %s; output:\n%s", what, out)
		case <-deadline:
			tm.t.Fatalf("timed out waiting for %s; output:\n%s", what, out)
		}
	}
}

func (tm *term) send(s string) {
	tm.t.Helper()
	if _, err := tm.pty.Write([]byte(s)); err != nil {
		tm.t.Fatal(err)
	}
}

func (tm *term) wait() int {
	tm.t.Helper()
	select {
	case err := <-tm.exit:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			tm.t.Fatal(err)
		}
		return 0
	case <-time.After(20 * time.Second):
		tm.t.Fatalf("the program did not exit; output:\n%s", tm.output())
		return -1
	}
}

func runCLI(t *testing.T, env []string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(testserver.Binary(t), args...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestCLI(t *testing.T) {
	srv := testserver.Start(t, cliMock)
	want := mockllm.Text(cliMock)
	email := fmt.Sprintf("cli%d@example.com", time.Now().UnixNano())
	const password = "correct horse battery"
	body, _ := json.Marshal(map[string]string{"email": email, "password": password})
	resp, err := http.Post(srv.URL+"/auth/register", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("register: %d", resp.StatusCode)
	}
	home := t.TempDir()
	env := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, "config"), "PATH=" + os.Getenv("PATH"), "TERM=dumb"}

	// login stores the token, readable by the user only.
	_, stderr, code := runCLI(t, env, password+"\n", "login", "--server", srv.URL, "--email", email, "--password-stdin")
	if code != 0 {
		t.Fatalf("login exit %d: %s", code, stderr)
	}
	credPath := filepath.Join(home, "config", "maula-chat", "credentials.json")
	st, err := os.Stat(credPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials mode %v, want 0600", st.Mode().Perm())
	}
	var cred credentials
	b, _ := os.ReadFile(credPath)
	if json.Unmarshal(b, &cred) != nil || cred.Token == "" || cred.Server != srv.URL {
		t.Fatalf("credentials %s", b)
	}
	if _, stderr, code := runCLI(t, env, "wrong password\n", "login", "--server", srv.URL, "--email", email, "--password-stdin"); code != 1 || !strings.Contains(stderr, "invalid_credentials") {
		t.Fatalf("bad login: exit %d %s", code, stderr)
	}

	// keys: list (50 default keys) and create.
	stdout, stderr, code := runCLI(t, env, "", "keys", "list", "--tool", "ipintel")
	if code != 0 || !strings.Contains(stdout, "mk_ipintel_") {
		t.Fatalf("keys list: exit %d\n%s%s", code, stdout, stderr)
	}
	stdout, stderr, code = runCLI(t, env, "", "keys", "create", "--tool", "ipintel", "--name", "CI")
	if code != 0 || !regexp.MustCompile(`^mk_ipintel_[A-Za-z0-9]{43}\n$`).MatchString(stdout) {
		t.Fatalf("keys create: exit %d\n%q %s", code, stdout, stderr)
	}
	key := strings.TrimSpace(stdout)

	t.Run("OneShotStreams", func(t *testing.T) {
		tm := startTerm(t, env, "chat", "--tool", "ipintel", "--provider", "claude", "Why is 203.0.113.7 high risk?")
		first := cliMock.ChunkSize * 2
		tm.waitFor(0, regexp.MustCompile(regexp.QuoteMeta(want[:first])), "the first chunks")
		sawFirst := time.Now()
		tm.waitFor(0, regexp.MustCompile(`\[stop\] 40 in \+ 50 out tokens · \$[0-9.]+ · \d+ credits left · claude/\S+ · session [0-9a-f]+`), "the usage line")
		// Streamed, not printed at the end: the text began well before the reply finished.
		if took := time.Since(sawFirst); took < time.Duration(cliMock.Chunks/2)*cliMock.Delay {
			t.Errorf("the first text came only %s before the end", took)
		}
		if code := tm.wait(); code != 0 {
			t.Fatalf("exit %d", code)
		}
		if out := strings.ReplaceAll(tm.output(), "\r\n", "\n"); !strings.Contains(out, want+"\n") {
			t.Fatalf("reply not whole:\n%s", out)
		}
	})

	t.Run("InteractiveCtrlC", func(t *testing.T) {
		tm := startTerm(t, env, "chat", "--tool", "ipintel", "--provider", "gpt")
		at := tm.waitFor(0, regexp.MustCompile(`> `), "the prompt")
		tm.send("first question\r")
		at = tm.waitFor(at, regexp.MustCompile(regexp.QuoteMeta(want[:cliMock.ChunkSize*2])), "the reply to start")
		tm.send("\x03") // Ctrl-C mid-reply
		at = tm.waitFor(at, regexp.MustCompile(`\[cancelled\] .* session ([0-9a-f]+)`), "the cancelled line")
		session := regexp.MustCompile(`\[cancelled\] .* session ([0-9a-f]+)`).FindStringSubmatch(tm.output())[1]
		at = tm.waitFor(at, regexp.MustCompile(`> `), "the prompt after Ctrl-C")
		// Still running: a second question continues the same conversation.
		tm.send("second question\r")
		at = tm.waitFor(at, regexp.MustCompile(`\[stop\] .* session `+session), "the second reply in the same session")
		if !strings.Contains(strings.ReplaceAll(tm.output(), "\r\n", "\n"), want+"\n") {
			t.Fatalf("second reply not whole:\n%s", tm.output())
		}
		at = tm.waitFor(at, regexp.MustCompile(`> `), "the prompt")
		tm.send("\x03") // at an idle prompt: a hint
		at = tm.waitFor(at, regexp.MustCompile(`press Ctrl-C again`), "the exit hint")
		tm.send("\x03") // and out
		if code := tm.wait(); code != 0 {
			t.Fatalf("exit %d after two Ctrl-C; output:\n%s", code, tm.output())
		}
	})

	t.Run("InteractiveEOFWithAPIKey", func(t *testing.T) {
		tm := startTerm(t, env, "chat", "--api-key", key, "--provider", "mistral")
		tm.waitFor(0, regexp.MustCompile(`> `), "the prompt")
		tm.send("\x04") // Ctrl-D: EOF
		if code := tm.wait(); code != 0 {
			t.Fatalf("exit %d on EOF", code)
		}
	})
}
