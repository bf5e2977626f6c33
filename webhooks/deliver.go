package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/maula-ai/maula-chat/model"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Delivery statuses.
const (
	StatusPending   = "pending"
	StatusDelivered = "delivered"
	StatusFailed    = "failed"    // every attempt of the policy failed
	StatusCancelled = "cancelled" // the webhook was deleted or disabled first
)

// Delivery is a document of maula-auth-db.webhook_deliveries: one event for one webhook, with
// its attempts so far. The body is fixed when the event is queued, so every attempt sends the
// same bytes (with a fresh timestamp and signature).
type Delivery struct {
	ID            bson.ObjectID `bson:"_id" json:"id"`
	WebhookID     bson.ObjectID `bson:"webhookId" json:"webhookId"`
	UserID        bson.ObjectID `bson:"userId" json:"userId"`
	Tool          string        `bson:"tool" json:"tool"`
	Event         string        `bson:"event" json:"event"`
	EventID       string        `bson:"eventId" json:"eventId"`
	Body          string        `bson:"body" json:"-"`
	Attempts      int           `bson:"attempts" json:"attempts"`
	MaxRetries    int           `bson:"maxRetries" json:"maxRetries"`
	Backoff       string        `bson:"backoff" json:"backoff"`
	Status        string        `bson:"status" json:"status"`
	NextAttemptAt time.Time     `bson:"nextAttemptAt" json:"nextAttemptAt"`
	CreatedAt     time.Time     `bson:"createdAt" json:"createdAt"`
	UpdatedAt     time.Time     `bson:"updatedAt" json:"updatedAt"`
	LastStatus    int           `bson:"lastStatus,omitempty" json:"lastStatus,omitempty"`
	LastError     string        `bson:"lastError,omitempty" json:"lastError,omitempty"`
	DeliveredAt   *time.Time    `bson:"deliveredAt,omitempty" json:"deliveredAt,omitempty"`
}

// Envelope is the JSON body of every delivery.
type Envelope struct {
	ID        string    `json:"id"`
	Event     string    `json:"event"`
	Tool      string    `json:"tool"`
	UserID    string    `json:"userId"`
	CreatedAt time.Time `json:"createdAt"`
	Data      any       `json:"data"`
}

// Backoff returns the wait before retry n (1-based) under policy backoff with base delay base:
// linear base*n, exponential base*2^(n-1), at most a day.
func Backoff(backoff string, base time.Duration, n int) time.Duration {
	if n < 1 {
		n = 1
	}
	const ceiling = 24 * time.Hour
	if backoff != BackoffExponential {
		return min(base*time.Duration(min(n, 1<<20)), ceiling)
	}
	d := base
	for i := 1; i < n && d < ceiling; i++ {
		d *= 2
	}
	return min(d, ceiling)
}

// AnalysisCreated queues analysis.created for the user's webhooks of tool subscribed to it,
// and threshold.exceeded for those subscribed whose threshold riskScore reaches. analysis is
// the stored analysis as the API shows it.
func (s *Service) AnalysisCreated(ctx context.Context, tool string, userID bson.ObjectID, analysis any, riskScore float64) error {
	hooks, err := s.activeHooks(ctx, tool, userID)
	if err != nil || len(hooks) == 0 {
		return err
	}
	var created, exceeded []model.Webhook
	for _, h := range hooks {
		if subscribed(h, EventAnalysisCreated) {
			created = append(created, h)
		}
		if subscribed(h, EventThresholdExceeded) && riskScore >= h.Threshold {
			exceeded = append(exceeded, h)
		}
	}
	data := map[string]any{"analysis": analysis}
	var docs []any
	now := s.o.Now().UTC()
	if len(created) > 0 {
		d, err := s.deliveriesFor(created, tool, userID, EventAnalysisCreated, data, now)
		if err != nil {
			return err
		}
		docs = append(docs, d...)
	}
	for _, h := range exceeded {
		d, err := s.deliveriesFor([]model.Webhook{h}, tool, userID, EventThresholdExceeded,
			map[string]any{"analysis": analysis, "riskScore": riskScore, "threshold": h.Threshold}, now)
		if err != nil {
			return err
		}
		docs = append(docs, d...)
	}
	return s.enqueue(ctx, docs)
}

