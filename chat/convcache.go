package chat

import (
	"container/list"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/providers"
)

// Why these caches: on the embedded FerretDB every query other than {_id: v} reads the whole
// collection, so loading a conversation's history or a user's latest analyses costs time in
// proportion to everything every user of the tool ever wrote. When this process is the only
// writer of the store (store.SoleWriter), every message of a conversation passes through this
// hub's recorder and every analysis through the analyses service, so the recent part can be
// kept here, exactly, and the database read once per conversation and user. With a shared
// store (several instances, or MongoDB, whose indexes answer these queries) they are off.

// histLimit is how many of a conversation's latest messages a prompt may use (loadHistory's
// limit): the cache keeps as many.
const histLimit = 50

// convKey names a conversation: its tool database, its user, its session id.
type convKey struct {
	db      string
	user    bson.ObjectID
	session string
}

// histMsg is what a prompt needs of a stored message.
type histMsg struct {
	id      bson.ObjectID
	role    string
	message string
	at      time.Time // the message's timestamp: the order a database read gives
}

// withMsg puts h into msgs (newest first) where a database read would place it, by timestamp:
// two turns of one conversation may be recorded in another order than their timestamps.
func withMsg(msgs []histMsg, h histMsg) []histMsg {
	i := 0
	for i < len(msgs) && msgs[i].at.After(h.at) {
		i++
	}
	return append(msgs[:i:i], append([]histMsg{h}, msgs[i:]...)...)
}

type convEntry struct {
	key      convKey
	loading  bool      // the first reader is loading it from the database
	pending  []histMsg // messages recorded while loading, oldest first
	msgs     []histMsg // newest first, at most histLimit
	loadedAt time.Time // when the database was read
}

// convCache is an LRU of conversations' latest messages: of each, what a prompt can use (the
// newest messages that fit the history token budget, at most histLimit), which bounds its
// memory by max × the budget. Its fields are owned by mu.
type convCache struct {
	mu     sync.Mutex
	max    int
	maxAge time.Duration // an entry is read again after this
	budget int64         // tokens, as buildPrompt counts them
	ll     *list.List    // of *convEntry, most recently used first
	m      map[convKey]*list.Element
}

func newConvCache(max int, budget int64) *convCache {
	return &convCache{max: max, maxAge: time.Hour, budget: budget, ll: list.New(), m: map[convKey]*list.Element{}}
}

// trim keeps the newest messages buildPrompt would use (fitting, at most histLimit).
func (c *convCache) trim(msgs []histMsg) []histMsg {
	msgs = msgs[:min(len(msgs), histLimit)]
	return msgs[:fitting(msgs, c.budget, func(m *histMsg) string { return m.message })]
}

// fitting returns how many of msgs (newest first) a prompt's history budget of tokens holds:
// it stops at the first message that does not fit. buildPrompt and the conversation cache
// both count with it, so the cache keeps exactly what a prompt can use.
func fitting[M any](msgs []M, budget int64, text func(*M) string) int {
	for i := range msgs {
		n := providers.EstimateTokens(text(&msgs[i]))
		if n > budget {
			return i
		}
		budget -= n
	}
	return len(msgs)
}

// get returns the conversation's messages, newest first. On a miss, lead is non-nil when this
// caller must load them from the database and hand them to fill with it (a concurrent first
// reader of the same conversation loads for itself without filling). An entry older than
// maxAge is read again, so messages the retention sweeper deleted leave the cache too.
func (c *convCache) get(k convKey) (msgs []model.ChatMessage, hit bool, lead *convEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[k]; ok {
		e := el.Value.(*convEntry)
		if e.loading {
			return nil, false, nil
		}
		if time.Since(e.loadedAt) <= c.maxAge {
			c.ll.MoveToFront(el)
			out := make([]model.ChatMessage, len(e.msgs))
			for i, h := range e.msgs {
				out[i] = model.ChatMessage{ID: h.id, Role: h.role, Message: h.message, Timestamp: h.at}
			}
			return out, true, nil
		}
		c.ll.Remove(el)
		delete(c.m, k)
	}
	e := &convEntry{key: k, loading: true}
	c.m[k] = c.ll.PushFront(e)
	c.evict()
	return nil, false, e
}

