package chat

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/maula-ai/maula-chat/httpx"
	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/protocol"
	"github.com/maula-ai/maula-chat/providers"
	"github.com/maula-ai/maula-chat/tools"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

const (
	defaultPage = 50
	maxPage     = 200
	sessionScan = 5000 // messages scanned to list conversations
)

func pageLimit(n int) int {
	if n <= 0 {
		return defaultPage
	}
	return min(n, maxPage)
}

// parseBefore reads a "before" cursor: an RFC 3339 time.
func parseBefore(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("before must be an RFC 3339 time")
	}
	return t, nil
}

// History returns a conversation's messages, oldest first, before the cursor. Only the
// user's own messages are ever read: userId is part of every filter.
func (h *Hub) History(ctx context.Context, user bson.ObjectID, tool, session string, before time.Time, limit int) ([]protocol.ChatMessage, bool, error) {
	t, ok := h.o.Tools.Get(tool)
	if !ok {
		return nil, false, errUnknownTool
	}
	limit = pageLimit(limit)
	filter := bson.D{{Key: "sessionId", Value: session}, {Key: "userId", Value: user}}
	if !before.IsZero() {
		filter = append(filter, bson.E{Key: "timestamp", Value: bson.D{{Key: "$lt", Value: before}}})
	}
	cur, err := h.o.Mongo.DB(t.Database()).Collection(model.CollChatHistory).Find(ctx, filter,
		options.Find().SetSort(bson.D{{Key: "timestamp", Value: -1}}).SetLimit(int64(limit+1)))
	if err != nil {
		return nil, false, fmt.Errorf("read history: %w", err)
	}
	var docs []model.ChatMessage
	if err := cur.All(ctx, &docs); err != nil {
		return nil, false, fmt.Errorf("read history: %w", err)
	}
	more := len(docs) > limit
	if more {
		docs = docs[:limit]
	}
	out := make([]protocol.ChatMessage, len(docs))
	for i, d := range docs {
		m := protocol.ChatMessage{ID: d.ID.Hex(), Role: d.Role, Message: d.Message, Provider: d.Provider,
			Model: d.Model, RequestID: clientRequestID(d.RequestID), FinishReason: d.FinishReason,
			CostMicros: d.Tokens.CostMicros, Timestamp: d.Timestamp.UTC().Format(time.RFC3339Nano)}
		if d.Role == "assistant" {
			m.Usage = &protocol.Usage{Input: d.Tokens.Input, Output: d.Tokens.Output, CacheRead: d.Tokens.CacheRead,
				CacheWrite: d.Tokens.CacheWrite, Reasoning: d.Tokens.Reasoning, Estimated: d.Tokens.Estimated}
		}
		out[len(docs)-1-i] = m
	}
	return out, more, nil
}