// ChatCompleted queues chat.completed for the user's webhooks of tool subscribed to it;
// payload (e.g. the request id, provider, model, tokens and cost of the turn) is the event's
// data. The chat hub calls it after a turn is recorded; it only inserts into the queue.
func (s *Service) ChatCompleted(ctx context.Context, userID bson.ObjectID, tool string, payload any) error {
	return s.Emit(ctx, tool, userID, EventChatCompleted, payload)
}

// CreditsLow queues credits.low for the user's webhooks subscribed to it: those of tool, or of
// every tool when tool is "". It fires at most once per user per UTC day (the later calls of
// the day return nil and queue nothing), so the caller may call it on every turn that leaves
// the balance low (see CreditsAreLow). payload is the event's data, e.g. {"balance": 7,
// "planCredits": 100}.
func (s *Service) CreditsLow(ctx context.Context, userID bson.ObjectID, tool string, payload any) error {
	now := s.o.Now().UTC()
	day := now.Format(time.DateOnly)
	s.lowMu.Lock()
	seen := s.lowClaimed[userID] == day
	s.lowMu.Unlock()
	if seen {
		return nil
	}
	marker := "credits.low:" + userID.Hex() + ":" + day
	_, err := s.claims.InsertOne(ctx, bson.D{{Key: "_id", Value: marker}, {Key: "at", Value: now}})
	if err != nil && !mongo.IsDuplicateKeyError(err) {
		return fmt.Errorf("webhooks: credits.low marker: %w", err)
	}
	s.lowMu.Lock()
	if s.lowClaimed == nil {
		s.lowClaimed = map[bson.ObjectID]string{}
	}
	s.lowClaimed[userID] = day
	s.lowMu.Unlock()
	if err != nil { // claimed by another call or instance
		return nil
	}
	if tool != "" {
		return s.Emit(ctx, tool, userID, EventCreditsLow, payload)
	}
	var errs []error
	for _, t := range s.o.Tools.All() {
		if err := s.Emit(ctx, t.ID, userID, EventCreditsLow, payload); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CreditsAreLow reports whether balance is under 10% of the plan's credits: the credits.low
// condition.
func CreditsAreLow(balance, planCredits int64) bool {
	return planCredits > 0 && balance*10 < planCredits
}

// Emit queues event with data for the user's active webhooks of tool subscribed to it.
func (s *Service) Emit(ctx context.Context, tool string, userID bson.ObjectID, event string, data any) error {
	hooks, err := s.activeHooks(ctx, tool, userID)
	if err != nil {
		return err
	}
	var subs []model.Webhook
	for _, h := range hooks {
		if subscribed(h, event) {
			subs = append(subs, h)
		}
	}
	if len(subs) == 0 {
		return nil
	}
	docs, err := s.deliveriesFor(subs, tool, userID, event, data, s.o.Now().UTC())
	if err != nil {
		return err
	}
	return s.enqueue(ctx, docs)
}

func subscribed(h model.Webhook, event string) bool {
	for _, e := range h.Events {
		if e == event {
			return true
		}
	}
	return false
}

// deliveriesFor builds one delivery per webhook of one event (one body, one event id).
func (s *Service) deliveriesFor(hooks []model.Webhook, tool string, userID bson.ObjectID, event string, data any, now time.Time) ([]any, error) {
	evID := "evt_" + bson.NewObjectID().Hex()
	body, err := json.Marshal(Envelope{ID: evID, Event: event, Tool: tool, UserID: userID.Hex(), CreatedAt: now, Data: data})
	if err != nil {
		return nil, fmt.Errorf("webhooks: encode %s: %w", event, err)
	}
	docs := make([]any, 0, len(hooks))
	for _, h := range hooks {
		docs = append(docs, Delivery{ID: bson.NewObjectID(), WebhookID: h.ID, UserID: userID, Tool: tool,
			Event: event, EventID: evID, Body: string(body), MaxRetries: h.RetryPolicy.MaxRetries,
			Backoff: h.RetryPolicy.Backoff, Status: StatusPending, NextAttemptAt: now, CreatedAt: now, UpdatedAt: now})
	}
	return docs, nil
}

// enqueue inserts deliveries and wakes this instance's worker.
func (s *Service) enqueue(ctx context.Context, docs []any) error {
	if len(docs) == 0 {
		return nil
	}
	if _, err := s.deliveries.InsertMany(ctx, docs); err != nil {
		return fmt.Errorf("webhooks: queue %d deliveries: %w", len(docs), err)
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// batchSize is how many due deliveries one pass of the worker takes.
const batchSize = 256

// Run is the worker loop: it delivers what is due, then waits for the next poll, a wake-up
// from this instance's Emit, or the end of ctx. Run one per instance; it owns cleanedAt.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.o.Poll)
	defer t.Stop()
	for {
		n, err := s.RunOnce(ctx)
		if err != nil && ctx.Err() == nil {
			s.o.Log.Error("webhooks: delivery pass failed", "err", err)
		}
		if now := s.o.Now(); now.Sub(s.cleanedAt) > 10*time.Minute {
			s.cleanedAt = now
			if err := s.cleanup(ctx, now); err != nil && ctx.Err() == nil {
				s.o.Log.Warn("webhooks: cleanup failed", "err", err)
			}
		}
		if n == batchSize && err == nil {
			continue // more may be due
		}
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-t.C:
		}
	}
}

// cleanup removes claims older than a day and logged deliveries older than a week.
func (s *Service) cleanup(ctx context.Context, now time.Time) error {
	if _, err := s.claims.DeleteMany(ctx, bson.D{{Key: "at", Value: bson.D{{Key: "$lt", Value: now.Add(-24 * time.Hour)}}}}); err != nil {
		return fmt.Errorf("webhooks: delete old claims: %w", err)
	}
	_, err := s.log.DeleteMany(ctx, bson.D{{Key: "updatedAt", Value: bson.D{{Key: "$lt", Value: now.Add(-7 * 24 * time.Hour)}}}})
	if err != nil {
		return fmt.Errorf("webhooks: delete old deliveries: %w", err)
	}
	return nil
}

// RunOnce takes up to one batch of due deliveries, claims their attempts, makes them (at most
// Workers at once) and records the outcomes. It returns how many due deliveries it found.
func (s *Service) RunOnce(ctx context.Context) (int, error) {
	now := s.o.Now().UTC()
	cur, err := s.deliveries.Find(ctx, bson.D{{Key: "status", Value: StatusPending}, {Key: "nextAttemptAt", Value: bson.D{{Key: "$lte", Value: now}}}},
		options.Find().SetSort(bson.D{{Key: "nextAttemptAt", Value: 1}}).SetLimit(batchSize))
	if err != nil {
		return 0, fmt.Errorf("webhooks: find due: %w", err)
	}
	var due []Delivery
	if err := cur.All(ctx, &due); err != nil {
		return 0, fmt.Errorf("webhooks: find due: %w", err)
	}
	if len(due) == 0 {
		return 0, nil
	}
	mine, err := s.claim(ctx, due, now)
	if err != nil || len(mine) == 0 {
		return len(due), err
	}
	hooks, err := s.loadHooks(ctx, mine)
	if err != nil {
		return len(due), err
	}
	// Attempts and their records are not cut short by ctx: once claimed, an attempt runs to
	// its outcome (bounded by Timeout) so that shutdown does not leave it to the lease.
	ctx = context.WithoutCancel(ctx)
	results := make([]outcome, len(mine))
	sem := make(chan struct{}, s.o.Workers)
	var wg sync.WaitGroup
	for i := range mine {
		d := &mine[i]
		h, ok := hooks[d.WebhookID]
		if !ok || !h.IsActive {
			results[i] = outcome{cancelled: true, err: "webhook deleted or disabled"}
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			results[i] = s.attempt(ctx, d, h)
		}()
	}
	wg.Wait()
	return len(due), s.record(ctx, mine, results, hooks)
}

// claimID names the claim of one attempt of a delivery in one lease generation.
func claimID(d *Delivery, gen int) string {
	return d.ID.Hex() + ":" + strconv.Itoa(d.Attempts) + ":" + strconv.Itoa(gen)
}

// claim inserts a claim for the current attempt of each delivery; the inserts that win are
// this instance's to make. A claim found older than the lease belongs to an instance that
// died mid-attempt: the next generation's claim is tried instead, again by insert. The
// deliveries won are re-read, so an attempt recorded since the find is not made again.
func (s *Service) claim(ctx context.Context, due []Delivery, now time.Time) ([]Delivery, error) {
	gens := make([]int, len(due))
	won := make([]bool, len(due))
	todo := make([]int, len(due))
	for i := range due {
		todo[i] = i
	}
	for round := 0; round < 4 && len(todo) > 0; round++ {
		docs := make([]any, len(todo))
		for j, i := range todo {
			docs[j] = bson.D{{Key: "_id", Value: claimID(&due[i], gens[i])}, {Key: "at", Value: now}, {Key: "owner", Value: s.instance}}
		}
		_, err := s.claims.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
		lost := map[int]bool{}
		if err != nil {
			var bwe mongo.BulkWriteException
			if !errors.As(err, &bwe) {
				return nil, fmt.Errorf("webhooks: claim: %w", err)
			}
			for _, we := range bwe.WriteErrors {
				if !mongo.IsDuplicateKeyError(we) && we.Code != 11000 {
					return nil, fmt.Errorf("webhooks: claim: %w", err)
				}
				lost[we.Index] = true
			}
		}
		var ids bson.A
		var again []int
		for j, i := range todo {
			if !lost[j] {
				won[i] = true
				continue
			}
			ids = append(ids, claimID(&due[i], gens[i]))
			again = append(again, i)
		}
		if len(again) == 0 {
			break
		}
		// Which lost claims are stale?
		cur, err := s.claims.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
		if err != nil {
			return nil, fmt.Errorf("webhooks: read claims: %w", err)
		}
		var held []struct {
			ID string    `bson:"_id"`
			At time.Time `bson:"at"`
		}
		if err := cur.All(ctx, &held); err != nil {
			return nil, fmt.Errorf("webhooks: read claims: %w", err)
		}
		stale := map[string]bool{}
		for _, c := range held {
			if now.Sub(c.At) >= s.o.Lease {
				stale[c.ID] = true
			}
		}
		todo = todo[:0]
		for _, i := range again {
			if stale[claimID(&due[i], gens[i])] {
				gens[i]++
				todo = append(todo, i)
			}
		}
	}
	// A delivery won in generation 0 was read with the attempt number of its claim, and that
	// claim is new: nobody made the attempt. A takeover (generation > 0) may have read the
	// delivery before the dead claimer's successor recorded it: re-read those.
	var out []Delivery
	var ids bson.A
	want := map[bson.ObjectID]int{}
	for i := range due {
		switch {
		case !won[i]:
		case gens[i] == 0:
			out = append(out, due[i])
		default:
			ids = append(ids, due[i].ID)
			want[due[i].ID] = due[i].Attempts
		}
	}
	if len(ids) == 0 {
		return out, nil
	}
	cur, err := s.deliveries.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
	if err != nil {
		return nil, fmt.Errorf("webhooks: re-read claimed: %w", err)
	}
	var fresh []Delivery
	if err := cur.All(ctx, &fresh); err != nil {
		return nil, fmt.Errorf("webhooks: re-read claimed: %w", err)
	}
	for _, d := range fresh {
		if d.Status == StatusPending && d.Attempts == want[d.ID] {
			out = append(out, d)
		}
	}
	return out, nil
}

// loadHooks reads the webhooks of the deliveries, one query per tool database.
func (s *Service) loadHooks(ctx context.Context, ds []Delivery) (map[bson.ObjectID]model.Webhook, error) {
	byTool := map[string]bson.A{}
	for _, d := range ds {
		byTool[d.Tool] = append(byTool[d.Tool], d.WebhookID)
	}
	out := map[bson.ObjectID]model.Webhook{}
	for tool, ids := range byTool {
		t, ok := s.o.Tools.Get(tool)
		if !ok {
			continue
		}
		cur, err := s.o.Mongo.DB(t.Database()).Collection(model.CollWebhooks).Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
		if err != nil {
			return nil, fmt.Errorf("webhooks: load webhooks: %w", err)
		}
		var hooks []model.Webhook
		if err := cur.All(ctx, &hooks); err != nil {
			return nil, fmt.Errorf("webhooks: load webhooks: %w", err)
		}
		for _, h := range hooks {
			out[h.ID] = h
		}
	}
	return out, nil
}

// outcome is what one attempt did.
type outcome struct {
	ok        bool
	cancelled bool
	status    int
	err       string
	at        time.Time
}

// attempt posts d to h once.
func (s *Service) attempt(ctx context.Context, d *Delivery, h model.Webhook) outcome {
	at := s.o.Now().UTC()
	o := outcome{at: at}
	body := []byte(d.Body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		o.err = "bad request: " + err.Error()
		return o
	}
	for k, v := range h.Headers {
		req.Header.Set(k, v)
	}
	ts := at.Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "maula-chat-webhooks/1")
	req.Header.Set(EventHeader, d.Event)
	req.Header.Set(DeliveryHeader, d.ID.Hex())
	req.Header.Set(WebhookHeader, h.ID.Hex())
	req.Header.Set(TimestampHeader, strconv.FormatInt(ts, 10))
	req.Header.Set(SignatureHeader, SignatureValue(h.Secret, ts, body))
	resp, err := s.client.Do(req)
	if err != nil {
		o.err = err.Error()
		return o
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	o.status = resp.StatusCode
	o.ok = resp.StatusCode >= 200 && resp.StatusCode < 300
	if !o.ok {
		o.err = "answered " + resp.Status
	}
	return o
}

// hookTally sums one pass's attempts of one webhook.
type hookTally struct {
	sent, ok, failed int64
	trailing         int  // failures after the last success of the pass
	sawSuccess       bool // a success resets the run of failures
	last             time.Time
	tool             string
}

// record writes the outcomes: the retries' next attempt in one bulk write, the finished
// deliveries moved from the queue to the log, then each webhook's stats in one update (and its disabling when the run of failures reached
// DisableAfter).
func (s *Service) record(ctx context.Context, ds []Delivery, res []outcome, hooks map[bson.ObjectID]model.Webhook) error {
	now := s.o.Now().UTC()
	var (
		models  []mongo.WriteModel
		done    []any
		deletes []mongo.WriteModel
	)
	tallies := map[bson.ObjectID]*hookTally{}
	var order []bson.ObjectID
	for i := range ds {
		d, o := &ds[i], res[i]
		fin := *d
		fin.UpdatedAt = now
		switch {
		case o.cancelled:
			fin.Status, fin.LastError = StatusCancelled, o.err
		case o.ok:
			at := o.at
			fin.Status, fin.Attempts, fin.LastStatus, fin.DeliveredAt, fin.LastError = StatusDelivered, d.Attempts+1, o.status, &at, ""
		default:
			fin.Attempts, fin.LastStatus, fin.LastError = d.Attempts+1, o.status, o.err
			if fin.Attempts > d.MaxRetries {
				fin.Status = StatusFailed
			} else {
				// Filtered by _id alone (this instance holds the attempt's claim): FerretDB
				// pushes only _id equality down to its storage.
				models = append(models, mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "_id", Value: d.ID}}).
					SetUpdate(bson.D{{Key: "$set", Value: bson.D{{Key: "attempts", Value: fin.Attempts}, {Key: "lastStatus", Value: o.status},
						{Key: "lastError", Value: o.err}, {Key: "updatedAt", Value: now},
						{Key: "nextAttemptAt", Value: o.at.Add(Backoff(d.Backoff, s.o.RetryBase, fin.Attempts))}}}}))
			}
		}
		if fin.Status != StatusPending {
			done = append(done, fin)
			deletes = append(deletes, mongo.NewDeleteOneModel().SetFilter(bson.D{{Key: "_id", Value: d.ID}}))
		}
		if o.cancelled {
			continue
		}
		t := tallies[d.WebhookID]
		if t == nil {
			t = &hookTally{tool: d.Tool}
			tallies[d.WebhookID] = t
			order = append(order, d.WebhookID)
		}
		t.sent++
		if o.at.After(t.last) {
			t.last = o.at
		}
		if o.ok {
			t.ok++
			t.sawSuccess, t.trailing = true, 0
		} else {
			t.failed++
			t.trailing++
		}
	}
	var errs []error
	if len(models) > 0 {
		if _, err := s.deliveries.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false)); err != nil {
			errs = append(errs, fmt.Errorf("webhooks: record retries: %w", err))
		}
	}
	if len(done) > 0 {
		// Finished deliveries leave the queue for the log, so the queue the worker scans holds
		// only what is pending (FerretDB scans rather than using the indexes).
		if _, err := s.log.InsertMany(ctx, done, options.InsertMany().SetOrdered(false)); err != nil && !isAllDup(err) {
			errs = append(errs, fmt.Errorf("webhooks: log deliveries: %w", err))
		} else if _, err := s.deliveries.BulkWrite(ctx, deletes, options.BulkWrite().SetOrdered(false)); err != nil {
			errs = append(errs, fmt.Errorf("webhooks: dequeue deliveries: %w", err))
		}
	}
	for _, id := range order {
		if err := s.recordStats(ctx, hooks[id], tallies[id], now); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// recordStats adds a pass's tally to the webhook's stats and run of failures, disabling it when
// the run reaches DisableAfter.
func (s *Service) recordStats(ctx context.Context, h model.Webhook, t *hookTally, now time.Time) error {
	tool, ok := s.o.Tools.Get(t.tool)
	if !ok {
		return nil
	}
	coll := s.o.Mongo.DB(tool.Database()).Collection(model.CollWebhooks)
	inc := bson.D{{Key: "stats.totalSent", Value: t.sent}, {Key: "stats.successCount", Value: t.ok}, {Key: "stats.failureCount", Value: t.failed}}
	set := bson.D{{Key: "stats.lastSent", Value: t.last}}
	if t.sawSuccess {
		set = append(set, bson.E{Key: "consecutiveFailures", Value: t.trailing})
	} else {
		inc = append(inc, bson.E{Key: "consecutiveFailures", Value: t.trailing})
	}
	var after model.Webhook
	err := coll.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: h.ID}}, bson.D{{Key: "$inc", Value: inc}, {Key: "$set", Value: set}},
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&after)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil // deleted meanwhile
	}
	if err != nil {
		return fmt.Errorf("webhooks: stats of %s: %w", h.ID.Hex(), err)
	}
	if after.IsActive && after.ConsecutiveFailures >= s.o.DisableAfter {
		reason := fmt.Sprintf("disabled after %d consecutive failed deliveries", after.ConsecutiveFailures)
		if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: h.ID}, {Key: "isActive", Value: true}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "isActive", Value: false}, {Key: "disabledAt", Value: now}, {Key: "disabledReason", Value: reason}}}}); err != nil {
			return fmt.Errorf("webhooks: disable %s: %w", h.ID.Hex(), err)
		}
		s.forget(t.tool, h.UserID)
		s.o.Log.Warn("webhooks: webhook disabled", "webhookId", h.ID.Hex(), "userId", h.UserID.Hex(), "failures", after.ConsecutiveFailures)
	}
	return nil
}

// isAllDup reports whether every error of an unordered insert is a duplicate key: a record
// retried after a partial failure.
func isAllDup(err error) bool {
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || bwe.WriteConcernError != nil || len(bwe.WriteErrors) == 0 {
		return false
	}
	for _, we := range bwe.WriteErrors {
		if we.Code != 11000 {
			return false
		}
	}
	return true
}
