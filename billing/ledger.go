package billing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/maula-ai/maula-chat/model"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Ledger phases. Every balance change is one entry; (requestId, phase) is unique.
const (
	PhaseReserve = "reserve" // credits held for a turn (credits < 0)
	PhaseSettle  = "settle"  // the turn's end: the unused part of the hold returned (credits ≥ 0); a full refund is a settle with charged 0
	PhaseGrant   = "grant"   // an admin grant (or correction when negative)
	PhaseReset   = "reset"   // period rollover: the balance set to the plan's credits
	PhasePlan    = "plan"    // plan change: the balance set to the new plan's credits
	PhaseOpen    = "open"    // the subscription opened by billing with the plan's credits
)

// Ledger entry states.
const (
	StatePending = "pending" // written before the balance change; may or may not have been applied
	StateApplied = "applied" // the balance change is applied; credits is exact
	StateVoid    = "void"    // the balance change never happened (rejected or abandoned before it)
)

// UsageDoc is a turn's token usage as stored in the ledger.
type UsageDoc struct {
	Input      int64 `bson:"input" json:"input"`
	Output     int64 `bson:"output" json:"output"`
	CacheRead  int64 `bson:"cacheRead" json:"cacheRead"`
	CacheWrite int64 `bson:"cacheWrite" json:"cacheWrite"`
	Reasoning  int64 `bson:"reasoning" json:"reasoning"`
	Estimated  bool  `bson:"estimated,omitempty" json:"estimated,omitempty"`
}

// Entry is a document of maula-auth-db.credit_ledger.
type Entry struct {
	ID        bson.ObjectID `bson:"_id" json:"id"`
	RequestID string        `bson:"requestId" json:"requestId"`
	Phase     string        `bson:"phase" json:"phase"`
	State     string        `bson:"state" json:"state"`
	UserID    bson.ObjectID `bson:"userId" json:"userId"`
	// Credits is the signed change of the balance this entry stands for (exact once applied).
	Credits int64 `bson:"credits" json:"credits"`
	// Reserved and Charged: for reserve and settle entries.
	Reserved   int64     `bson:"reserved,omitempty" json:"reserved,omitempty"`
	Charged    int64     `bson:"charged" json:"charged"`
	Tool       string    `bson:"tool,omitempty" json:"tool,omitempty"`
	Provider   string    `bson:"provider,omitempty" json:"provider,omitempty"`
	Model      string    `bson:"model,omitempty" json:"model,omitempty"`
	MaxTokens  int64     `bson:"maxTokens,omitempty" json:"maxTokens,omitempty"`
	CapLowered bool      `bson:"capLowered,omitempty" json:"capLowered,omitempty"`
	Usage      *UsageDoc `bson:"usage,omitempty" json:"usage,omitempty"`
	CostMicros int64     `bson:"costMicros" json:"costMicros"`
	PriceID    string    `bson:"priceId,omitempty" json:"priceId,omitempty"`
	Status     string    `bson:"status,omitempty" json:"status,omitempty"`
	Output     bool      `bson:"producedOutput,omitempty" json:"producedOutput,omitempty"`
	At         time.Time `bson:"at" json:"at"`                       // when the turn ended (settle) or the entry was made
	Day        string    `bson:"day,omitempty" json:"day,omitempty"` // rollup day of a settle
	// Rollup is a settle's rollup state: "todo", "claimed", "done" or "skip" (a refund of an
	// abandoned reservation with no known usage).
	Rollup       string     `bson:"rollup,omitempty" json:"rollup,omitempty"`
	Reason       string     `bson:"reason,omitempty" json:"reason,omitempty"`
	Plan         string     `bson:"plan,omitempty" json:"plan,omitempty"`
	BalanceAfter int64      `bson:"balanceAfter" json:"balanceAfter"`
	CreatedAt    time.Time  `bson:"createdAt" json:"createdAt"`
	AppliedAt    *time.Time `bson:"appliedAt,omitempty" json:"appliedAt,omitempty"`
}

