package chat

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/maula-ai/maula-chat/kv"
	"github.com/maula-ai/maula-chat/protocol"
	"github.com/maula-ai/maula-chat/providers"
	"github.com/maula-ai/maula-chat/tools"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// How a turn ended.
const (
	statusDone      = "done"
	statusCancelled = "cancelled"
	statusFailed    = "failed"
	statusAbandoned = "abandoned" // its socket dropped and nobody resumed within the grace period
)

const maxMessageBytes = 32 << 10

var sessionIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Stream buffer entries: a kind byte, then the payload.
const (
	entryStarted  = 's' // payload: the chat.started frame
	entryDelta    = 'd' // payload: the text; the delta's seq is the entry's seq - 1
	entryTerminal = 't' // payload: chat.done, chat.cancelled or chat.error
)

// turn is one chat.send being answered. Its goroutine (run) owns the stream and the counters;
// the fields under mu are shared with connections that attach, detach and cancel.
type turn struct {
	h        *Hub
	key      turnKey
	tool     tools.Tool
	provider string
	model    string
	f        protocol.ClientFrame
	session  string
	msgID    bson.ObjectID
	// completed is the finished turn for Options.Events, set by record and told by finish
	// (the turn's own goroutine, both).
	completed *CompletedTurn
	bufKey    string // stream buffer key
	ctx       context.Context
	stop      context.CancelFunc

	mu       sync.Mutex
	sink     *conn       // guarded by mu: the attached connection, nil while detached
	remote   int         // guarded by mu: followers on other instances
	grace    *time.Timer // guarded by mu
	why      string      // guarded by mu: why it was cancelled (statusCancelled or statusAbandoned)
	entrySeq uint64      // guarded by mu: last stream buffer entry written
	ended    bool        // guarded by mu: the terminal frame was emitted
}

func streamKey(user bson.ObjectID, id string) string {
	return "chatstream:" + user.Hex() + ":" + id
}

// startTurn validates a chat.send on the reader goroutine, registers the turn and starts it.
func (h *Hub) startTurn(c *conn, f *protocol.ClientFrame) {
	fail := func(code, msg string) { c.sendError(f.ID, code, msg, false, 0) }
	switch {
	case f.ID == "":
		fail(protocol.CodeBadRequest, "chat.send needs an id")
		return
	case f.Tool == "":
		fail(protocol.CodeBadRequest, "chat.send needs a tool")
		return
	case strings.TrimSpace(f.Message) == "":
		fail(protocol.CodeBadRequest, "message is empty")
		return
	case len(f.Message) > maxMessageBytes:
		fail(protocol.CodeBadRequest, "message longer than 32 KiB")
		return
	case f.SessionID != "" && !sessionIDPattern.MatchString(f.SessionID):
		fail(protocol.CodeBadRequest, "sessionId must be 1 to 64 letters, digits, - or _")
		return
	case f.MaxTokens < 0 || f.MaxTokens > 200000:
		fail(protocol.CodeBadRequest, "maxTokens must be from 1 to 200000")
		return
	case f.Temperature != nil && (*f.Temperature < 0 || *f.Temperature > 2):
		fail(protocol.CodeBadRequest, "temperature must be from 0 to 2")
		return
	case f.AnalysisID != "" && !validObjectID(f.AnalysisID):
		fail(protocol.CodeBadRequest, "analysisId is not an id")
		return
	}
	tool, ok := h.o.Tools.Get(f.Tool)
	if !ok {
		fail(protocol.CodeNotFound, "unknown tool "+truncate(f.Tool, 40))
		return
	}
	if !c.id.CanUse(f.Tool) {
		fail(protocol.CodeForbidden, "this API key is for another tool")
		return
	}
	if h.draining.Load() {
		c.sendError(f.ID, protocol.CodeShuttingDown, "server shutting down; retry on a new connection", true, 0)
		return
	}
	provider, model, ok := h.resolveModel(f.Provider, f.Model)
	if !ok {
		fail(protocol.CodeProviderUnavailable, "provider "+truncate(f.Provider, 40)+" is not available")
		return
	}
	key := turnKey{c.id.UserID, f.ID}
	c.mu.Lock()
	n := len(c.turns)
	c.mu.Unlock()
	if n >= h.o.MaxTurnsPerConn {
		c.sendError(f.ID, protocol.CodeTooManyRequests, "too many replies at once on this connection", true, 0)
		return
	}
	session := f.SessionID
	if session == "" {
		session = bson.NewObjectID().Hex()
	}
	t := &turn{h: h, key: key, tool: tool, provider: provider, model: model, f: *f, session: session,
		msgID: bson.NewObjectID(), bufKey: streamKey(c.id.UserID, f.ID), sink: c}
	s := h.shardFor(key.user)
	s.mu.Lock()
	switch {
	case s.turns[key] != nil:
		s.mu.Unlock()
		fail(protocol.CodeDuplicateID, "a reply with this id is running")
		return
	case s.users[key.user] >= h.o.MaxTurnsPerUser:
		s.mu.Unlock()
		c.sendError(f.ID, protocol.CodeTooManyRequests, "too many replies at once for this user", true, 0)
		return
	}
	s.turns[key] = t
	s.users[key.user]++
	h.turnsWG.Add(1)
	s.mu.Unlock()
	c.mu.Lock()
	c.turns[f.ID] = t
	c.mu.Unlock()
	t.ctx, t.stop = context.WithCancel(h.baseCtx)
	go t.run(c.id)
}

