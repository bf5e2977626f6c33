// Package testenv gives tests the real servers they run against: a Redis (REDIS_URL, or a
// redis-server started on a free loopback port) and a MongoDB (MONGODB_URI, or the embedded
// FerretDB in a temporary directory). It is imported only by tests.
package testenv

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/kv"
	"github.com/maula-ai/maula-chat/store"
	"github.com/maula-ai/maula-chat/tools"
)

// RedisURL returns a Redis to test against. Without REDIS_URL it starts redis-server (when on
// PATH) for this test; otherwise it skips with a reason, or fails when MAULA_REQUIRE_REDIS=1.
func RedisURL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("MAULA_REQUIRE_REDIS") == "1" {
			t.Fatal("MAULA_REQUIRE_REDIS=1 but neither REDIS_URL nor redis-server on PATH")
		}
		t.Skip("no REDIS_URL and no redis-server on PATH: Redis run skipped")
	}
	port := freePort(t)
	cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--daemonize", "no")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			if !signalled && strings.Contains(sc.Text(), "Ready to accept connections") {
				close(ready)
				signalled = true
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("redis-server did not become ready in 10 s")
	}
	return fmt.Sprintf("redis://127.0.0.1:%d/0", port)
}

// Redis returns a connected kv.Redis for this test.
func Redis(t testing.TB) *kv.Redis {
	t.Helper()
	r, err := kv.OpenRedis(context.Background(), RedisURL(t), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Mongo opens the store under test (MONGODB_URI or embedded FerretDB in a temp dir) with the
// full schema migrated, and closes it when the test ends.
func Mongo(t testing.TB) *store.Store {
	t.Helper()
	ctx := context.Background()
	s, err := store.Open(ctx, store.Options{URI: os.Getenv("MONGODB_URI"), DataDir: t.TempDir(), Wait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	if _, err := s.Migrate(ctx, store.Schema(ToolDBs()), false); err != nil {
		t.Fatal(err)
	}
	return s
}

// ToolDBs lists the 50 tool databases.
func ToolDBs() []string {
	var dbs []string
	for _, t := range tools.Default().All() {
		dbs = append(dbs, t.Database())
	}
	return dbs
}

// OpenMongo opens a migrated store for a whole test binary (TestMain); close releases it.
func OpenMongo() (s *store.Store, closeFn func(), err error) {
	dir, err := os.MkdirTemp("", "maula-test-*")
	if err != nil {
		return nil, nil, err
	}
	ctx := context.Background()
	s, err = store.Open(ctx, store.Options{URI: os.Getenv("MONGODB_URI"), DataDir: dir, Wait: 10 * time.Second})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	if _, err := s.Migrate(ctx, store.Schema(ToolDBs()), false); err != nil {
		s.Close(ctx)
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return s, func() { _ = s.Close(context.Background()); os.RemoveAll(dir) }, nil
}
