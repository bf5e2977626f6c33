package kv

import (
	"context"
	"strconv"
	"sync"
	"time"
)

// Memory implements Store in process memory for a single instance. All state is guarded by mu,
// except each stream's entries, guarded by that stream's own lock so readers and the writer of
// one stream do not contend with the rest.
type Memory struct {
	mu      sync.Mutex
	values  map[string]memValue            // guarded by mu: cache entries and rate counters
	hashes  map[string]*memHash            // guarded by mu
	subs    map[string]map[chan []byte]int // guarded by mu: channel -> subscriber set
	streams map[string]*memStream          // guarded by mu
	ops     int                            // guarded by mu: drives the periodic expiry sweep
	now     func() time.Time
	closed  bool // guarded by mu
}

type memValue struct {
	val     []byte
	n       int64
	expires time.Time
}

type memHash struct {
	fields  map[string]int64
	expires time.Time
}

type memStream struct {
	mu      sync.Mutex
	entries []Entry
	expires time.Time     // guarded by mu
	wake    chan struct{} // guarded by mu: closed and replaced on every append
}

// NewMemory returns an empty in-process store.
func NewMemory() *Memory {
	return &Memory{
		values:  map[string]memValue{},
		hashes:  map[string]*memHash{},
		subs:    map[string]map[chan []byte]int{},
		streams: map[string]*memStream{},
		now:     time.Now,
	}
}

// Kind implements Store.
func (m *Memory) Kind() string { return "memory" }

// Ping implements Store.
func (m *Memory) Ping(context.Context) error { return nil }

// Close implements Store.
func (m *Memory) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return nil
}

// sweepLocked drops expired keys every few thousand operations so memory stays bounded
// without a janitor goroutine.
func (m *Memory) sweepLocked(now time.Time) {
	m.ops++
	if m.ops%4096 != 0 {
		return
	}
	for k, v := range m.values {
		if !v.expires.IsZero() && now.After(v.expires) {
			delete(m.values, k)
		}
	}
	for k, h := range m.hashes {
		if !h.expires.IsZero() && now.After(h.expires) {
			delete(m.hashes, k)
		}
	}
	for k, s := range m.streams {
		s.mu.Lock()
		dead := !s.expires.IsZero() && now.After(s.expires)
		s.mu.Unlock()
		if dead {
			delete(m.streams, k)
		}
	}
}

func expiry(now time.Time, ttl time.Duration) time.Time {
	if ttl <= 0 {
		return time.Time{}
	}
	return now.Add(ttl)
}

func live(exp, now time.Time) bool { return exp.IsZero() || !now.After(exp) }

// Allow implements RateLimiter with a fixed-window counter.
func (m *Memory) Allow(_ context.Context, key string, limit int, window time.Duration) (Decision, error) {
	now := m.now()
	start := windowStart(now, window)
	k := "rate:" + key + ":" + strconv.FormatInt(start.UnixMilli(), 10)
	m.mu.Lock()
	m.sweepLocked(now)
	v := m.values[k]
	if !live(v.expires, now) {
		v = memValue{}
	}
	v.n++
	v.expires = start.Add(window)
	m.values[k] = v
	m.mu.Unlock()
	return decide(int(v.n), limit, start.Add(window), now), nil
}

func decide(count, limit int, reset, now time.Time) Decision {
	d := Decision{Allowed: count <= limit, Limit: limit, Remaining: max(limit-count, 0), Reset: reset}
	if !d.Allowed {
		d.RetryAfter = reset.Sub(now)
	}
	return d
}

// Get implements Cache.
func (m *Memory) Get(_ context.Context, key string) ([]byte, bool, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.values[key]
	if !ok || !live(v.expires, now) {
		return nil, false, nil
	}
	return v.val, true, nil
}

// Set implements Cache.
func (m *Memory) Set(_ context.Context, key string, val []byte, ttl time.Duration) error {
	now := m.now()
	cp := append([]byte(nil), val...)
	m.mu.Lock()
	m.sweepLocked(now)
	m.values[key] = memValue{val: cp, expires: expiry(now, ttl)}
	m.mu.Unlock()
	return nil
}

// Delete implements Cache.
func (m *Memory) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	delete(m.values, key)
	m.mu.Unlock()
	return nil
}