// resolveModel picks the provider's default model when none is named, and checks that the
// provider is available.
func (h *Hub) resolveModel(provider, model string) (string, string, bool) {
	for _, p := range h.o.Providers.List() {
		if p.Name != provider || !p.Available {
			continue
		}
		if model == "" {
			model = p.DefaultModel
		}
		for _, m := range p.Models {
			if m.ID == model {
				return provider, model, true
			}
		}
		return "", "", false
	}
	return "", "", false
}

func (h *Hub) lookup(key turnKey) *turn {
	s := h.shardFor(key.user)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.turns[key]
}

// finish unregisters the turn everywhere.
func (t *turn) finish() {
	s := t.h.shardFor(t.key.user)
	s.mu.Lock()
	delete(s.turns, t.key)
	if s.users[t.key.user]--; s.users[t.key.user] <= 0 {
		delete(s.users, t.key.user)
	}
	s.mu.Unlock()
	t.mu.Lock()
	sink := t.sink
	t.sink = nil
	if t.grace != nil {
		t.grace.Stop()
	}
	t.mu.Unlock()
	if sink != nil {
		sink.mu.Lock()
		if sink.turns[t.key.id] == t {
			delete(sink.turns, t.key.id)
		}
		sink.mu.Unlock()
	}
	t.stop()
	if t.completed != nil {
		t.h.o.Events.TurnCompleted(t.h.baseCtx, *t.completed)
	}
	t.h.turnsWG.Done()
}

// cancel stops the upstream call; run stores and bills what was produced.
func (t *turn) cancel(why string) {
	t.mu.Lock()
	if t.why == "" {
		t.why = why
	}
	t.mu.Unlock()
	t.stop()
}