// hold is the in-flight marker kept in the subscription's holds map, written in the same
// atomic update as the balance change it describes. For a reserve it lives until the settle;
// for the other phases only until the ledger entry is marked applied.
type hold struct {
	Phase     string    `bson:"p"`
	Credits   int64     `bson:"c"` // reserve: credits held (positive); others: the signed delta
	At        time.Time `bson:"at"`
	RequestID string    `bson:"rid"`
}

// subDoc is the part of a subscription billing reads.
type subDoc struct {
	ID      bson.ObjectID `bson:"_id"`
	UserID  bson.ObjectID `bson:"userId"`
	Plan    string        `bson:"plan"`
	Status  string        `bson:"status"`
	Billing struct {
		Interval        string    `bson:"interval"`
		NextBillingDate time.Time `bson:"nextBillingDate"`
	} `bson:"billing"`
	Features struct {
		AICredits int64 `bson:"aiCredits"`
	} `bson:"features"`
	Holds     map[string]hold `bson:"holds"`
	HoldCount int64           `bson:"holdCount"`
	CreatedAt time.Time       `bson:"createdAt"`
	// Journal is the last batch of each journal written into the document (journal.go).
	Journal map[string]int64 `bson:"journal"`
}

// insertEntry inserts e. When (requestId, phase) exists it returns the stored entry and
// existed=true instead.
func (s *Service) insertEntry(ctx context.Context, e *Entry) (stored *Entry, existed bool, err error) {
	if e.ID.IsZero() {
		e.ID = bson.NewObjectID()
	}
	if err := retryBusy(ctx, func() error { return s.write(func() error { _, err := s.ledger.InsertOne(ctx, e); return err }) }); err == nil {
		return e, false, nil
	} else if !isDup(err) {
		return nil, false, fmt.Errorf("billing: ledger insert %s/%s: %w", e.RequestID, e.Phase, err)
	}
	old, err := s.findEntry(ctx, e.RequestID, e.Phase)
	if err != nil {
		return nil, false, err
	}
	if old == nil {
		return nil, false, fmt.Errorf("billing: ledger %s/%s: duplicate key but no entry", e.RequestID, e.Phase)
	}
	return old, true, nil
}

// findEntry returns the entry (requestId, phase), or nil.
func (s *Service) findEntry(ctx context.Context, requestID, phase string) (*Entry, error) {
	var e Entry
	err := s.ledger.FindOne(ctx, bson.D{{Key: "requestId", Value: requestID}, {Key: "phase", Value: phase}}).Decode(&e)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("billing: read ledger %s/%s: %w", requestID, phase, err)
	}
	return &e, nil
}

// revive turns a void entry back into a pending one with new values, so that a retried
// request id (e.g. a reserve that was refused for lack of credits, then credits were
// granted) can proceed. Only one caller wins the compare-and-set.
func (s *Service) revive(ctx context.Context, e *Entry) (bool, error) {
	var revived bool
	// The compare-and-set runs under the user's lock: FerretDB's conditional update is not atomic.
	err := s.onSub(ctx, e.UserID, func() (err error) {
		revived, err = s.ledgerUpdate(ctx, e.ID, bson.E{Key: "state", Value: StateVoid},
			bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: StatePending}, {Key: "credits", Value: e.Credits},
				{Key: "reserved", Value: e.Reserved}, {Key: "maxTokens", Value: e.MaxTokens}, {Key: "capLowered", Value: e.CapLowered},
				{Key: "createdAt", Value: e.CreatedAt}}}})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("billing: revive ledger %s/%s: %w", e.RequestID, e.Phase, err)
	}
	return revived, nil
}

// markApplied records that the entry's balance change is applied, with its exact delta and
// the balance after it. It is conditional on the entry still being pending, so it is
// idempotent.
func (s *Service) markApplied(ctx context.Context, id bson.ObjectID, credits, balanceAfter int64, extra bson.D) error {
	return s.markAppliedAs(ctx, id, credits, balanceAfter, extra, false)
}

