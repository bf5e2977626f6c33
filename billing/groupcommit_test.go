package billing

import (
	"errors"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// TestGroupCommit: callers that arrive while a flush runs are written together in the next
// batch, each value exactly once, flushes never overlap, and every caller gets the error of
// the batch that carried its value.
func TestGroupCommit(t *testing.T) {
	var (
		g       groupCommit[int]
		mu      sync.Mutex
		batches [][]int
		running atomic.Int32
		release = make(chan struct{})
		entered = make(chan struct{})
		boom    = errors.New("boom")
	)
	flush := func(vs []int) error {
		if running.Add(1) != 1 {
			t.Error("two flushes ran at once")
		}
		defer running.Add(-1)
		mu.Lock()
		first := len(batches) == 0
		batches = append(batches, slices.Clone(vs))
		mu.Unlock()
		if first {
			close(entered)
			<-release // hold the first flush while the others queue up
		}
		if slices.Contains(vs, 7) {
			return boom
		}
		return nil
	}
	errs := make([]error, 11)
	var wg sync.WaitGroup
	wg.Go(func() { errs[0] = g.do(0, flush) })
	<-entered
	for i := 1; i <= 10; i++ {
		wg.Go(func() { errs[i] = g.do(i, flush) })
	}
	for { // wait for the ten to be queued behind the running flush
		g.mu.Lock()
		n := len(g.queue)
		g.mu.Unlock()
		if n == 10 {
			break
		}
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	if len(batches) != 2 || !slices.Equal(batches[0], []int{0}) || len(batches[1]) != 10 {
		t.Fatalf("batches = %v, want [0] then the ten queued callers together", batches)
	}
	got := slices.Sorted(slices.Values(batches[1]))
	if !slices.Equal(got, []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) {
		t.Fatalf("second batch = %v", got)
	}
	for i, err := range errs {
		if want := i != 0; (err != nil) != want || (err != nil && !errors.Is(err, boom)) {
			t.Errorf("caller %d got %v; the batch with 7 failed, the first did not", i, err)
		}
	}
	// Idle again: the next caller flushes alone at once.
	if err := g.do(42, flush); err != nil || !slices.Equal(batches[2], []int{42}) {
		t.Fatalf("uncontended call: %v, batch %v", err, batches[len(batches)-1])
	}
}

// TestGroupCommitSurvivesAPanickingFlush: the batch fails with an error and the next call
// flushes normally instead of waiting for ever.
func TestGroupCommitSurvivesAPanickingFlush(t *testing.T) {
	var g groupCommit[int]
	if err := g.do(1, func([]int) error { panic("boom") }); err == nil {
		t.Fatal("a panicking flush reported success")
	}
	if err := g.do(2, func([]int) error { return nil }); err != nil {
		t.Fatalf("next flush: %v", err)
	}
}