// emit writes a frame to the stream buffer (for resume) and to the attached connection.
// kind is an entry kind; for deltas seq is the delta's seq.
func (t *turn) emit(kind byte, seq uint64, text string, raw []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.entrySeq++
	data := make([]byte, 0, 1+len(text)+len(raw))
	data = append(data, kind)
	if kind == entryDelta {
		data = append(data, text...)
	} else {
		data = append(data, raw...)
	}
	// The buffer outlives the turn by a grace period so a late resume still gets the end.
	ttl := 2*t.h.o.Grace + time.Minute
	err := t.h.o.KV.Append(context.Background(), t.bufKey, t.entrySeq, data, ttl)
	if errors.Is(err, kv.ErrSeqNotRising) && t.entrySeq == 1 && t.endedBuffer(context.Background()) {
		// The id belonged to a reply that has ended (ids are unique among running replies
		// only) and its buffer is still kept: drop it, or a resume would replay that reply.
		if err = t.h.o.KV.DropStream(context.Background(), t.bufKey); err == nil {
			err = t.h.o.KV.Append(context.Background(), t.bufKey, t.entrySeq, data, ttl)
		}
	}
	if err != nil {
		t.h.o.Log.Warn("stream buffer append failed", "err", err)
	}
	if kind == entryTerminal {
		t.ended = true
	}
	if t.sink == nil {
		return
	}
	if kind == entryDelta {
		t.sink.enqueueDelta(t.key.id, seq, text)
	} else {
		t.sink.enqueueRaw(t.key.id, raw)
	}
}

// endedBuffer reports whether the stream buffer of t's id ends with a terminal entry, i.e. the
// reply that used the id before has ended. The duplicate-id check is per instance: a buffer
// that is still growing belongs to a reply running on another instance and is left alone.
// Read in pages; only a reused id comes here.
func (t *turn) endedBuffer(ctx context.Context) bool {
	var last kv.Entry
	for after := uint64(0); ; after = last.Seq {
		es, err := t.h.o.KV.Read(ctx, t.bufKey, after, 1000, 0)
		if err != nil {
			return false
		}
		if len(es) == 0 {
			break
		}
		last = es[len(es)-1]
	}
	return len(last.Data) > 0 && last.Data[0] == entryTerminal
}

// sendLive sends a frame that is not kept for resume (chat.usage).
func (t *turn) sendLive(raw []byte) {
	t.mu.Lock()
	sink := t.sink
	t.mu.Unlock()
	if sink != nil {
		sink.enqueueRaw(t.key.id, raw)
	}
}

// attach makes c the turn's connection: it replays the buffer after afterSeq and continues
// live, under mu so that no frame is missed or doubled in between.
func (t *turn) attach(c *conn, afterSeq uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	entries, err := t.h.o.KV.Read(c.ctx, t.bufKey, entryAfter(afterSeq), 0, 0)
	if err != nil {
		return err
	}
	for _, e := range entries {
		deliverEntry(c, t.key.id, e, false)
	}
	old := t.sink
	t.sink = c
	if t.grace != nil {
		t.grace.Stop()
		t.grace = nil
	}
	if old != nil && old != c {
		old.mu.Lock()
		delete(old.turns, t.key.id)
		old.mu.Unlock()
	}
	c.mu.Lock()
	c.turns[t.key.id] = t
	c.mu.Unlock()
	return nil
}

// entryAfter maps a client's afterSeq (a delta seq) to the buffer entry to read after:
// entry 1 is chat.started and delta n is entry n+1. afterSeq 0 replays chat.started too.
func entryAfter(afterSeq uint64) uint64 {
	if afterSeq == 0 {
		return 0
	}
	return afterSeq + 1
}

// deliverEntry sends one buffered entry to c. It reports whether it was the terminal one.
func deliverEntry(c *conn, id string, e kv.Entry, terminalOnly bool) bool {
	data := e.Data
	if len(data) == 0 {
		return false
	}
	switch data[0] {
	case entryDelta:
		if !terminalOnly {
			c.enqueueDelta(id, e.Seq-1, string(data[1:]))
		}
	case entryStarted:
		if !terminalOnly {
			c.enqueueRaw(id, data[1:])
		}
	case entryTerminal:
		c.enqueueRaw(id, data[1:])
		return true
	}
	return false
}

// detach is called when c's socket is gone: the turn goes on for the grace period, or stops
// now if it asked for cancel-on-disconnect.
func (t *turn) detach(c *conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sink != c {
		return
	}
	t.sink = nil
	if t.f.CancelOnDisconnect {
		if t.why == "" {
			t.why = statusAbandoned
		}
		t.stop()
		return
	}
	t.armGraceLocked()
}