// markAppliedAs is markApplied; own says the entry was inserted moments ago by this very call:
// nobody else changes a fresh pending entry (recovery only touches entries older than
// DanglingAfter, and a concurrent retry of the request marks it with the same values), so on
// FerretDB the read that checks the state is skipped: one round trip instead of two on every
// turn's hot path.
func (s *Service) markAppliedAs(ctx context.Context, id bson.ObjectID, credits, balanceAfter int64, extra bson.D, own bool) error {
	now := s.now().UTC()
	set := append(bson.D{{Key: "state", Value: StateApplied}, {Key: "credits", Value: credits},
		{Key: "balanceAfter", Value: balanceAfter}, {Key: "appliedAt", Value: now}}, extra...)
	err := retryBusy(ctx, func() error {
		if own && s.locking {
			return s.write(func() error {
				_, err := s.ledger.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$set", Value: set}})
				return err
			})
		}
		_, err := s.ledgerUpdate(ctx, id, bson.E{Key: "state", Value: StatePending}, bson.D{{Key: "$set", Value: set}})
		return err
	})
	if err != nil {
		return fmt.Errorf("billing: mark ledger entry applied: %w", err)
	}
	return nil
}

// markVoid records that the entry's change never happened.
func (s *Service) markVoid(ctx context.Context, id bson.ObjectID, reason string) error {
	err := retryBusy(ctx, func() error {
		_, err := s.ledgerUpdate(ctx, id, bson.E{Key: "state", Value: StatePending},
			bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: StateVoid}, {Key: "reason", Value: reason}}}})
		return err
	})
	if err != nil {
		return fmt.Errorf("billing: void ledger entry: %w", err)
	}
	return nil
}

// readSub returns the user's subscription, or nil when there is none. On FerretDB it is read by
// _id (the only filter the embedded server does not answer by scanning every subscription),
// with the id learned from the first lookup by userId and cached.
func (s *Service) readSub(ctx context.Context, userID bson.ObjectID) (*subDoc, error) {
	var d subDoc
	if s.locking {
		if id, ok := s.subIDs.Load(userID); ok {
			err := s.subs.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&d)
			if err == nil && d.UserID == userID {
				return &d, nil
			}
			if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
				return nil, fmt.Errorf("billing: read subscription: %w", err)
			}
			s.subIDs.Delete(userID) // deleted (or replaced) since: look it up again
			d = subDoc{}
		}
	}
	err := s.subs.FindOne(ctx, bson.D{{Key: "userId", Value: userID}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("billing: read subscription: %w", err)
	}
	if s.locking {
		s.subIDs.Store(userID, d.ID)
	}
	return &d, nil
}

