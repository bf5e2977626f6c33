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
	ping  bool   // a ping control frame (keepalive)
}

func (it *outItem) size() int { return len(it.reqID) + len(it.text) + len(it.raw) + 48 }

// outQueue is a connection's send queue, capped in bytes. Producers (turns, the reader, the
// keepalive wheel) push without blocking; the connection's single writer goroutine takes
// everything queued at once. The writer runs only while there is something to write: a push
// onto an empty queue starts it (startWriter) and it stops when it finds the queue empty, so
// an idle connection has no writer goroutine. All fields are guarded by mu.
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
	// startWriter starts the writer goroutine; nil (tests): take is called directly.
	startWriter func()
	running     bool // a writer runs (or was started)
	pinging     bool // a ping is queued
	flushCode   int  // non-zero: once everything queued is written, close with this code
}

func newOutQueue(limit int) *outQueue {
	return &outQueue{limit: limit, mergeAt: max(limit/16, 4096)}
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
	q.wakeLocked()
	q.mu.Unlock()
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
	q.wakeLocked()
	q.mu.Unlock()
	return !over
}

// pushPing queues a ping unless one is already waiting. It never counts against the cap.
func (q *outQueue) pushPing() {
	q.mu.Lock()
	if !q.closed && !q.pinging {
		q.pinging = true
		q.items = append(q.items, outItem{ping: true})
		q.wakeLocked()
	}
	q.mu.Unlock()
}

// flush asks the writer to write what is queued, then close the connection with code.
func (q *outQueue) flush(code int) {
	q.mu.Lock()
	if !q.closed && q.flushCode == 0 {
		q.flushCode = code
		q.wakeLocked()
	}
	q.mu.Unlock()
}

// wakeLocked starts the writer if none runs.
func (q *outQueue) wakeLocked() {
	if !q.running && q.startWriter != nil {
		q.running = true
		q.startWriter()
	}
}

// next is the writer's take: everything queued, moved into buf. When nothing is queued the
// writer must stop: next then reports the flush code, if any, and marks the writer stopped.
func (q *outQueue) next(buf []outItem) ([]outItem, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) > 0 && !q.closed {
		return q.takeLocked(buf), 0
	}
	q.running = false
	code := q.flushCode
	if q.closed {
		code = 0
	}
	return buf[:0], code
}

// take moves everything queued into buf (reused between calls) and empties the queue.
func (q *outQueue) take(buf []outItem) []outItem {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.takeLocked(buf)
}

func (q *outQueue) takeLocked(buf []outItem) []outItem {
	buf = append(buf[:0], q.items...)
	clear(q.items)
	q.items = q.items[:0]
	if cap(q.items) > 64 {
		q.items = nil // do not keep a big backlog's array on an idle connection
	}
	clear(q.open)
	q.bytes = 0
	q.pinging = false
	return buf
}

// close drops what is queued and refuses more.
func (q *outQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.items, q.open, q.bytes = nil, nil, 0
	q.mu.Unlock()
}
