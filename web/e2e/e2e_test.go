// Package e2e runs maula-chat's pages in a real headless Chromium: the real server binary with
// the fake upstream (internal/testserver), driven by playwright-core scripts (journey.mjs,
// xss.mjs) from this test. Without Chromium, node or the npm packages it skips with the
// reason; MAULA_REQUIRE_BROWSER=1 turns those skips into failures (CI).
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/internal/testserver"
	"github.com/maula-ai/maula-chat/providers/mockllm"
)

// journeyMock streams for about 2.4 s: long enough to press Stop and to cut the network
// mid-reply, short enough for the whole journey to take well under a minute.
var journeyMock = mockllm.Options{Chunks: 80, ChunkSize: 8, Delay: 30 * time.Millisecond, ErrorAfter: -1, ResetAfter: -1, InputTokens: 40}

// need skips (or, with MAULA_REQUIRE_BROWSER=1, fails) the test for a missing prerequisite.
func need(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("MAULA_REQUIRE_BROWSER") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// prerequisites returns the Chromium binary, after checking node and the npm packages
// (installing them with `npm ci` when missing).
func prerequisites(t *testing.T) string {
	t.Helper()
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		need(t, "no Chromium at %s (apt-get install -y chromium, or set CHROMIUM)", chromium)
	}
	if _, err := exec.LookPath("node"); err != nil {
		need(t, "no node on PATH")
	}
	if _, err := os.Stat("node_modules/playwright-core/package.json"); err != nil {
		cmd := exec.Command("npm", "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error")
		if out, err := cmd.CombinedOutput(); err != nil {
			need(t, "npm ci in web/e2e failed (%v): %s", err, bytes.TrimSpace(out))
		}
	}
	return chromium
}

func shotsDir(t *testing.T, name string) string {
	dir := os.Getenv("MAULA_SCREENSHOTS")
	if dir == "" {
		dir = "screenshots" // git-ignored
	}
	dir, _ = filepath.Abs(filepath.Join(dir, name))
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// checkPages fails early, with the fix, when the binary serves no pages.
func checkPages(t *testing.T, base string) {
	t.Helper()
	res, err := http.Get(base)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !bytes.Contains(body, []byte("<base href=")) {
		t.Fatalf("GET %s: %d %.120s: the binary serves no pages (is mountWeb called from cmd/maula-chat/mount.go?)", base, res.StatusCode, body)
	}
}

// runScript runs a node script of this directory and returns its JSON report (its last line
// of stdout); the script's progress and failure go to the test log.
func runScript(t *testing.T, script, chromium, base, shots string, env ...string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium, "BASE_URL="+base, "SHOTS_DIR="+shots)
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("%s took %s; screenshots in %s\n%s", script, time.Since(start).Round(time.Millisecond), shots, stderr.String())
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, stdout.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var rep map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rep); err != nil {
		t.Fatalf("%s: report: %v\n%s", script, err, stdout.String())
	}
	return rep
}

// TestBrowserJourney is issue 7's journey, behind a base path to prove every URL the pages
// build carries it.
func TestBrowserJourney(t *testing.T) {
	chromium := prerequisites(t)
	srv := testserver.Start(t, journeyMock, "MAULA_BASE_PATH=/maula", "MAULA_ADMIN_EMAILS=admin@example.com")
	base := srv.URL + "/maula/"
	checkPages(t, base)
	rep := runScript(t, "journey.mjs", chromium, base, shotsDir(t, "journey"),
		"EXPECTED_TEXT="+mockllm.Text(journeyMock), "PROVIDER=claude")
	w, _ := rep["weight"].(map[string]any)
	t.Logf("/chat before the first message: %v bytes over the wire (page %v, API %v), cache off, uncompressed",
		w["totalBytes"], w["pageBytes"], w["apiBytes"])
	t.Logf("first delta to paint: %v ms (to the frame's DOM update: %v ms), per reply", rep["firstDeltaToPaintMs"], rep["firstDeltaToFrameMs"])
	t.Logf("user cost %v µ$ seen by the admin as %v µ$; sockets opened %v; excused console messages %v",
		rep["userCostMicros"], rep["adminCostMicros"], rep["socketsOpened"], rep["excusedConsoleErrors"])
	if out := os.Getenv("MAULA_E2E_REPORT"); out != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		_ = os.WriteFile(out, b, 0o644)
	}
}

// TestModelMarkupIsInert sends markup through the echo provider (which repeats the message)
// and checks the reply shows it as text, with nothing run or loaded. The server is at the root
// here, the other layout the pages must work in.
func TestModelMarkupIsInert(t *testing.T) {
	chromium := prerequisites(t)
	srv := testserver.Start(t, testserver.DefaultMock)
	checkPages(t, srv.URL+"/")
	runScript(t, "xss.mjs", chromium, srv.URL+"/", shotsDir(t, "xss"))
}
