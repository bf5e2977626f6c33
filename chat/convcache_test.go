package chat

import (
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/maula-ai/maula-chat/model"
)

func msg(user bson.ObjectID, session, role, text string) model.ChatMessage {
	return model.ChatMessage{ID: bson.NewObjectID(), UserID: user, SessionID: session, Role: role, Message: text}
}

func texts(ms []model.ChatMessage) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Message
	}
	return out
}

// TestConvCache: the first reader loads and fills; messages recorded while it loads are merged
// once each, newest first; later reads hit; other users' and unknown conversations are never
// touched; drop forgets; the LRU bound holds.
func TestConvCache(t *testing.T) {
	u := bson.NewObjectID()
	k := convKey{"ipintel-db", u, "s1"}
	stored := []model.ChatMessage{msg(u, "s1", "assistant", "a1"), msg(u, "s1", "user", "q1")} // newest first
	late := msg(u, "s1", "user", "q2")

	c := newConvCache(2, 6000)
	_, hit, lead := c.get(k)
	if hit || lead == nil {
		t.Fatalf("first read: hit %v lead %v, want a miss that leads", hit, lead != nil)
	}
	if _, hit, lead2 := c.get(k); hit || lead2 != nil {
		t.Fatalf("second reader while loading: hit %v lead %v, want a plain miss", hit, lead2 != nil)
	}
	// q2 is recorded while the leader reads; the read may or may not have seen it.
	c.recorded("ipintel-db", []any{late, msg(bson.NewObjectID(), "s1", "user", "someone else")})
	c.fill(k, lead, append([]model.ChatMessage{late}, stored...), nil)
	got, hit, _ := c.get(k)
	if want := []string{"q2", "a1", "q1"}; !hit || fmt.Sprint(texts(got)) != fmt.Sprint(want) {
		t.Fatalf("after fill: hit %v %v, want %v", hit, texts(got), want)
	}
	c.recorded("ipintel-db", []any{msg(u, "s1", "user", "q3"), msg(u, "s1", "assistant", "a3")})
	got, _, _ = c.get(k)
	if want := []string{"a3", "q3", "q2", "a1", "q1"}; fmt.Sprint(texts(got)) != fmt.Sprint(want) {
		t.Fatalf("after recording: %v, want %v", texts(got), want)
	}
	c.drop(k)
	if _, hit, lead = c.get(k); hit || lead == nil {
		t.Fatal("a dropped conversation must be read again")
	}
	c.fill(k, lead, nil, fmt.Errorf("read failed"))
	if _, hit, lead = c.get(k); hit || lead == nil {
		t.Fatal("a failed load must not be cached")
	}
	// A load that began before the conversation was deleted must not bring it back.
	stale := lead
	c.drop(k)
	_, _, fresh := c.get(k)
	c.fill(k, fresh, nil, nil)
	c.fill(k, stale, stored, nil)
	if got, hit, _ := c.get(k); !hit || len(got) != 0 {
		t.Fatalf("after a stale load: hit %v %v, want the fresh, empty conversation", hit, texts(got))
	}
	// A failed write may have stored the messages: the conversation is read again.
	c.forget("ipintel-db", []any{msg(u, "s1", "user", "q4")})
	if _, hit, lead = c.get(k); hit || lead == nil {
		t.Fatal("a conversation whose write failed must be read again")
	}
	c.fill(k, lead, nil, nil)
	for i := range 3 { // bound 2: the oldest goes
		o := convKey{"ipintel-db", u, fmt.Sprint("other", i)}
		_, _, l := c.get(o)
		c.fill(o, l, nil, nil)
	}
	if _, hit, _ := c.get(k); hit {
		t.Fatal("the least recently used conversation was not evicted")
	}
}

