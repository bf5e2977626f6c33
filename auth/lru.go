package auth

import (
	"container/list"
	"sync"
)

// lru is a bounded, mutex-guarded least-recently-used map from string to V. Besides values it
// holds tombstones: a tombstoned key stays refused and Add cannot resurrect it, which closes
// the race where a lookup that read the database just before a revocation stores its stale
// answer just after the revocation's invalidation arrived.
type lru[V any] struct {
	mu  sync.Mutex // guards ll and m
	cap int
	ll  *list.List
	m   map[string]*list.Element
}

type lruItem[V any] struct {
	key  string
	val  V
	tomb bool
}

func newLRU[V any](capacity int) *lru[V] {
	return &lru[V]{cap: capacity, ll: list.New(), m: make(map[string]*list.Element, capacity)}
}

// Get returns the value for key; tomb is true when the key was revoked.
func (c *lru[V]) Get(key string) (v V, ok, tomb bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, found := c.m[key]
	if !found {
		return v, false, false
	}
	c.ll.MoveToFront(e)
	it := e.Value.(*lruItem[V])
	if it.tomb {
		return v, false, true
	}
	return it.val, true, false
}

// Add stores key unless it is tombstoned.
func (c *lru[V]) Add(key string, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, found := c.m[key]; found {
		it := e.Value.(*lruItem[V])
		if it.tomb {
			return
		}
		it.val = v
		c.ll.MoveToFront(e)
		return
	}
	c.insertLocked(&lruItem[V]{key: key, val: v})
}

// Tombstone marks key revoked, replacing any value.
func (c *lru[V]) Tombstone(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, found := c.m[key]; found {
		it := e.Value.(*lruItem[V])
		var zero V
		it.val, it.tomb = zero, true
		c.ll.MoveToFront(e)
		return
	}
	c.insertLocked(&lruItem[V]{key: key, tomb: true})
}

// Remove drops key (value or tombstone).
func (c *lru[V]) Remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, found := c.m[key]; found {
		c.ll.Remove(e)
		delete(c.m, key)
	}
}

// RemoveIf drops every value (not tombstone) for which match is true.
func (c *lru[V]) RemoveIf(match func(V) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.ll.Front(); e != nil; {
		next := e.Next()
		it := e.Value.(*lruItem[V])
		if !it.tomb && match(it.val) {
			c.ll.Remove(e)
			delete(c.m, it.key)
		}
		e = next
	}
}

// Len returns the number of entries, tombstones included.
func (c *lru[V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

func (c *lru[V]) insertLocked(it *lruItem[V]) {
	c.m[it.key] = c.ll.PushFront(it)
	for c.ll.Len() > c.cap {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.m, old.Value.(*lruItem[V]).key)
	}
}