// fill completes the load get handed to lead with what the database returned (newest first);
// err != nil abandons it. Messages recorded meanwhile are merged, once each. A load whose
// entry was dropped or replaced meanwhile (the conversation deleted, evicted, read again by
// another leader) is discarded: it may predate the change.
func (c *convCache) fill(k convKey, lead *convEntry, loaded []model.ChatMessage, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[k]
	if !ok || el.Value.(*convEntry) != lead || !lead.loading {
		return
	}
	e := lead
	if err != nil {
		c.ll.Remove(el)
		delete(c.m, k)
		return
	}
	seen := make(map[bson.ObjectID]bool, len(loaded))
	msgs := make([]histMsg, 0, len(loaded)+len(e.pending))
	for _, m := range loaded {
		seen[m.ID] = true
		msgs = append(msgs, histMsg{id: m.ID, role: m.Role, message: m.Message, at: m.Timestamp})
	}
	for _, p := range e.pending {
		if !seen[p.id] {
			msgs = withMsg(msgs, p)
		}
	}
	e.msgs, e.pending, e.loading, e.loadedAt = c.trim(msgs), nil, false, time.Now()
}

// recorded adds stored messages (oldest first) to the conversations the cache holds.
func (c *convCache) recorded(db string, docs []any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range docs {
		m, ok := d.(model.ChatMessage)
		if !ok {
			continue
		}
		el, ok := c.m[convKey{db, m.UserID, m.SessionID}]
		if !ok {
			continue // not cached: its first read loads it whole
		}
		e := el.Value.(*convEntry)
		h := histMsg{id: m.ID, role: m.Role, message: m.Message, at: m.Timestamp}
		if e.loading {
			e.pending = append(e.pending, h)
			continue
		}
		e.msgs = c.trim(withMsg(e.msgs, h))
	}
}

// forget drops the conversations of docs whose write failed: some may be stored anyway (an
// unordered insert stores what it can; a timeout may fire after the commit), so the next
// prompt reads the database again.
func (c *convCache) forget(db string, docs []any) {
	for _, d := range docs {
		if m, ok := d.(model.ChatMessage); ok {
			c.drop(convKey{db, m.UserID, m.SessionID})
		}
	}
}

// drop forgets a conversation (it was deleted).
func (c *convCache) drop(k convKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[k]; ok {
		c.ll.Remove(el)
		delete(c.m, k)
	}
}

func (c *convCache) evict() {
	for c.ll.Len() > c.max {
		el := c.ll.Back()
		c.ll.Remove(el)
		delete(c.m, el.Value.(*convEntry).key)
	}
}

// ctxKey names a user's analyses in a tool database.
type ctxKey struct {
	db   string
	user bson.ObjectID
}

type ctxEntry struct {
	analyses []bson.M
	at       time.Time
}

// ctxCache keeps each user's latest analyses per tool (the prompt's context). An analysis
// stored by this process drops the entry (Hub.AnalysisCreated); entries also expire after
// ttl, so an analysis past its retention leaves the context within that time. Its fields are
// owned by mu.
type ctxCache struct {
	mu  sync.Mutex
	max int
	ttl time.Duration
	m   map[ctxKey]ctxEntry
	gen uint64 // bumped by every drop: a read that began before one is not cached
}

func newCtxCache(max int, ttl time.Duration) *ctxCache {
	return &ctxCache{max: max, ttl: ttl, m: map[ctxKey]ctxEntry{}}
}

// get returns the cached analyses; on a miss, the generation to hand to put with the read.
func (c *ctxCache) get(k ctxKey, now time.Time) (analyses []bson.M, hit bool, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || now.Sub(e.at) > c.ttl {
		return nil, false, c.gen
	}
	return e.analyses, true, c.gen
}

// put stores what a read begun at readAt returned, unless an analysis was stored since.
func (c *ctxCache) put(k ctxKey, analyses []bson.M, readAt time.Time, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if len(c.m) >= c.max { // crude bound: start over rather than track recency
		clear(c.m)
	}
	c.m[k] = ctxEntry{analyses: analyses, at: readAt}
}

func (c *ctxCache) drop(k ctxKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, k)
	c.gen++
}
