package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/providers"
	"github.com/maula-ai/maula-chat/store"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"time"
)

// recorder writes chat messages with group commit: concurrent turns' messages for the same
// tool database go to the server in one InsertMany. Its loop goroutine owns the batch.
type recorder struct {
	history historyWriter
	log     *slog.Logger
	in      chan *recordReq
	done    chan struct{}
	// conv and ctx cache what prompts read, when this process is the store's only writer
	// (convcache.go); nil otherwise.
	conv *convCache
	ctx  *ctxCache
}

// historyWriter stores a batch of chat messages in one tool database's chat_history.
type historyWriter interface {
	insertMany(ctx context.Context, db string, docs []any) error
}

// mongoHistory is the historyWriter of a running hub.
type mongoHistory struct{ s *store.Store }

func (m mongoHistory) insertMany(ctx context.Context, db string, docs []any) error {
	// Queued with the process's other writes to the database (store.Write).
	return m.s.Write(db, func() error {
		_, err := m.s.DB(db).Collection(model.CollChatHistory).InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
		return err
	})
}

type recordReq struct {
	db   string
	docs []any
	errc chan error
}

// newRecorder starts a recorder writing to m; historyTokens is the prompts' history budget
// (what the conversation cache needs to keep).
func newRecorder(m *store.Store, log *slog.Logger, historyTokens int) *recorder {
	r := newRecorderTo(mongoHistory{m}, log)
	if m != nil && m.SoleWriter() {
		r.conv, r.ctx = newConvCache(10000, int64(historyTokens)), newCtxCache(5000, time.Minute)
	}
	return r
}

// newRecorderTo starts a recorder writing to w.
func newRecorderTo(w historyWriter, log *slog.Logger) *recorder {
	r := &recorder{history: w, log: log, in: make(chan *recordReq, 1024), done: make(chan struct{})}
	go r.loop()
	return r
}

