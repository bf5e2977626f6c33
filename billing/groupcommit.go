package billing

import (
	"fmt"
	"sync"
)

// groupCommit runs one flush for many concurrent callers: the first caller to find no flush
// running leads, taking everything queued so far into one batch; the callers that arrive
// meanwhile wait, and when the batch is written the leader wakes them and hands the lead to
// the oldest caller still queued, so no caller flushes other callers' work forever. There is
// no goroutine and no timer: an uncontended call flushes at once, and under load the batches
// grow by themselves with the time one flush takes.
//
// The zero value is ready to use. Its fields are owned by the mutex.
type groupCommit[T any] struct {
	mu       sync.Mutex
	queue    []*gcItem[T]
	flushing bool
	limit    int // the most items one flush takes (0: all queued); set before first use
	// before, when set (before first use), is called by each leader before it takes the
	// queue, with no lock held: a flush whose tail runs on after it returned (the journal's
	// apply) is awaited there, so that the batch takes every caller that came meanwhile.
	before func()
}

type gcItem[T any] struct {
	v    T
	err  error
	wake chan bool // true: lead the next batch; false: your batch is written, err is set
	lead bool      // added when no flush ran: it leads without waiting
}

// safeFlush turns a panic in flush into the batch's error: the waiters must still be woken
// and the lead handed on, or every later caller would wait for ever.
func safeFlush[T any](flush func([]T) error, vs []T) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("billing: group flush panicked: %v", r)
		}
	}()
	return flush(vs)
}

// do queues v and returns the error of the flush that carried it.
func (g *groupCommit[T]) do(v T, flush func([]T) error) error {
	return g.wait(g.add(v), flush)
}

// add queues v; wait must follow. Items are flushed in the order they were added: one added
// after another goes in the same batch or a later one, after it.
func (g *groupCommit[T]) add(v T) *gcItem[T] {
	it := &gcItem[T]{v: v, wake: make(chan bool, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, it)
	if !g.flushing {
		g.flushing, it.lead = true, true
	}
	g.mu.Unlock()
	return it
}

// wait returns the error of the flush that carried it, leading that flush when its turn comes.
func (g *groupCommit[T]) wait(it *gcItem[T], flush func([]T) error) error {
	if !it.lead {
		if lead := <-it.wake; !lead {
			return it.err
		}
	}
	if g.before != nil {
		g.before()
	}
	g.mu.Lock()
	batch := g.queue
	g.queue = nil
	if g.limit > 0 && len(batch) > g.limit {
		// The leader is always the queue's first item (a new leader found it empty; a handed
		// lead goes to the oldest), so its own item is in the batch.
		batch, g.queue = batch[:g.limit:g.limit], append([]*gcItem[T](nil), batch[g.limit:]...)
	}
	g.mu.Unlock()

	vs := make([]T, len(batch))
	for i, b := range batch {
		vs[i] = b.v
	}
	err := safeFlush(flush, vs)
	for _, b := range batch {
		b.err = err
		if b != it {
			b.wake <- false
		}
	}

	g.mu.Lock()
	if len(g.queue) > 0 {
		g.queue[0].wake <- true
	} else {
		g.flushing = false
	}
	g.mu.Unlock()
	return it.err
}