// clientRequestID returns the client's id from the stored "<user>:<id>:<message>" key.
func clientRequestID(stored string) string {
	first, last := -1, -1
	for i := 0; i < len(stored); i++ {
		if stored[i] == ':' {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	if first < 0 || first == last {
		return stored
	}
	return stored[first+1 : last]
}

var errUnknownTool = fmt.Errorf("unknown tool")

// Sessions lists the user's conversations with a tool, newest first.
func (h *Hub) Sessions(ctx context.Context, user bson.ObjectID, tool string, before time.Time, limit int) ([]protocol.SessionInfo, bool, error) {
	t, ok := h.o.Tools.Get(tool)
	if !ok {
		return nil, false, errUnknownTool
	}
	limit = pageLimit(limit)
	// FerretDB's $group knows only $sum and $count, so group here over the newest messages: a
	// bounded scan of the (userId, timestamp) index.
	filter := bson.D{{Key: "userId", Value: user}}
	if !before.IsZero() {
		filter = append(filter, bson.E{Key: "timestamp", Value: bson.D{{Key: "$lt", Value: before}}})
	}
	cur, err := h.o.Mongo.DB(t.Database()).Collection(model.CollChatHistory).Find(ctx, filter,
		options.Find().SetSort(bson.D{{Key: "timestamp", Value: -1}}).SetLimit(sessionScan).
			SetProjection(bson.D{{Key: "sessionId", Value: 1}, {Key: "timestamp", Value: 1}, {Key: "message", Value: 1}, {Key: "role", Value: 1}}))
	if err != nil {
		return nil, false, fmt.Errorf("list sessions: %w", err)
	}
	var msgs []model.ChatMessage
	if err := cur.All(ctx, &msgs); err != nil {
		return nil, false, fmt.Errorf("list sessions: %w", err)
	}
	type row struct {
		ID    string
		Last  time.Time
		Count int64
		First string
	}
	var rows []*row
	byID := map[string]*row{}
	for _, m := range msgs { // newest first
		r := byID[m.SessionID]
		if r == nil {
			r = &row{ID: m.SessionID, Last: m.Timestamp}
			byID[m.SessionID] = r
			rows = append(rows, r)
		}
		r.Count++
		if m.Role == "user" {
			r.First = m.Message // ends as the oldest user message seen
		}
	}
	more := len(rows) > limit
	if more {
		rows = rows[:limit]
	}
	out := make([]protocol.SessionInfo, len(rows))
	for i, r := range rows {
		out[i] = protocol.SessionInfo{SessionID: r.ID, LastMessageAt: r.Last.UTC().Format(time.RFC3339Nano),
			Messages: r.Count, Preview: truncate(r.First, 120)}
	}
	return out, more, nil
}

// DeleteSession removes a conversation of the user's; it reports how many messages went.
func (h *Hub) DeleteSession(ctx context.Context, user bson.ObjectID, tool, session string) (int64, error) {
	t, ok := h.o.Tools.Get(tool)
	if !ok {
		return 0, errUnknownTool
	}
	if h.rec.conv != nil {
		defer h.rec.conv.drop(convKey{t.Database(), user, session}) // also if the delete failed midway
	}
	res, err := h.o.Mongo.DB(t.Database()).Collection(model.CollChatHistory).DeleteMany(ctx,
		bson.D{{Key: "sessionId", Value: session}, {Key: "userId", Value: user}})
	if err != nil {
		return 0, fmt.Errorf("delete session: %w", err)
	}
	return res.DeletedCount, nil
}

// historyFrame and sessionsFrame answer the socket's history.get and sessions.list.
func (h *Hub) historyFrame(c *conn, f *protocol.ClientFrame) {
	if f.SessionID == "" || !sessionIDPattern.MatchString(f.SessionID) {
		c.sendError(f.ID, protocol.CodeBadRequest, "history.get needs a valid sessionId", false, 0)
		return
	}
	c.query(f, func(ctx context.Context, fr protocol.ClientFrame, before time.Time) (any, error) {
		msgs, more, err := h.History(ctx, c.id.UserID, fr.Tool, fr.SessionID, before, fr.Limit)
		return protocol.History{Type: protocol.TypeHistory, ID: fr.ID, Tool: fr.Tool, SessionID: fr.SessionID, Messages: msgs, HasMore: more}, err
	})
}

func (h *Hub) sessionsFrame(c *conn, f *protocol.ClientFrame) {
	c.query(f, func(ctx context.Context, fr protocol.ClientFrame, before time.Time) (any, error) {
		list, more, err := h.Sessions(ctx, c.id.UserID, fr.Tool, before, fr.Limit)
		return protocol.Sessions{Type: protocol.TypeSessions, ID: fr.ID, Tool: fr.Tool, Sessions: list, HasMore: more}, err
	})
}

// query checks a read frame's tool and cursor, then runs it on its own goroutine so a slow
// query never stalls the connection's reader, and sends its answer or a chat.error.
func (c *conn) query(f *protocol.ClientFrame, run func(ctx context.Context, fr protocol.ClientFrame, before time.Time) (any, error)) {
	if !c.id.CanUse(f.Tool) {
		c.sendError(f.ID, protocol.CodeForbidden, "this API key is for another tool", false, 0)
		return
	}
	before, err := parseBefore(f.Before)
	if err != nil {
		c.sendError(f.ID, protocol.CodeBadRequest, err.Error(), false, 0)
		return
	}
	fr := *f
	go func() {
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		defer cancel()
		answer, err := run(ctx, fr, before)
		if err != nil {
			c.frameQueryError(fr.ID, err)
			return
		}
		c.send("", answer)
	}()
}

func (c *conn) frameQueryError(id string, err error) {
	if err == errUnknownTool {
		c.sendError(id, protocol.CodeNotFound, "unknown tool", false, 0)
		return
	}
	if c.ctx.Err() == nil {
		c.h.o.Log.Error("chat query", "err", err)
		c.sendError(id, protocol.CodeInternal, "could not read history", true, time.Second)
	}
}

// Routes mounts the WebSocket and the REST history routes. authn wraps a handler so that it
// runs only for an authenticated caller, whose identity identify returns.
func (h *Hub) Routes(mux *http.ServeMux, authn func(http.Handler) http.Handler, identify func(*http.Request) (Identity, bool)) {
	mux.Handle("GET /ai/chat", h)
	route := httpx.ToolRoute[Identity, tools.Tool]{
		Identify: identify,
		Tool:     h.o.Tools.Get,
		Allowed:  Identity.CanUse,
		NoCaller: httpx.Errorf(http.StatusUnauthorized, "unauthorized", "sign in first"),
		UnknownTool: func(string) *httpx.APIError {
			return httpx.Errorf(http.StatusNotFound, "not_found", "unknown tool")
		},
		// Forbidden: the default, 403 forbidden "this API key is for another tool".
	}
	rest := func(fn func(w http.ResponseWriter, r *http.Request, id Identity, tool string) error) http.Handler {
		return authn(route.Handle(func(w http.ResponseWriter, r *http.Request, id Identity, t tools.Tool) error {
			return fn(w, r, id, t.ID)
		}))
	}
	mux.Handle("GET /api/{tool}/chat/sessions", rest(func(w http.ResponseWriter, r *http.Request, id Identity, tool string) error {
		before, err := parseBefore(r.URL.Query().Get("before"))
		if err != nil {
			return httpx.Errorf(http.StatusBadRequest, "bad_request", "%v", err)
		}
		list, more, err := h.Sessions(r.Context(), id.UserID, tool, before, atoi(r.URL.Query().Get("limit")))
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"tool": tool, "sessions": list, "hasMore": more})
		return nil
	}))
	mux.Handle("GET /api/{tool}/chat/sessions/{id}/messages", rest(func(w http.ResponseWriter, r *http.Request, id Identity, tool string) error {
		session := r.PathValue("id")
		if !sessionIDPattern.MatchString(session) {
			return httpx.Errorf(http.StatusBadRequest, "bad_request", "invalid session id")
		}
		before, err := parseBefore(r.URL.Query().Get("before"))
		if err != nil {
			return httpx.Errorf(http.StatusBadRequest, "bad_request", "%v", err)
		}
		msgs, more, err := h.History(r.Context(), id.UserID, tool, session, before, atoi(r.URL.Query().Get("limit")))
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"tool": tool, "sessionId": session, "messages": msgs, "hasMore": more})
		return nil
	}))
	mux.Handle("DELETE /api/{tool}/chat/sessions/{id}", rest(func(w http.ResponseWriter, r *http.Request, id Identity, tool string) error {
		session := r.PathValue("id")
		if !sessionIDPattern.MatchString(session) {
			return httpx.Errorf(http.StatusBadRequest, "bad_request", "invalid session id")
		}
		n, err := h.DeleteSession(r.Context(), id.UserID, tool, session)
		if err != nil {
			return err
		}
		if n == 0 {
			return httpx.Errorf(http.StatusNotFound, "not_found", "no such conversation")
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"deleted": n})
		return nil
	}))
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' || n > 1e6 {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// StoredUsage reports the usage stored with the assistant reply of a request, for billing's
// recovery of reservations a crash left unsettled.
func (h *Hub) StoredUsage(ctx context.Context, requestID, tool string) (*providers.Usage, bool, error) {
	t, ok := h.o.Tools.Get(tool)
	if !ok {
		return nil, false, errUnknownTool
	}
	var m model.ChatMessage
	err := h.o.Mongo.DB(t.Database()).Collection(model.CollChatHistory).FindOne(ctx,
		bson.D{{Key: "requestId", Value: requestID}, {Key: "role", Value: "assistant"}}).Decode(&m)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("stored usage of %s: %w", requestID, err)
	}
	return &providers.Usage{Input: m.Tokens.Input, Output: m.Tokens.Output, CacheRead: m.Tokens.CacheRead,
		CacheWrite: m.Tokens.CacheWrite, Reasoning: m.Tokens.Reasoning, Estimated: m.Tokens.Estimated}, true, nil
}
