package jstest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/internal/testserver"
	"github.com/maula-ai/maula-chat/providers/mockllm"
)

// jsMock streams long enough (40 chunks × 10 ms) for a reply to be cancelled or cut mid-way.
var jsMock = mockllm.Options{Chunks: 40, ChunkSize: 6, Delay: 10 * time.Millisecond, ErrorAfter: -1, ResetAfter: -1, InputTokens: 40}

// limitsPlan has one credit and two messages a minute, to provoke both typed errors.
const limitsPlan = `{"plans":[{"name":"free","aiCredits":1,"maxAPIRequests":1000,"maxTools":50,"supportLevel":"basic",
"chatMessagesPerMinute":2,"apiKeyRequestsPerMinute":60,"apiKeyRequestsPerDay":1000,"analysisRetentionDays":7,
"price":0,"currency":"USD","interval":"monthly"}]}`

// skipOrFail skips with a one-line reason, or fails when MAULA_REQUIRE_NODE=1 (CI).
func skipOrFail(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("MAULA_REQUIRE_NODE") == "1" {
		t.Fatal(reason + " (MAULA_REQUIRE_NODE=1)")
	}
	t.Skip(reason)
}

func TestJavaScriptSDK(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		skipOrFail(t, "node is not on PATH: the JavaScript SDK's tests need Node 20+")
	}
	dir, _ := filepath.Abs(filepath.Join("..", "js"))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "ws")); err != nil {
		skipOrFail(t, "sdk/js/node_modules is missing: run `npm ci` in sdk/js first")
	}
	srv := testserver.Start(t, jsMock)
	plan := filepath.Join(t.TempDir(), "plans.json")
	if err := os.WriteFile(plan, []byte(limitsPlan), 0o600); err != nil {
		t.Fatal(err)
	}
	limits := testserver.Start(t, testserver.DefaultMock, "MAULA_PLANS="+plan)

	tests, _ := filepath.Glob(filepath.Join(dir, "test", "*.test.js"))
	if len(tests) == 0 {
		t.Fatal("no sdk/js/test/*.test.js")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{"--test", "--test-concurrency=1", "--test-reporter=tap"}, tests...)
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"MAULA_TEST_URL="+srv.URL,
		"MAULA_TEST_LIMITS_URL="+limits.URL,
		"MAULA_TEST_TEXT="+mockllm.Text(jsMock),
		fmt.Sprintf("MAULA_TEST_CHUNKS=%d", jsMock.Chunks),
	)
	out, err := cmd.CombinedOutput()
	if err != nil || testing.Verbose() {
		t.Logf("node --test output:\n%s", out)
	}
	if err != nil {
		t.Fatalf("node --test: %v", err)
	}
}