func (t *turn) armGraceLocked() {
	if t.sink != nil || t.remote > 0 || t.ended {
		return
	}
	if t.grace != nil {
		t.grace.Stop()
	}
	t.grace = time.AfterFunc(t.h.o.Grace, func() { t.cancel(statusAbandoned) })
}

// remoteFollow and remoteUnfollow track followers on other instances (control messages).
func (t *turn) remoteFollow() {
	t.mu.Lock()
	t.remote++
	if t.grace != nil {
		t.grace.Stop()
		t.grace = nil
	}
	t.mu.Unlock()
}

func (t *turn) remoteUnfollow() {
	t.mu.Lock()
	if t.remote > 0 {
		t.remote--
	}
	t.armGraceLocked()
	t.mu.Unlock()
}

func toProtoUsage(u providers.Usage) protocol.Usage {
	return protocol.Usage{Input: u.Input, Output: u.Output, CacheRead: u.CacheRead,
		CacheWrite: u.CacheWrite, Reasoning: u.Reasoning, Estimated: u.Estimated}
}

func usd(micros int64) float64 { return float64(micros) / 1e6 }

// run answers the turn: rate limit, context and history, credits, the stream, the record.
func (t *turn) run(id Identity) {
	defer t.finish()
	h := t.h
	fail := func(code, msg string, retryable bool, after time.Duration) {
		t.emit(entryTerminal, 0, "", mustJSON(protocol.Error{Type: protocol.TypeChatError, ID: t.key.id,
			Code: code, Message: msg, Retryable: retryable, RetryAfterMs: after.Milliseconds()}))
	}
	t0 := time.Now()
	ok, after, err := h.o.Auth.AllowChat(t.ctx, id)
	h.m.observe("rate", t0)
	if err != nil {
		fail(protocol.CodeInternal, "rate limiter unavailable", true, time.Second)
		return
	}
	if !ok {
		fail(protocol.CodeRateLimited, "message rate of your plan reached", true, after)
		return
	}
	t1 := time.Now()
	prompt, err := h.buildPrompt(t.ctx, t)
	h.m.observe("prompt", t1)
	if err != nil {
		if errors.Is(err, errAnalysisNotFound) {
			fail(protocol.CodeNotFound, "no such analysis", false, 0)
			return
		}
		h.o.Log.Error("load chat context", "err", err)
		fail(protocol.CodeInternal, "could not load the conversation", true, time.Second)
		return
	}
	maxTokens := int64(t.f.MaxTokens)
	if maxTokens == 0 {
		maxTokens = int64(h.o.DefaultMaxTokens)
	}
	t2 := time.Now()
	res, err := h.o.Billing.Reserve(t.ctx, ReserveRequest{RequestID: t.requestID(), UserID: t.key.user,
		Tool: t.tool.ID, Provider: t.provider, Model: t.model,
		PromptTokens: prompt.tokens, MaxTokens: maxTokens})
	switch {
	case errors.Is(err, ErrInsufficientCredits):
		fail(protocol.CodeInsufficientCredits, "no AI credits left on your plan", false, 0)
		return
	case err != nil:
		h.o.Log.Error("reserve credits", "err", err)
		fail(protocol.CodeInternal, "could not reserve credits", true, time.Second)
		return
	}
	h.m.observe("reserve", t2)
	prompt.req.MaxTokens = int(res.MaxTokens)
	t.emit(entryStarted, 0, "", mustJSON(protocol.Started{Type: protocol.TypeChatStarted, ID: t.key.id,
		SessionID: t.session, MessageID: t.msgID.Hex(), Provider: t.provider, Model: t.model}))
	r := t.stream(prompt, res)
	t.record(prompt, res, r, id.Plan)
}

// requestID is the turn's idempotency key for money: unique per user and client id.
func (t *turn) requestID() string { return t.key.user.Hex() + ":" + t.key.id + ":" + t.msgID.Hex() }