// updateSub applies upd to the user's subscription if it still satisfies the guard, and returns
// the document after the update; mongo.ErrNoDocuments when there is no subscription or the
// guard fails. guard is the condition as a filter (MongoDB applies it atomically with the
// update) and check is the same condition in Go: on FerretDB the update runs under the user's
// lock (onSub), so reading by _id, checking, and writing by _id is as atomic, and no filter
// other than {_id} reaches the server, which would scan every subscription.
func (s *Service) updateSub(ctx context.Context, userID bson.ObjectID, guard bson.D, check func(*subDoc) bool, upd bson.D) (*subDoc, error) {
	var after subDoc
	err := s.onSub(ctx, userID, func() error {
		if !s.locking {
			return s.subs.FindOneAndUpdate(ctx, append(bson.D{{Key: "userId", Value: userID}}, guard...), upd, afterBalance).Decode(&after)
		}
		cur, err := s.currentSub(ctx, userID)
		if err != nil {
			return err
		}
		if cur == nil || !check(cur) {
			return mongo.ErrNoDocuments
		}
		err = s.write(func() error {
			return s.subs.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: cur.ID}}, upd, afterBalance).Decode(&after)
		})
		if s.localOnly {
			if err == nil {
				s.shadow.Store(userID, &after)
			} else {
				s.shadow.Delete(userID) // the write's outcome is unknown: read it next time
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &after, nil
}

// currentSub returns the subscription a guarded write is checked against, under the user's
// lock. When this process is the store's only writer (locking "local"), that is the document
// its own last write returned, kept in memory: every write of a subscription goes through
// updateSub under the same lock, so the copy is exact, and the read is saved.
func (s *Service) currentSub(ctx context.Context, userID bson.ObjectID) (*subDoc, error) {
	if s.localOnly {
		if d, ok := s.shadow.Load(userID); ok {
			return d.(*subDoc), nil
		}
	}
	return s.readSub(ctx, userID)
}

// afterBalance returns the updated subscription. (FerretDB v1 has no projection in
// findAndModify, so the whole document comes back; it is small: the holds map only carries
// the user's turns in flight.)
var afterBalance = options.FindOneAndUpdate().SetReturnDocument(options.After)

// opPlan computes, from the current subscription, one generic balance change: the delta, the
// extra filter that must still hold when it is applied (compare-and-set), and the extra fields
// to set in the same update. done=true means there is nothing to do (e.g. another instance
// already rolled the period over).
type opPlan func(sub *subDoc) (delta int64, guard, set bson.D, done bool, err error)

// applyOp runs the generic protocol for grant, reset and plan entries:
//
//  1. insert the ledger entry as pending (unique key: a retry finds it);
//  2. one conditional update of the subscription: $inc the balance and set the marker
//     holds.<key> (guarded by the marker's absence, the plan's guard, and a non-negative result);
//  3. mark the entry applied with the marker's exact delta;
//  4. unset the marker.
//
// A crash after 2 leaves the marker: RecoverDangling finishes 3 and 4. A crash before 2 leaves a
// pending entry with no marker: it never applied and RecoverDangling voids it.
func (s *Service) applyOp(ctx context.Context, e *Entry, plan opPlan) (*Entry, error) {
	release, err := s.holdSync(ctx, e.UserID) // the change may lower the balance an early answer counted on
	if err != nil {
		return nil, err
	}
	defer release()
	e.State, e.CreatedAt, e.At = StatePending, s.now().UTC(), s.now().UTC()
	stored, existed, err := s.insertEntry(ctx, e)
	if err != nil {
		return nil, err
	}
	if existed {
		switch stored.State {
		case StateApplied:
			return stored, nil
		case StateVoid:
			stored.CreatedAt = e.CreatedAt
			if ok, err := s.revive(ctx, stored); err != nil || !ok {
				return stored, err
			}
		}
		e = stored
	}
	key := holdKey("o_", e.RequestID+":"+e.Phase)
	for range 20 {
		sub, err := s.readSub(ctx, e.UserID)
		if err != nil {
			return nil, err
		}
		if sub == nil {
			_ = s.markVoid(ctx, e.ID, "no subscription")
			return nil, ErrNoSubscription
		}
		if h, ok := sub.Holds[key]; ok { // applied by an earlier attempt
			return s.finishOp(ctx, e, key, h.Credits)
		}
		delta, guard, set, done, err := plan(sub)
		if err != nil || done {
			_ = s.markVoid(ctx, e.ID, "nothing to do")
			if err == nil {
				e.State = StateVoid
				return e, nil
			}
			return nil, err
		}
		filter := append(bson.D{{Key: "holds." + key, Value: bson.D{{Key: "$exists", Value: false}}}}, guard...)
		if delta < 0 {
			filter = append(filter, bson.E{Key: "features.aiCredits", Value: bson.D{{Key: "$gte", Value: -delta}}})
		}
		// The same guard in Go: planning again on the current document must give the same
		// change under the same guard (the guards are compare-and-set on values read from it).
		check := func(cur *subDoc) bool {
			if _, held := cur.Holds[key]; held || (delta < 0 && cur.Features.AICredits < -delta) {
				return false
			}
			d2, g2, _, done2, err2 := plan(cur)
			return err2 == nil && !done2 && d2 == delta && fmt.Sprint(g2) == fmt.Sprint(guard)
		}
		now := s.now().UTC()
		upd := bson.D{
			{Key: "$inc", Value: bson.D{{Key: "features.aiCredits", Value: delta}, {Key: "holdCount", Value: 1}}},
			{Key: "$set", Value: append(bson.D{{Key: "holds." + key, Value: hold{Phase: e.Phase, Credits: delta, At: now, RequestID: e.RequestID}},
				{Key: "updatedAt", Value: now}}, set...)},
		}
		_, err = s.updateSub(ctx, e.UserID, filter, check, upd)
		if errors.Is(err, mongo.ErrNoDocuments) {
			if delta < 0 && sub.Features.AICredits < -delta {
				_ = s.markVoid(ctx, e.ID, "insufficient credits")
				return nil, ErrInsufficientCredits
			}
			continue // the guard moved (balance or period changed): plan again
		}
		if err != nil {
			return nil, fmt.Errorf("billing: apply %s: %w", e.Phase, err)
		}
		return s.finishOp(ctx, e, key, delta)
	}
	return nil, fmt.Errorf("billing: apply %s for %s: too much contention", e.Phase, e.UserID.Hex())
}

// finishOp does steps 3 and 4 of applyOp.
func (s *Service) finishOp(ctx context.Context, e *Entry, key string, delta int64) (*Entry, error) {
	bal, err := s.storedBalance(ctx, e.UserID)
	if err != nil {
		return nil, err
	}
	if err := s.markApplied(ctx, e.ID, delta, bal, nil); err != nil {
		return nil, err
	}
	_, err = s.updateSub(ctx, e.UserID, bson.D{{Key: "holds." + key, Value: bson.D{{Key: "$exists", Value: true}}}},
		func(cur *subDoc) bool { _, held := cur.Holds[key]; return held },
		bson.D{{Key: "$unset", Value: bson.D{{Key: "holds." + key, Value: ""}}}, {Key: "$inc", Value: bson.D{{Key: "holdCount", Value: -1}}}})
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return nil, fmt.Errorf("billing: clear marker: %w", err)
	}
	e.State, e.Credits, e.BalanceAfter = StateApplied, delta, bal
	return e, nil
}