// HIncrBy implements Counters.
func (m *Memory) HIncrBy(_ context.Context, key, field string, n int64, ttl time.Duration) (int64, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweepLocked(now)
	h, ok := m.hashes[key]
	if !ok || !live(h.expires, now) {
		h = &memHash{fields: map[string]int64{}}
		m.hashes[key] = h
	}
	if ttl > 0 {
		h.expires = now.Add(ttl)
	}
	h.fields[field] += n
	return h.fields[field], nil
}

// HGetAll implements Counters.
func (m *Memory) HGetAll(_ context.Context, key string) (map[string]int64, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int64{}
	if h, ok := m.hashes[key]; ok && live(h.expires, now) {
		for f, v := range h.fields {
			out[f] = v
		}
	}
	return out, nil
}

// HTake implements Counters.
func (m *Memory) HTake(ctx context.Context, key string) (map[string]int64, error) {
	m.mu.Lock()
	h, ok := m.hashes[key]
	delete(m.hashes, key)
	m.mu.Unlock()
	out := map[string]int64{}
	if ok && live(h.expires, m.now()) {
		out = h.fields
	}
	return out, nil
}

// Publish implements PubSub. A subscriber that does not keep up loses messages rather than
// blocking the publisher, as with Redis pub/sub.
func (m *Memory) Publish(_ context.Context, channel string, msg []byte) error {
	cp := append([]byte(nil), msg...)
	m.mu.Lock()
	defer m.mu.Unlock()
	for ch := range m.subs[channel] {
		select {
		case ch <- cp:
		default:
		}
	}
	return nil
}

// Subscribe implements PubSub.
func (m *Memory) Subscribe(ctx context.Context, channel string) (<-chan []byte, error) {
	ch := make(chan []byte, 256)
	m.mu.Lock()
	if m.subs[channel] == nil {
		m.subs[channel] = map[chan []byte]int{}
	}
	m.subs[channel][ch] = 1
	m.mu.Unlock()
	go func() {
		<-ctx.Done()
		m.mu.Lock()
		delete(m.subs[channel], ch)
		if len(m.subs[channel]) == 0 {
			delete(m.subs, channel)
		}
		close(ch)
		m.mu.Unlock()
	}()
	return ch, nil
}

func (m *Memory) stream(name string, create bool) *memStream {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweepLocked(now)
	s, ok := m.streams[name]
	if ok {
		s.mu.Lock()
		dead := !live(s.expires, now)
		s.mu.Unlock()
		if dead {
			delete(m.streams, name)
			ok = false
		}
	}
	if !ok && create {
		s = &memStream{wake: make(chan struct{})}
		m.streams[name] = s
	}
	return s
}

// Append implements StreamBuffer.
func (m *Memory) Append(_ context.Context, stream string, seq uint64, data []byte, ttl time.Duration) error {
	s := m.stream(stream, true)
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.entries); n > 0 && s.entries[n-1].Seq >= seq {
		return ErrSeqNotRising
	}
	s.entries = append(s.entries, Entry{Seq: seq, Data: append([]byte(nil), data...)})
	if ttl > 0 {
		s.expires = m.now().Add(ttl)
	}
	close(s.wake)
	s.wake = make(chan struct{})
	return nil
}

// Read implements StreamBuffer.
func (m *Memory) Read(ctx context.Context, stream string, afterSeq uint64, limit int, block time.Duration) ([]Entry, error) {
	var timer <-chan time.Time
	for {
		s := m.stream(stream, block > 0)
		if s == nil {
			return nil, nil
		}
		s.mu.Lock()
		out := entriesAfter(s.entries, afterSeq, limit)
		wake := s.wake
		s.mu.Unlock()
		if len(out) > 0 || block <= 0 {
			return out, nil
		}
		if timer == nil {
			t := time.NewTimer(block)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-wake:
		case <-timer:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func entriesAfter(entries []Entry, afterSeq uint64, limit int) []Entry {
	// Entries are sorted by seq: binary search for the first after afterSeq.
	lo, hi := 0, len(entries)
	for lo < hi {
		mid := (lo + hi) / 2
		if entries[mid].Seq <= afterSeq {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	rest := entries[lo:]
	if limit > 0 && len(rest) > limit {
		rest = rest[:limit]
	}
	return append([]Entry(nil), rest...)
}

// DropStream implements StreamBuffer.
func (m *Memory) DropStream(_ context.Context, stream string) error {
	m.mu.Lock()
	delete(m.streams, stream)
	m.mu.Unlock()
	return nil
}