// streamResult is what came back from the provider.
type streamResult struct {
	text     strings.Builder
	seq      uint64
	usage    providers.Usage
	reason   string
	provider string
	model    string
	err      *providers.Error
}

// stream relays the provider's events; it returns when the stream ends, however it ends.
func (t *turn) stream(p *prompt, res Reservation) *streamResult {
	h := t.h
	r := &streamResult{provider: t.provider, model: t.model}
	st, err := h.o.Providers.Stream(t.ctx, t.provider, &p.req)
	if err != nil {
		if t.ctx.Err() != nil {
			r.reason = providers.FinishCancelled
			r.usage = providers.Usage{Input: p.tokens, Estimated: true}
			return r
		}
		r.err = providers.AsError(t.provider, err)
		return r
	}
	defer st.Close()
	lastUsage := time.Now()
	called := lastUsage
	for {
		ev, err := st.Recv()
		if err != nil { // io.EOF after a terminal event, or a stream that broke without one
			if r.reason == "" && r.err == nil {
				r.err = providers.AsError(t.provider, err)
			}
			return r
		}
		switch ev.Type {
		case providers.EventDelta:
			if ev.Text == "" {
				continue
			}
			r.seq++
			if r.seq == 1 {
				h.m.observe("first_token", called)
			}
			r.text.WriteString(ev.Text)
			t.emit(entryDelta, r.seq, ev.Text, nil)
			if now := time.Now(); now.Sub(lastUsage) >= time.Second {
				lastUsage = now
				u := providers.Usage{Input: p.tokens, Output: providers.EstimateTokens(r.text.String()), Estimated: true}
				cost, left := h.o.Billing.LiveCost(res, t.provider, t.model, u)
				t.sendLive(mustJSON(protocol.UsageFrame{Type: protocol.TypeChatUsage, ID: t.key.id,
					Usage: toProtoUsage(u), CostUSD: usd(cost), CreditsLeft: left}))
			}
		case providers.EventFinish:
			r.reason, r.usage = ev.FinishReason, ev.Usage
			r.served(ev)
			return r
		case providers.EventError:
			r.err, r.usage = ev.Err, ev.Usage
			r.served(ev)
			return r
		}
	}
}

func (r *streamResult) served(ev providers.Event) {
	if ev.Provider != "" {
		r.provider = ev.Provider
	}
	if ev.Model != "" {
		r.model = ev.Model
	}
}

