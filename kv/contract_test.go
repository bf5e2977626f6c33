package kv_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/internal/testenv"
	"github.com/maula-ai/maula-chat/kv"
)

// The one contract suite: every implementation of kv.Store must pass it.
func TestContract(t *testing.T) {
	impls := []struct {
		name string
		open func(t *testing.T) kv.Store
	}{
		{"memory", func(*testing.T) kv.Store { return kv.NewMemory() }},
		{"redis", func(t *testing.T) kv.Store { return testenv.Redis(t) }},
	}
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			s := impl.open(t)
			t.Run("rate limit exact under concurrency", func(t *testing.T) { testRateLimit(t, s) })
			t.Run("cache ttl", func(t *testing.T) { testCache(t, s) })
			t.Run("counters", func(t *testing.T) { testCounters(t, s) })
			t.Run("pubsub", func(t *testing.T) { testPubSub(t, s) })
			t.Run("stream buffer", func(t *testing.T) { testStream(t, s) })
		})
	}
}

func uniq(t *testing.T) string { return fmt.Sprintf("%s:%d", t.Name(), time.Now().UnixNano()) }

func testRateLimit(t *testing.T, s kv.Store) {
	ctx := context.Background()
	key := uniq(t)
	const limit, callers = 25, 60
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := s.Allow(ctx, key, limit, time.Hour)
			if err != nil {
				t.Error(err)
				return
			}
			if d.Allowed {
				allowed.Add(1)
			} else if d.RetryAfter <= 0 || d.Remaining != 0 {
				t.Errorf("denied decision %+v lacks RetryAfter or has Remaining", d)
			}
		}()
	}
	wg.Wait()
	if got := allowed.Load(); got != limit {
		t.Fatalf("allowed %d of %d calls, want exactly %d", got, callers, limit)
	}
	d, _ := s.Allow(ctx, key+"other", limit, time.Hour)
	if !d.Allowed || d.Remaining != limit-1 || d.Limit != limit {
		t.Fatalf("fresh key: %+v", d)
	}
}

func testCache(t *testing.T, s kv.Store) {
	ctx := context.Background()
	key := uniq(t)
	if _, ok, err := s.Get(ctx, key); ok || err != nil {
		t.Fatalf("missing key: ok=%v err=%v", ok, err)
	}
	if err := s.Set(ctx, key, []byte("v1"), time.Hour); err != nil {
		t.Fatal(err)
	}
	v, ok, err := s.Get(ctx, key)
	if !ok || err != nil || string(v) != "v1" {
		t.Fatalf("get = %q %v %v", v, ok, err)
	}
	if err := s.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Get(ctx, key); ok {
		t.Fatal("deleted key still present")
	}
	// Expiry: a short TTL, then poll until gone (bounded), never a fixed sleep.
	if err := s.Set(ctx, key, []byte("v2"), 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, ok, _ := s.Get(ctx, key); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("key with 50 ms TTL still present after 3 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testCounters(t *testing.T, s kv.Store) {
	ctx := context.Background()
	key := uniq(t)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.HIncrBy(ctx, key, fmt.Sprint("f", i%2), 2, time.Hour); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	m, err := s.HGetAll(ctx, key)
	if err != nil || m["f0"] != 50 || m["f1"] != 50 {
		t.Fatalf("hgetall = %v %v, want f0=50 f1=50", m, err)
	}
	taken, err := s.HTake(ctx, key)
	if err != nil || taken["f0"] != 50 {
		t.Fatalf("htake = %v %v", taken, err)
	}
	if m, _ := s.HGetAll(ctx, key); len(m) != 0 {
		t.Fatalf("after take: %v", m)
	}
}

func testPubSub(t *testing.T, s kv.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := uniq(t)
	a, err := s.Subscribe(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Subscribe(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Publish(ctx, ch, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []<-chan []byte{a, b} {
		select {
		case m := <-sub:
			if string(m) != "hello" {
				t.Fatalf("got %q", m)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("subscriber got nothing")
		}
	}
	cancel()
	// The channel closes once the subscription ends.
	for range a {
	}
}

func testStream(t *testing.T, s kv.Store) {
	ctx := context.Background()
	st := uniq(t)
	for seq := uint64(1); seq <= 5; seq++ {
		if err := s.Append(ctx, st, seq, []byte(fmt.Sprint("e", seq)), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Append(ctx, st, 5, []byte("dup"), time.Minute); err != kv.ErrSeqNotRising {
		t.Fatalf("repeated seq: err = %v, want ErrSeqNotRising", err)
	}
	got, err := s.Read(ctx, st, 2, 0, 0)
	if err != nil || len(got) != 3 || got[0].Seq != 3 || string(got[2].Data) != "e5" {
		t.Fatalf("read after 2 = %+v %v", got, err)
	}
	got, _ = s.Read(ctx, st, 0, 2, 0)
	if len(got) != 2 || got[1].Seq != 2 {
		t.Fatalf("limit 2 = %+v", got)
	}
	// A blocked reader is woken by the next append.
	done := make(chan []kv.Entry, 1)
	go func() {
		e, err := s.Read(ctx, st, 5, 0, 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		done <- e
	}()
	if err := s.Append(ctx, st, 6, []byte("e6"), time.Minute); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-done:
		if len(e) != 1 || e[0].Seq != 6 || string(e[0].Data) != "e6" {
			t.Fatalf("blocked read = %+v", e)
		}
	case <-time.After(6 * time.Second):
		t.Fatal("blocked reader never woke")
	}
	// Timeout with nothing new returns empty.
	e, err := s.Read(ctx, st, 6, 0, 50*time.Millisecond)
	if err != nil || len(e) != 0 {
		t.Fatalf("timeout read = %+v %v", e, err)
	}
	if err := s.DropStream(ctx, st); err != nil {
		t.Fatal(err)
	}
	if e, _ := s.Read(ctx, st, 0, 0, 0); len(e) != 0 {
		t.Fatalf("dropped stream still has %d entries", len(e))
	}
}
