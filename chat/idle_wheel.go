package chat

import (
	"sync"
	"time"
)

// keepalive is the hub's one timer wheel for every connection's ping and pong timeout, in
// place of a ticker and a read deadline per connection: each connection sits in the slot of
// its next check, and one goroutine visits a slot per tick. A check pings the connection when
// PingInterval passed since the last ping, and ends it when nothing was read from it (no frame,
// no pong) for PongWait, the same rules as before, one tick late at most.
type keepalive struct {
	ping, pongWait, tick time.Duration

	mu    sync.Mutex
	slots []*conn // each slot's connections, linked through conn.wnext and conn.wprev
	pos   int     // the slot visited next
	at    time.Time
	stopc chan struct{}
	done  chan struct{}
}

func newKeepalive(ping, pongWait time.Duration) *keepalive {
	tick := min(ping, pongWait) / 8
	tick = max(min(tick, time.Second), 10*time.Millisecond)
	n := int(max(ping, pongWait)/tick) + 2
	k := &keepalive{ping: ping, pongWait: pongWait, tick: tick, slots: make([]*conn, n),
		at: time.Now(), stopc: make(chan struct{}), done: make(chan struct{})}
	go k.run()
	return k
}

// add schedules c's first check; c was just read from.
func (k *keepalive) add(c *conn, now time.Time) {
	c.lastPing = now.UnixNano()
	k.mu.Lock()
	k.insertLocked(c, now.Add(k.ping))
	k.mu.Unlock()
}

// remove takes c off the wheel for good.
func (k *keepalive) remove(c *conn) {
	k.mu.Lock()
	c.wgone = true
	k.unlinkLocked(c)
	k.mu.Unlock()
}

func (k *keepalive) insertLocked(c *conn, due time.Time) {
	if c.wgone {
		return
	}
	ahead := int((due.Sub(k.at) + k.tick - 1) / k.tick)
	ahead = max(min(ahead, len(k.slots)-1), 0)
	i := (k.pos + ahead) % len(k.slots)
	c.wslot = i
	c.wprev, c.wnext = nil, k.slots[i]
	if c.wnext != nil {
		c.wnext.wprev = c
	}
	k.slots[i] = c
}

func (k *keepalive) unlinkLocked(c *conn) {
	if c.wslot < 0 {
		return
	}
	if c.wprev != nil {
		c.wprev.wnext = c.wnext
	} else {
		k.slots[c.wslot] = c.wnext
	}
	if c.wnext != nil {
		c.wnext.wprev = c.wprev
	}
	c.wprev, c.wnext, c.wslot = nil, nil, -1
}

func (k *keepalive) run() {
	defer close(k.done)
	t := time.NewTicker(k.tick)
	defer t.Stop()
	var due []*conn
	for {
		select {
		case <-k.stopc:
			return
		case now := <-t.C:
			due = k.take(due[:0], now)
			for i, c := range due {
				k.check(c, now)
				due[i] = nil
			}
		}
	}
}

// take empties the slots whose time has come.
func (k *keepalive) take(due []*conn, now time.Time) []*conn {
	k.mu.Lock()
	defer k.mu.Unlock()
	for !k.at.After(now) {
		for c := k.slots[k.pos]; c != nil; {
			next := c.wnext
			c.wprev, c.wnext, c.wslot = nil, nil, -1
			due = append(due, c)
			c = next
		}
		k.slots[k.pos] = nil
		k.pos = (k.pos + 1) % len(k.slots)
		k.at = k.at.Add(k.tick)
	}
	return due
}

func (k *keepalive) check(c *conn, now time.Time) {
	read := time.Unix(0, c.lastRead.Load())
	if now.Sub(read) >= k.pongWait {
		c.end() // no frame and no pong for PongWait: the client is gone
		return
	}
	if now.Sub(time.Unix(0, c.lastPing)) >= k.ping {
		c.lastPing = now.UnixNano()
		c.ping()
	}
	next := time.Unix(0, c.lastPing).Add(k.ping)
	if d := read.Add(k.pongWait); d.Before(next) {
		next = d
	}
	k.mu.Lock()
	k.insertLocked(c, next)
	k.mu.Unlock()
}

func (k *keepalive) stop() {
	close(k.stopc)
	<-k.done
}
