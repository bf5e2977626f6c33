// Package kv holds the small key-value primitives the seed puts in Redis: rate-limit counters,
// the response and session caches, realtime analytics counters, pub/sub, and a per-stream event
// buffer for resuming chats across instances. Each has two implementations, in-process (Memory)
// and Redis, held to one contract test suite, so a single instance needs nothing installed and
// several instances share state through Redis.
package kv

import (
	"context"
	"errors"
	"time"
)

// Decision is a rate limiter's answer.
type Decision struct {
	Allowed   bool
	Limit     int
	Remaining int
	// Reset is when the current window ends; RetryAfter is the wait before a denied call may pass.
	Reset      time.Time
	RetryAfter time.Duration
}

// RateLimiter counts calls per key in fixed windows, atomically across every user of the store.
type RateLimiter interface {
	Allow(ctx context.Context, key string, limit int, window time.Duration) (Decision, error)
}

// Cache holds byte values with a time to live.
type Cache interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Set(ctx context.Context, key string, val []byte, ttl time.Duration) error
	Delete(ctx context.Context, key string) error
}

// Counters are hashes of integer counters, as Redis HINCRBY.
type Counters interface {
	// HIncrBy adds n to field of key and returns the new value; ttl > 0 (re)sets the key's expiry.
	HIncrBy(ctx context.Context, key, field string, n int64, ttl time.Duration) (int64, error)
	HGetAll(ctx context.Context, key string) (map[string]int64, error)
	// HTake returns the hash and removes it in one atomic step, for batch flushers.
	HTake(ctx context.Context, key string) (map[string]int64, error)
}

// PubSub broadcasts messages to every subscriber of a channel on every instance.
type PubSub interface {
	Publish(ctx context.Context, channel string, msg []byte) error
	// Subscribe delivers the channel's messages until ctx is done; the subscription is active
	// when Subscribe returns.
	Subscribe(ctx context.Context, channel string) (<-chan []byte, error)
}

// Entry is one event of a stream buffer.
type Entry struct {
	Seq  uint64
	Data []byte
}

// StreamBuffer keeps a stream's recent events so that a reader on any instance can replay what
// it missed and then follow live.
type StreamBuffer interface {
	// Append adds an event; seq must rise with every append to a stream. ttl > 0 (re)sets the
	// stream's expiry.
	Append(ctx context.Context, stream string, seq uint64, data []byte, ttl time.Duration) error
	// Read returns the events after afterSeq, at most max. When there are none it waits up to
	// block for the next ones (block 0: do not wait) and returns an empty slice on timeout.
	Read(ctx context.Context, stream string, afterSeq uint64, max int, block time.Duration) ([]Entry, error)
	// DropStream removes a stream and its events.
	DropStream(ctx context.Context, stream string) error
}

// Store is every primitive together: what Memory and Redis implement.
type Store interface {
	RateLimiter
	Cache
	Counters
	PubSub
	StreamBuffer
	Ping(ctx context.Context) error
	Close() error
	// Kind names the implementation for logs: "memory" or "redis".
	Kind() string
}

// ErrSeqNotRising is returned by Append when seq does not rise.
var ErrSeqNotRising = errors.New("kv: stream seq must rise")

// windowStart returns the start of the fixed window holding t.
func windowStart(t time.Time, window time.Duration) time.Time {
	return t.Truncate(window)
}