// ledgerUpdate applies update to the ledger entry id if its field cond.Key still equals
// cond.Value, and reports whether it did. On MongoDB that is one conditional update. On
// FerretDB a filter other than {_id} is a full collection scan (only {_id: v} is pushed down to
// SQLite) and its conditional update is not atomic anyway, so the entry is read by _id, the
// condition checked here, and the update sent by _id: the same guarantee, without scanning a
// ledger that grows with every turn.
func (s *Service) ledgerUpdate(ctx context.Context, id bson.ObjectID, cond bson.E, update bson.D) (bool, error) {
	if !s.locking {
		r, err := s.ledger.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}, cond}, update)
		if err != nil {
			return false, err
		}
		return r.ModifiedCount == 1, nil
	}
	var doc bson.M
	if err := s.ledger.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&doc); err != nil {
		if errors.Is(err, mongo.ErrNoDocuments) {
			return false, nil
		}
		return false, err
	}
	if !sameValue(doc[cond.Key], cond.Value) {
		return false, nil
	}
	var r *mongo.UpdateResult
	if err := s.write(func() (err error) {
		r, err = s.ledger.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, update)
		return err
	}); err != nil {
		return false, err
	}
	return r.ModifiedCount == 1, nil
}

// write runs f, one write to maula-auth-db, queued behind this process's other writes to it
// (store.Write): on the embedded server that replaces SQLite's sleeping busy handler.
func (s *Service) write(f func() error) error { return s.o.Mongo.Write(model.AuthDB, f) }

// sameValue compares a decoded BSON value with a condition value (strings, in practice).
func sameValue(got, want any) bool {
	return fmt.Sprint(got) == fmt.Sprint(want)
}
