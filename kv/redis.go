package kv

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis implements Store on a Redis server shared by every instance. Keys follow the seed's
// names (rate:..., cache:..., session:..., analytics:...); the caller chooses them.
type Redis struct {
	c *redis.Client
}

// ValidateRedisURL reports whether a REDIS_URL is usable, before anything is dialled.
func ValidateRedisURL(url string) error {
	if _, err := redis.ParseURL(url); err != nil {
		return fmt.Errorf("invalid Redis URL: %w", err)
	}
	return nil
}

// OpenRedis connects to url and waits up to wait for the server to answer, with backoff.
func OpenRedis(ctx context.Context, url string, wait time.Duration) (*Redis, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("invalid Redis URL: %w", err)
	}
	r := &Redis{c: redis.NewClient(opt)}
	deadline := time.Now().Add(wait)
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := r.c.Ping(ctx).Err()
		if err == nil {
			return r, nil
		}
		if ctx.Err() != nil || time.Now().Add(backoff).After(deadline) {
			r.c.Close()
			return nil, fmt.Errorf("Redis at %s unreachable after %d attempts: %w", opt.Addr, attempt, err)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// Kind implements Store.
func (r *Redis) Kind() string { return "redis" }

// Ping implements Store.
func (r *Redis) Ping(ctx context.Context) error { return r.c.Ping(ctx).Err() }

// Close implements Store.
func (r *Redis) Close() error { return r.c.Close() }

// allowScript increments the window's counter and sets its expiry in one atomic step, so the
// limit holds exactly across instances.
var allowScript = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n`)

// Allow implements RateLimiter.
func (r *Redis) Allow(ctx context.Context, key string, limit int, window time.Duration) (Decision, error) {
	now := time.Now()
	start := windowStart(now, window)
	k := "rate:" + key + ":" + strconv.FormatInt(start.UnixMilli(), 10)
	n, err := allowScript.Run(ctx, r.c, []string{k}, window.Milliseconds()).Int64()
	if err != nil {
		return Decision{}, fmt.Errorf("rate limit %s: %w", key, err)
	}
	return decide(int(n), limit, start.Add(window), now), nil
}

// Get implements Cache.
func (r *Redis) Get(ctx context.Context, key string) ([]byte, bool, error) {
	b, err := r.c.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("cache get: %w", err)
	}
	return b, true, nil
}

// Set implements Cache.
func (r *Redis) Set(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	if err := r.c.Set(ctx, key, val, ttl).Err(); err != nil {
		return fmt.Errorf("cache set: %w", err)
	}
	return nil
}

// Delete implements Cache.
func (r *Redis) Delete(ctx context.Context, key string) error {
	if err := r.c.Del(ctx, key).Err(); err != nil {
		return fmt.Errorf("cache delete: %w", err)
	}
	return nil
}

// HIncrBy implements Counters.
func (r *Redis) HIncrBy(ctx context.Context, key, field string, n int64, ttl time.Duration) (int64, error) {
	pipe := r.c.TxPipeline()
	inc := pipe.HIncrBy(ctx, key, field, n)
	if ttl > 0 {
		pipe.PExpire(ctx, key, ttl)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("hincrby: %w", err)
	}
	return inc.Val(), nil
}

// HGetAll implements Counters.
func (r *Redis) HGetAll(ctx context.Context, key string) (map[string]int64, error) {
	m, err := r.c.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("hgetall: %w", err)
	}
	return parseCounts(m)
}

var takeScript = redis.NewScript(`
local v = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return v`)

// HTake implements Counters.
func (r *Redis) HTake(ctx context.Context, key string) (map[string]int64, error) {
	v, err := takeScript.Run(ctx, r.c, []string{key}).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("htake: %w", err)
	}
	m := make(map[string]string, len(v)/2)
	for i := 0; i+1 < len(v); i += 2 {
		m[v[i]] = v[i+1]
	}
	return parseCounts(m)
}

func parseCounts(m map[string]string) (map[string]int64, error) {
	out := make(map[string]int64, len(m))
	for f, s := range m {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("counter %s: %w", f, err)
		}
		out[f] = n
	}
	return out, nil
}

// Publish implements PubSub.
func (r *Redis) Publish(ctx context.Context, channel string, msg []byte) error {
	if err := r.c.Publish(ctx, channel, msg).Err(); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return nil
}

// Subscribe implements PubSub.
func (r *Redis) Subscribe(ctx context.Context, channel string) (<-chan []byte, error) {
	ps := r.c.Subscribe(ctx, channel)
	// Receive the confirmation so the subscription is live before we return.
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return nil, fmt.Errorf("subscribe %s: %w", channel, err)
	}
	out := make(chan []byte, 256)
	go func() {
		defer close(out)
		defer ps.Close()
		in := ps.Channel()
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-in:
				if !ok {
					return
				}
				select {
				case out <- []byte(m.Payload):
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// Stream IDs are "<seq>-0", so XRANGE by seq needs no index of our own.
func streamID(seq uint64) string { return strconv.FormatUint(seq, 10) + "-0" }

// Append implements StreamBuffer.
func (r *Redis) Append(ctx context.Context, stream string, seq uint64, data []byte, ttl time.Duration) error {
	pipe := r.c.TxPipeline()
	pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, ID: streamID(seq), Values: []any{"d", data}})
	if ttl > 0 {
		pipe.PExpire(ctx, stream, ttl)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		if isSeqError(err) {
			return ErrSeqNotRising
		}
		return fmt.Errorf("stream append: %w", err)
	}
	return nil
}

func isSeqError(err error) bool {
	var re redis.Error
	return errors.As(err, &re) &&
		(strings.Contains(re.Error(), "equal or smaller"))
}

// Read implements StreamBuffer.
func (r *Redis) Read(ctx context.Context, stream string, afterSeq uint64, limit int, block time.Duration) ([]Entry, error) {
	if limit <= 0 {
		limit = 10000
	}
	if block <= 0 {
		msgs, err := r.c.XRangeN(ctx, stream, "("+streamID(afterSeq), "+", int64(limit)).Result()
		if err != nil {
			return nil, fmt.Errorf("stream read: %w", err)
		}
		return toEntries(msgs)
	}
	res, err := r.c.XRead(ctx, &redis.XReadArgs{
		Streams: []string{stream, streamID(afterSeq)}, Count: int64(limit), Block: block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("stream read: %w", err)
	}
	if len(res) == 0 {
		return nil, nil
	}
	return toEntries(res[0].Messages)
}

func toEntries(msgs []redis.XMessage) ([]Entry, error) {
	out := make([]Entry, 0, len(msgs))
	for _, m := range msgs {
		var seq uint64
		if _, err := fmt.Sscanf(m.ID, "%d-", &seq); err != nil {
			return nil, fmt.Errorf("stream id %q: %w", m.ID, err)
		}
		d, _ := m.Values["d"].(string)
		out = append(out, Entry{Seq: seq, Data: []byte(d)})
	}
	return out, nil
}

// DropStream implements StreamBuffer.
func (r *Redis) DropStream(ctx context.Context, stream string) error {
	return r.Delete(ctx, stream)
}
