package chat

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/maula-ai/maula-chat/protocol"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// controlChannel carries cancel and resume between instances sharing a kv store.
const controlChannel = "chat:control"

const (
	opCancel = "cancel" // stop the user's request
	opFollow = "follow" // someone on another instance follows the request's stream
	opDetach = "detach" // that follower is gone
)

type controlMsg struct {
	Op   string `json:"op"`
	User string `json:"user"`
	ID   string `json:"id"`
	From string `json:"from"`
}

func (h *Hub) startControl(ctx context.Context) error {
	ch, err := h.o.KV.Subscribe(ctx, controlChannel)
	if err != nil {
		return fmt.Errorf("subscribe to chat control: %w", err)
	}
	h.ctlDone = make(chan struct{})
	go func() {
		defer close(h.ctlDone)
		for raw := range ch {
			var m controlMsg
			if json.Unmarshal(raw, &m) != nil || m.From == h.o.InstanceID {
				continue
			}
			user, err := bson.ObjectIDFromHex(m.User)
			if err != nil {
				continue
			}
			t := h.lookup(turnKey{user, m.ID})
			if t == nil {
				continue
			}
			switch m.Op {
			case opCancel:
				t.cancel(statusCancelled)
			case opFollow:
				t.remoteFollow()
			case opDetach:
				t.remoteUnfollow()
			}
		}
	}()
	return nil
}

func (h *Hub) publishControl(m controlMsg) {
	m.From = h.o.InstanceID
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := h.o.KV.Publish(ctx, controlChannel, mustJSON(m)); err != nil {
		h.o.Log.Warn("publish chat control", "op", m.Op, "err", err)
	}
}

// cancelRequest handles chat.cancel: locally when the turn runs here, otherwise through the
// control channel to the instance that runs it. The client gets chat.cancelled either way.
func (h *Hub) cancelRequest(c *conn, id string) {
	if id == "" {
		c.sendError("", protocol.CodeBadRequest, "chat.cancel needs an id", false, 0)
		return
	}
	if t := h.lookup(turnKey{c.id.UserID, id}); t != nil {
		if t.sinkIs(c) {
			t.cancel(statusCancelled)
			return
		}
		// Running here but attached elsewhere: follow its end on this connection too.
		t.cancel(statusCancelled)
	} else {
		h.publishControl(controlMsg{Op: opCancel, User: c.id.UserID.Hex(), ID: id})
	}
	c.mu.Lock()
	_, following := c.followers[id]
	c.mu.Unlock()
	if !following {
		h.follow(c, id, 0, true)
	}
}

func (t *turn) sinkIs(c *conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sink == c
}

// resume handles chat.resume: attach to the turn when it runs here, else follow its stream
// buffer, which the running instance keeps writing.
func (h *Hub) resume(c *conn, id string, afterSeq uint64) {
	if id == "" {
		c.sendError("", protocol.CodeBadRequest, "chat.resume needs an id", false, 0)
		return
	}
	if t := h.lookup(turnKey{c.id.UserID, id}); t != nil {
		if err := t.attach(c, afterSeq); err != nil {
			c.sendError(id, protocol.CodeInternal, "could not replay the reply", true, time.Second)
		}
		return
	}
	h.follow(c, id, afterSeq, false)
}

// follow streams a request's buffered frames after afterSeq to c until the terminal frame.
// terminalOnly delivers just that frame (after a cancel sent from here).
func (h *Hub) follow(c *conn, id string, afterSeq uint64, terminalOnly bool) {
	key := streamKey(c.id.UserID, id)
	first, err := h.o.KV.Read(c.ctx, key, 0, 1, 0)
	if err != nil {
		c.sendError(id, protocol.CodeInternal, "could not read the reply", true, time.Second)
		return
	}
	if len(first) == 0 {
		c.sendError(id, protocol.CodeNotFound, "no reply with this id to resume", false, 0)
		return
	}
	ctx, stop := context.WithCancel(c.ctx)
	c.mu.Lock()
	if old := c.followers[id]; old != nil {
		old()
	}
	c.followers[id] = stop
	c.mu.Unlock()
	h.publishControl(controlMsg{Op: opFollow, User: c.id.UserID.Hex(), ID: id})
	go func() {
		ended := false // the terminal frame was delivered
		defer func() {
			stop()
			c.mu.Lock()
			delete(c.followers, id)
			c.mu.Unlock()
			if !ended {
				// This follower stopped early (its socket closed): the owner re-arms its grace.
				h.publishControl(controlMsg{Op: opDetach, User: c.id.UserID.Hex(), ID: id})
			}
		}()
		after := entryAfter(afterSeq)
		idle := time.Now()
		for ctx.Err() == nil {
			entries, err := h.o.KV.Read(ctx, key, after, 512, 2*time.Second)
			if err != nil {
				if ctx.Err() == nil {
					c.sendError(id, protocol.CodeInternal, "lost the reply's stream", true, time.Second)
				}
				return
			}
			if len(entries) == 0 {
				// The owner keeps writing while it lives; silence past the grace period means
				// it died with the reply unfinished.
				if time.Since(idle) > h.o.Grace+10*time.Second {
					c.sendError(id, protocol.CodeProviderError, "the reply's stream stopped", true, 0)
					return
				}
				continue
			}
			idle = time.Now()
			for _, e := range entries {
				after = e.Seq
				if deliverEntry(c, id, e, terminalOnly) {
					ended = true
					return
				}
			}
		}
	}()
}