// insert queues docs and waits until they are written. After an error they are not known to
// be stored (a cancelled ctx stops the wait, not a write under way).
func (r *recorder) insert(ctx context.Context, db string, docs []any) error {
	req := &recordReq{db: db, docs: docs, errc: make(chan error, 1)}
	select {
	case r.in <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *recorder) loop() {
	defer close(r.done)
	for first := range r.in {
		batch := []*recordReq{first}
	drain:
		for len(batch) < 256 {
			select {
			case req, ok := <-r.in:
				if !ok {
					break drain
				}
				batch = append(batch, req)
			default:
				break drain
			}
		}
		r.write(batch)
	}
}

// write inserts a batch, one InsertMany per database, the databases in parallel.
func (r *recorder) write(batch []*recordReq) {
	byDB := map[string][]*recordReq{}
	for _, req := range batch {
		byDB[req.db] = append(byDB[req.db], req)
	}
	var wg sync.WaitGroup
	for db, reqs := range byDB {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var docs []any
			for _, req := range reqs {
				docs = append(docs, req.docs...)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := r.history.insertMany(ctx, db, docs)
			switch {
			case err != nil && r.conv != nil:
				r.conv.forget(db, docs)
			case r.conv != nil:
				r.conv.recorded(db, docs)
			}
			if err != nil {
				err = fmt.Errorf("insert %d chat messages into %s: %w", len(docs), db, err)
			}
			for _, req := range reqs {
				req.errc <- err
			}
		}()
	}
	wg.Wait()
}

func (r *recorder) close() {
	close(r.in)
	<-r.done
}

// messages builds the user message and the assistant reply of a turn, as the seed's
// ChatMessage.
func (t *turn) messages(p *prompt, r *streamResult, finish string, costMicros int64, priceID string, now time.Time) []any {
	userMsg := model.ChatMessage{
		ID: bson.NewObjectID(), UserID: t.key.user, SessionID: t.session, Provider: t.provider,
		Role: "user", Message: t.f.Message, Context: p.context,
		Tokens:    model.ChatTokens{Input: providers.EstimateTokens(t.f.Message)},
		Timestamp: now.Add(-time.Millisecond), Model: t.model, RequestID: t.requestID(),
	}
	reply := model.ChatMessage{
		ID: t.msgID, UserID: t.key.user, SessionID: t.session, Provider: r.provider,
		Role: "assistant", Message: r.text.String(),
		Tokens: model.ChatTokens{Input: r.usage.Input, Output: r.usage.Output, Cost: usd(costMicros),
			CacheRead: r.usage.CacheRead, CacheWrite: r.usage.CacheWrite, Reasoning: r.usage.Reasoning,
			Estimated: r.usage.Estimated, CostMicros: costMicros, PriceID: priceID},
		Timestamp: now, Model: r.model, RequestID: t.requestID(), FinishReason: finish,
	}
	return []any{userMsg, reply}
}

// prompt is a built provider request with its stored context.
type prompt struct {
	req     providers.Request
	context model.ChatContext
	tokens  int64 // estimated prompt tokens
}

var errAnalysisNotFound = errors.New("analysis not found")

// buildPrompt loads the tool context and the conversation concurrently and builds the request:
// the tool's system prompt, the context (marked cacheable), the history within the token
// budget, then the new message.
func (h *Hub) buildPrompt(ctx context.Context, t *turn) (*prompt, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	db := h.o.Mongo.DB(t.tool.Database())
	var (
		analyses []bson.M
		history  []model.ChatMessage
		errA     error
		errH     error
		wg       sync.WaitGroup
	)
	wg.Add(2)
	go func() { defer wg.Done(); analyses, errA = h.loadContext(ctx, db, t) }()
	go func() { defer wg.Done(); history, errH = h.loadHistory(ctx, db, t) }()
	wg.Wait()
	if errA != nil {
		return nil, errA
	}
	if errH != nil {
		return nil, errH
	}
	p := &prompt{req: providers.Request{Model: t.model, System: t.tool.SystemPrompt, Temperature: t.f.Temperature, CacheHint: true}}
	if len(analyses) > 0 {
		b, _ := json.Marshal(analyses)
		p.req.Context = "The user's " + t.tool.Name + " analyses (most recent first):\n" + string(b)
		if t.f.AnalysisID != "" {
			p.context.ToolData = analyses[0]
		} else {
			prev := make([]any, len(analyses))
			for i, a := range analyses {
				prev[i] = a
			}
			p.context.PreviousResults = prev
		}
	}
	// History arrives newest first; keep what fits the budget, then restore the order.
	history = history[:fitting(history, int64(h.o.HistoryTokens), func(m *model.ChatMessage) string { return m.Message })]
	var kept []providers.Message
	for _, m := range history {
		role := providers.RoleUser
		if m.Role == "assistant" {
			role = providers.RoleAssistant
		}
		kept = append(kept, providers.Message{Role: role, Content: m.Message})
	}
	for i, j := 0, len(kept)-1; i < j; i, j = i+1, j-1 {
		kept[i], kept[j] = kept[j], kept[i]
	}
	p.req.Messages = append(kept, providers.Message{Role: providers.RoleUser, Content: t.f.Message})
	p.tokens = providers.EstimateTokens(p.req.System) + providers.EstimateTokens(p.req.Context)
	for _, m := range p.req.Messages {
		p.tokens += providers.EstimateTokens(m.Content)
	}
	return p, nil
}

func (h *Hub) loadContext(ctx context.Context, db *mongo.Database, t *turn) ([]bson.M, error) {
	c := h.rec.ctx
	if c == nil || t.f.AnalysisID != "" {
		return h.readContext(ctx, db, t)
	}
	k := ctxKey{db.Name(), t.key.user}
	now := time.Now()
	a, hit, gen := c.get(k, now)
	if hit {
		return a, nil
	}
	a, err := h.readContext(ctx, db, t)
	if err == nil {
		c.put(k, a, now, gen)
	}
	return a, err
}

// AnalysisCreated tells the hub that the user has a new analysis of tool, so that the next
// prompt's context includes it (analyses.Notifier).
func (h *Hub) AnalysisCreated(_ context.Context, tool string, userID bson.ObjectID, _ any, _ float64) error {
	if t, ok := h.o.Tools.Get(tool); ok && h.rec.ctx != nil {
		h.rec.ctx.drop(ctxKey{t.Database(), userID})
	}
	return nil
}

func (h *Hub) readContext(ctx context.Context, db *mongo.Database, t *turn) ([]bson.M, error) {
	coll := db.Collection(model.CollAnalyses)
	proj := options.Find().SetProjection(bson.D{{Key: "userId", Value: 0}})
	if t.f.AnalysisID != "" {
		oid, _ := bson.ObjectIDFromHex(t.f.AnalysisID)
		var a bson.M
		err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: oid}, {Key: "userId", Value: t.key.user}},
			options.FindOne().SetProjection(bson.D{{Key: "userId", Value: 0}})).Decode(&a)
		if errors.Is(err, mongo.ErrNoDocuments) {
			return nil, errAnalysisNotFound
		}
		if err != nil {
			return nil, fmt.Errorf("load analysis: %w", err)
		}
		return []bson.M{a}, nil
	}
	cur, err := coll.Find(ctx, bson.D{{Key: "userId", Value: t.key.user}},
		proj.SetSort(bson.D{{Key: "userId", Value: 1}, {Key: "createdAt", Value: -1}}).SetLimit(3))
	if err != nil {
		return nil, fmt.Errorf("load analyses: %w", err)
	}
	var out []bson.M
	if err := cur.All(ctx, &out); err != nil {
		return nil, fmt.Errorf("load analyses: %w", err)
	}
	return out, nil
}

func (h *Hub) loadHistory(ctx context.Context, db *mongo.Database, t *turn) ([]model.ChatMessage, error) {
	c := h.rec.conv
	if t.f.SessionID == "" {
		if c != nil { // a new conversation: known to be empty, no read ever needed
			k := convKey{db.Name(), t.key.user, t.session}
			if _, _, lead := c.get(k); lead != nil {
				c.fill(k, lead, nil, nil)
			}
		}
		return nil, nil
	}
	if c == nil {
		return h.readHistory(ctx, db, t)
	}
	k := convKey{db.Name(), t.key.user, t.session}
	msgs, hit, lead := c.get(k)
	if hit {
		return msgs, nil
	}
	msgs, err := h.readHistory(ctx, db, t)
	if lead != nil {
		c.fill(k, lead, msgs, err)
	}
	return msgs, err
}

func (h *Hub) readHistory(ctx context.Context, db *mongo.Database, t *turn) ([]model.ChatMessage, error) {
	cur, err := db.Collection(model.CollChatHistory).Find(ctx,
		bson.D{{Key: "sessionId", Value: t.session}, {Key: "userId", Value: t.key.user}},
		options.Find().SetSort(bson.D{{Key: "timestamp", Value: -1}}).SetLimit(histLimit))
	if err != nil {
		return nil, fmt.Errorf("load history: %w", err)
	}
	var out []model.ChatMessage
	if err := cur.All(ctx, &out); err != nil {
		return nil, fmt.Errorf("load history: %w", err)
	}
	return out, nil
}
