package chat

import (
	"sync"
)

// outItem is one frame waiting for the writer. Deltas stay structured until written so that a
// slow reader's queued deltas of one request can be merged; everything else is pre-encoded.
type outItem struct {
	reqID string // delta: the request id; "" for pre-encoded frames
	seq   uint64 // delta: seq of the last delta merged in
	text  []byte // delta: concatenated text
	raw   []byte // pre-encoded frame
}

func (it *outItem) size() int { return len(it.reqID) + len(it.text) + len(it.raw) + 48 }

// outQueue is a connection's send queue, capped in bytes. Producers (turns, the reader) call
// push without blocking; the connection's single writer goroutine takes everything queued at
// once. All fields are guarded by mu.
type outQueue struct {
	mu    sync.Mutex
	items []outItem
	// open maps a request id to the index in items of its last queued delta, while no other
	// frame of that request has been queued after it: only then may a new delta merge into it.
	open  map[string]int
	bytes int
	limit int
	// mergeAt is the backlog in bytes from which deltas merge: below it every delta is its own
	// frame (seq gapless); above it the client is reading slowly and frames coalesce.
	mergeAt int
	closed  bool
	wake    chan struct{} // capacity 1: "there is something to write"
}

func newOutQueue(limit int) *outQueue {
	return &outQueue{limit: limit, mergeAt: max(limit/16, 4096), wake: make(chan struct{}, 1)}
}

// pushDelta queues a delta, merging it into the request's queued delta when there is one.
// It returns false when the queue is over its cap (the caller closes the connection).
func (q *outQueue) pushDelta(reqID string, seq uint64, text string) bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return true
	}
	if i, ok := q.open[reqID]; ok && q.bytes >= q.mergeAt {
		it := &q.items[i]
		it.text = append(it.text, text...)
		it.seq = seq
		q.bytes += len(text)
	} else {
		if q.open == nil {
			q.open = make(map[string]int, 4)
		}
		q.items = append(q.items, outItem{reqID: reqID, seq: seq, text: append(make([]byte, 0, len(text)+16), text...)})
		q.open[reqID] = len(q.items) - 1
		q.bytes += q.items[len(q.items)-1].size()
	}
	over := q.bytes > q.limit
	q.mu.Unlock()
	q.signal()
	return !over
}

// pushRaw queues a pre-encoded frame. reqID (may be "") closes that request's merge window so
// that later deltas are not moved before this frame.
func (q *outQueue) pushRaw(reqID string, raw []byte) bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return true
	}
	if reqID != "" {
		delete(q.open, reqID)
	}
	q.items = append(q.items, outItem{raw: raw})
	q.bytes += len(raw) + 48
	over := q.bytes > q.limit
	q.mu.Unlock()
	q.signal()
	return !over
}

func (q *outQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take moves everything queued into buf (reused between calls) and empties the queue.
func (q *outQueue) take(buf []outItem) []outItem {
	q.mu.Lock()
	buf = append(buf[:0], q.items...)
	clear(q.items)
	q.items = q.items[:0]
	clear(q.open)
	q.bytes = 0
	q.mu.Unlock()
	return buf
}

// close drops what is queued and refuses more.
func (q *outQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.items, q.open, q.bytes = nil, nil, 0
	q.mu.Unlock()
}