// record stores the messages, settles the credits and sends the terminal frame, in that
// order: what chat.done or chat.cancelled reports is stored. When the messages cannot be
// stored, the turn is settled as failed without output (nothing charged) and ends with a
// retryable chat.error.
func (t *turn) record(p *prompt, res Reservation, r *streamResult, plan string) {
	h := t.h
	now := time.Now().UTC()
	t.mu.Lock()
	why := t.why
	t.mu.Unlock()
	status := statusDone
	switch {
	case r.reason == providers.FinishCancelled:
		status = statusCancelled
		if why == statusAbandoned {
			status = statusAbandoned
		}
	case r.err != nil:
		status = statusFailed
	}
	finish := r.reason
	if status == statusDone && res.CapLowered && finish == providers.FinishLength {
		finish = "credits_exhausted"
	}
	if status != statusDone && finish == "" {
		finish = status
	}
	produced := r.seq > 0
	if r.usage == (providers.Usage{}) && produced {
		r.usage = providers.Usage{Input: p.tokens, Output: providers.EstimateTokens(r.text.String()), Estimated: true}
	}
	var costMicros int64
	var priceID string
	if c, err := h.o.Prices.Cost(r.provider, r.model, r.usage, now); err == nil {
		costMicros, priceID = c.Micros, c.PriceID
	} else {
		h.o.Log.Error("price a turn", "provider", r.provider, "model", r.model, "err", err)
	}
	t3 := time.Now()
	stored := true
	if (produced || status != statusFailed) && !h.o.Unrecorded {
		if err := h.rec.insert(h.baseCtx, t.tool.Database(), t.messages(p, r, finish, costMicros, priceID, now)); err != nil {
			h.o.Log.Error("store chat messages", "err", err, "request", t.requestID())
			stored = false
		}
	}
	h.m.observe("record", t3)
	out := Outcome{Usage: r.usage, Provider: r.provider, Model: r.model, ProducedOutput: produced, Status: status, At: now}
	if !stored {
		out = unstored(out)
	}
	t4 := time.Now()
	set, err := h.o.Billing.Settle(h.baseCtx, res, out)
	if err != nil {
		h.o.Log.Error("settle credits", "err", err, "request", t.requestID())
		set = Settlement{CostMicros: costMicros, CreditsLeft: res.CreditsLeft}
	}
	h.m.observe("settle", t4)
	h.m.turns.WithLabelValues(out.Status).Inc()
	if !stored {
		// Nothing of the reply can be read back: say so instead of chat.done or chat.cancelled,
		// whose figures are those of stored messages.
		t.emit(entryTerminal, 0, "", mustJSON(protocol.Error{Type: protocol.TypeChatError, ID: t.key.id, Seq: r.seq,
			Code: protocol.CodeInternal, Message: "could not store the reply; nothing was charged",
			Retryable: true, RetryAfterMs: time.Second.Milliseconds()}))
		return
	}
	u := toProtoUsage(r.usage)
	switch status {
	case statusDone:
		t.emit(entryTerminal, 0, "", mustJSON(protocol.Done{Type: protocol.TypeChatDone, ID: t.key.id, Seq: r.seq,
			FinishReason: finish, Usage: u, CostUSD: usd(costMicros), CostMicros: costMicros, CreditsLeft: set.CreditsLeft}))
	case statusCancelled, statusAbandoned:
		t.emit(entryTerminal, 0, "", mustJSON(protocol.Cancelled{Type: protocol.TypeChatCancelled, ID: t.key.id, Seq: r.seq,
			Usage: u, CostUSD: usd(costMicros), CostMicros: costMicros, CreditsLeft: set.CreditsLeft}))
	default:
		t.emitFailure(r)
		return
	}
	if h.o.Events != nil {
		// Told by finish, once the turn no longer holds its id: the listeners' work (webhooks)
		// must not keep the client from reusing it, nor count against its turns in flight.
		t.completed = &CompletedTurn{UserID: t.key.user, Plan: plan, Tool: t.tool.ID, SessionID: t.session,
			ID: t.key.id, Provider: r.provider, Model: r.model, Status: status, Finish: finish, Usage: r.usage,
			CostMicros: costMicros, CreditsLeft: set.CreditsLeft}
	}
}

// unstored is the settlement outcome of a turn whose messages could not be stored, however it
// ended. The client gets chat.error and can read nothing of the reply back, so billing is told
// of a failed turn without output: the outcome charged nothing under every credit policy
// (docs/billing.md), and the one billing's reconcile and rollups expect to have no stored
// message. The usage is kept: the provider was paid, and the cost report says so.
func unstored(o Outcome) Outcome {
	o.Reason = fmt.Sprintf("reply not stored (%s, output sent: %v): settled as failed, not charged", o.Status, o.ProducedOutput)
	o.Status = statusFailed
	o.ProducedOutput = false
	return o
}

// emitFailure ends a reply whose provider failed with chat.error.
func (t *turn) emitFailure(r *streamResult) {
	pe := r.err
	if pe == nil {
		pe = &providers.Error{Provider: r.provider, Message: "the provider failed", Retryable: true}
	}
	t.emit(entryTerminal, 0, "", mustJSON(protocol.Error{Type: protocol.TypeChatError, ID: t.key.id, Seq: r.seq,
		Code: protocol.CodeProviderError, Message: pe.Message, Retryable: pe.Retryable,
		RetryAfterMs: pe.RetryAfter.Milliseconds()}))
}

func validObjectID(s string) bool {
	_, err := bson.ObjectIDFromHex(s)
	return err == nil
}