// Two turns of one conversation may be recorded in another order than their timestamps: the
// cache orders them as a database read would, newest timestamp first, whether they arrive
// after the load or while it runs.
func TestConvCacheOrdersByTimestamp(t *testing.T) {
	u := bson.NewObjectID()
	at := func(m model.ChatMessage, sec int) model.ChatMessage {
		m.Timestamp = time.Date(2026, 11, 27, 12, 0, sec, 0, time.UTC)
		return m
	}
	stored := []model.ChatMessage{at(msg(u, "s", "assistant", "t2"), 2), at(msg(u, "s", "user", "t1"), 1)}
	cases := []struct {
		name        string
		duringLoad  bool
		recordOrder []int // seconds of the messages, in the order they are recorded
	}{
		{"after the load, out of order", false, []int{5, 3, 4}},
		{"while loading, out of order", true, []int{5, 3, 4}},
		{"in order", false, []int{3, 4, 5}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := convKey{"db", u, "s"}
			c := newConvCache(10, 6000)
			_, _, lead := c.get(k)
			if !tc.duringLoad {
				c.fill(k, lead, stored, nil)
			}
			for _, sec := range tc.recordOrder {
				c.recorded("db", []any{at(msg(u, "s", "user", fmt.Sprint("t", sec)), sec)})
			}
			if tc.duringLoad {
				c.fill(k, lead, stored, nil)
			}
			got, _, _ := c.get(k)
			if want := []string{"t5", "t4", "t3", "t2", "t1"}; fmt.Sprint(texts(got)) != fmt.Sprint(want) {
				t.Fatalf("cached %v, want %v", texts(got), want)
			}
		})
	}
}

func TestConvCacheKeepsTheLatest(t *testing.T) {
	u := bson.NewObjectID()
	k := convKey{"db", u, "s"}
	c := newConvCache(10, 6000)
	_, _, lead := c.get(k)
	c.fill(k, lead, nil, nil)
	for i := range histLimit + 5 {
		c.recorded("db", []any{msg(u, "s", "user", fmt.Sprint(i))})
	}
	got, _, _ := c.get(k)
	if len(got) != histLimit || got[0].Message != fmt.Sprint(histLimit+4) || got[histLimit-1].Message != "5" {
		t.Fatalf("kept %d messages, newest %q oldest %q; want the latest %d", len(got), got[0].Message, got[len(got)-1].Message, histLimit)
	}
}

// TestCtxCache: a hit within the TTL, a miss after it, and a read that began before an
// analysis was stored is not cached.
func TestCtxCache(t *testing.T) {
	k := ctxKey{"db", bson.NewObjectID()}
	now := time.Now()
	for _, tc := range []struct {
		name      string
		dropFirst bool
		at        time.Duration
		wantHit   bool
	}{
		{"cached", false, 0, true},
		{"expired", false, 2 * time.Minute, false},
		{"stale read", true, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCtxCache(10, time.Minute)
			_, _, gen := c.get(k, now)
			if tc.dropFirst {
				c.drop(k) // an analysis is stored while the read runs
			}
			c.put(k, []bson.M{{"ip": "1.2.3.4"}}, now, gen)
			if _, hit, _ := c.get(k, now.Add(tc.at)); hit != tc.wantHit {
				t.Fatalf("hit = %v, want %v", hit, tc.wantHit)
			}
		})
	}
}

// TestConvCacheKeepsWhatAPromptUses: the cache keeps the newest messages within the history
// token budget, stopping at the first that does not fit, as buildPrompt does.
func TestConvCacheKeepsWhatAPromptUses(t *testing.T) {
	u := bson.NewObjectID()
	k := convKey{"db", u, "s"}
	long := string(make([]byte, 4000)) // ~1,000 tokens
	for _, tc := range []struct {
		name   string
		budget int64
		want   []string // newest first
	}{
		{"all fit", 6000, []string{"c", long, "a"}},
		{"the long one stops it", 500, []string{"c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newConvCache(10, tc.budget)
			_, _, lead := c.get(k)
			c.fill(k, lead, nil, nil)
			for _, m := range []string{"a", long, "c"} {
				c.recorded("db", []any{msg(u, "s", "user", m)})
			}
			got, _, _ := c.get(k)
			if fmt.Sprint(texts(got)) != fmt.Sprint(tc.want) {
				t.Fatalf("kept %d messages, want %d", len(got), len(tc.want))
			}
		})
	}
}
