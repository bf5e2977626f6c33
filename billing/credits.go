package billing

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/maula-ai/maula-chat/providers"
)

// ReserveRequest asks for the credits of one chat turn.
type ReserveRequest struct {
	RequestID             string // unique per turn: the idempotency key
	UserID                bson.ObjectID
	Tool, Provider, Model string
	PromptTokens          int64 // estimated prompt size
	MaxTokens             int64 // requested output cap; 0: the model's maximum
	// Fresh says the caller made RequestID for this call alone (the hub: user, client id and
	// a new message id), so it cannot name an earlier reservation; such a request may be
	// answered before it is written (early.go).
	Fresh bool
}

// Reservation is a hold of credits for one turn, to be settled exactly once.
type Reservation struct {
	RequestID             string
	UserID                bson.ObjectID
	Tool, Provider, Model string
	Credits               int64 // reserved
	MaxTokens             int64 // possibly lowered to what the balance pays for
	CapLowered            bool  // a reply cut at MaxTokens ends with finishReason credits_exhausted
	CreditsLeft           int64 // balance after reserving
	// written is the pending write of a reservation answered early (early.go); nil when it
	// was written before the answer.
	written *earlyWrite
}

// Outcome is how a turn ended, reported by the hub to Settle.
type Outcome struct {
	Usage          providers.Usage
	ProducedOutput bool      // at least one delta was sent
	Status         string    // StatusDone, StatusCancelled, StatusFailed or StatusAbandoned
	At             time.Time // when the turn ended; zero: now
	// Reason, when set, is kept on the settle entry: why the outcome differs from what the
	// client saw (e.g. a reply sent but not stored, settled as failed without output).
	Reason string
}

// Settlement is what a turn cost and what was charged.
type Settlement struct {
	CostMicros  int64
	CostUSD     float64
	PriceID     string
	Credits     int64 // charged
	CreditsLeft int64
}

const defaultMaxTokens = 4096

// Reserve holds the credits of a turn's worst case: one conditional update of the
// subscription (balance ≥ n and no hold yet for this request) between a pending and an applied
// ledger entry. Retrying a request id returns the same reservation without holding twice. An
// unknown model is an error before anything is written.
//
// With the store's only writer, a fresh request the balance covers is answered before it is
// written (early.go); its Settle waits for the write, or with the journal queues behind it.
func (s *Service) Reserve(ctx context.Context, r ReserveRequest) (*Reservation, error) {
	r, credits, now, err := s.prepareReserve(r)
	if err != nil {
		return nil, err
	}
	if err := s.journalReady(ctx); err != nil {
		return nil, err
	}
	if res, ok := s.reserveEarly(ctx, r, credits, now); ok {
		return res, nil
	}
	if s.loadShadow(ctx, r) { // the user's first reservation since the start: one read, not three writes (or none)
		if res, ok := s.reserveEarly(ctx, r, credits, now); ok {
			return res, nil
		}
	}
	release, err := s.holdSync(ctx, r.UserID)
	if err != nil {
		return nil, err
	}
	defer release()
	return s.reserveNow(ctx, r, credits, now, false)
}

// prepareReserve validates r, gives it the model's output cap when it has none and returns the
// credits of its worst case.
func (s *Service) prepareReserve(r ReserveRequest) (ReserveRequest, int64, time.Time, error) {
	if r.RequestID == "" || r.UserID.IsZero() || r.Provider == "" || r.Model == "" || r.PromptTokens < 0 || r.MaxTokens < 0 {
		return r, 0, time.Time{}, fmt.Errorf("%w: reserve needs requestId, userId, provider, model and non-negative token counts", ErrBadRequest)
	}
	now := s.now().UTC()
	price, err := s.o.Prices.Price(r.Provider, r.Model, now)
	if err != nil {
		return r, 0, now, fmt.Errorf("billing: reserve: %w", err)
	}
	if r.MaxTokens == 0 {
		r.MaxTokens = price.MaxOutput
		if r.MaxTokens == 0 {
			r.MaxTokens = defaultMaxTokens
		}
	}
	credits, err := s.worstCase(r, now)
	return r, credits, now, err
}

// reserveNow writes a reservation of credits for r, prepared at now (prepareReserve): the
// protocol Reserve describes. early is set for the write of a reservation already answered
// (early.go), which must hold what the answer said, priced when it was given, and must not
// roll a period over: that waits for the early writes in flight, its own among them; the next
// reservation will.
func (s *Service) reserveNow(ctx context.Context, r ReserveRequest, credits int64, now time.Time, early bool) (*Reservation, error) {
	// A known period end that has passed: roll the period over before spending (lazy check;
	// the cache is filled by earlier reserves, so this costs no read on the hot path).
	if end, ok := s.periodEnd.Load(r.UserID); ok && !early && !now.Before(end.(time.Time)) {
		if err := s.rolloverUser(ctx, r.UserID); err != nil {
			s.log.Warn("billing: period rollover failed", "user", r.UserID.Hex(), "err", err)
		}
	}
	e := &Entry{RequestID: r.RequestID, Phase: PhaseReserve, State: StatePending, UserID: r.UserID,
		Credits: -credits, Reserved: credits, Tool: r.Tool, Provider: r.Provider, Model: r.Model,
		MaxTokens: r.MaxTokens, At: now, CreatedAt: now}
	stored, existed, err := s.insertEntry(ctx, e)
	if err != nil {
		return nil, err
	}
	if existed {
		if stored.UserID != r.UserID {
			return nil, fmt.Errorf("%w: request id %q belongs to another user", ErrBadRequest, r.RequestID)
		}
		if stored.State == StateVoid {
			if ok, err := s.revive(ctx, e); err != nil {
				return nil, err
			} else if !ok {
				return nil, fmt.Errorf("billing: reserve %q: a concurrent retry is in progress", r.RequestID)
			}
			e.ID = stored.ID
		} else {
			// Applied or pending: continue with the stored values; every step below is
			// idempotent, guarded by the hold marker.
			e = stored
		}
	}
	key := holdKey("r_", r.RequestID)
	openedPlan := false
	for range 8 {
		guard := bson.D{{Key: "features.aiCredits", Value: bson.D{{Key: "$gte", Value: e.Reserved}}},
			{Key: "holds." + key, Value: bson.D{{Key: "$exists", Value: false}}}}
		reserved := e.Reserved
		check := func(cur *subDoc) bool {
			_, held := cur.Holds[key]
			return cur.Features.AICredits >= reserved && !held
		}
		upd := bson.D{
			{Key: "$inc", Value: bson.D{{Key: "features.aiCredits", Value: -e.Reserved}, {Key: "holdCount", Value: 1}}},
			{Key: "$set", Value: bson.D{{Key: "holds." + key, Value: hold{Phase: PhaseReserve, Credits: e.Reserved, At: now, RequestID: e.RequestID}}}},
		}
		after, err := s.updateSub(ctx, e.UserID, guard, check, upd)
		if err == nil {
			s.notePeriod(e.UserID, after.Billing.NextBillingDate)
			if err := s.markAppliedAs(ctx, e.ID, -e.Reserved, after.Features.AICredits,
				bson.D{{Key: "reserved", Value: e.Reserved}, {Key: "maxTokens", Value: e.MaxTokens}, {Key: "capLowered", Value: e.CapLowered}}, !existed); err != nil {
				// The hold is taken; the entry stays pending and RecoverDangling (or a retry)
				// marks it. The turn may proceed.
				s.log.Warn("billing: reserve applied but ledger not marked", "requestId", e.RequestID, "err", err)
			}
			if !early && !after.Billing.NextBillingDate.IsZero() && !now.Before(after.Billing.NextBillingDate) {
				// Learned only now that the period is over: roll over for the next turn.
				if err := s.rolloverUser(ctx, e.UserID); err != nil {
					s.log.Warn("billing: period rollover failed", "user", e.UserID.Hex(), "err", err)
				}
			}
			return s.reservation(e, after.Features.AICredits), nil
		}
		if !errors.Is(err, mongo.ErrNoDocuments) {
			return nil, fmt.Errorf("billing: reserve: %w", err)
		}
		// Not applied: find out why with one read (off the hot path).
		sub, err := s.readSub(ctx, e.UserID)
		if err != nil {
			return nil, err
		}
		switch {
		case sub == nil:
			if openedPlan || s.o.DefaultPlan == "-" || s.o.Plans == nil {
				_ = s.markVoid(ctx, e.ID, "no subscription")
				return nil, ErrNoSubscription
			}
			openedPlan = true
			if _, err := s.EnsureSubscription(ctx, e.UserID, s.o.DefaultPlan); err != nil {
				_ = s.markVoid(ctx, e.ID, "no subscription")
				return nil, err
			}
			continue
		case sub.Holds[key].Phase == PhaseReserve: // an earlier attempt of this request applied it
			h := sub.Holds[key]
			e.Reserved = h.Credits
			if e.State != StateApplied {
				_ = s.markApplied(ctx, e.ID, -h.Credits, sub.Features.AICredits, bson.D{{Key: "reserved", Value: h.Credits}})
			}
			return s.reservation(e, sub.Features.AICredits), nil
		case e.State == StateApplied:
			// Applied, and the hold is gone: the turn was already settled.
			return nil, fmt.Errorf("%w: request id %q was already settled", ErrBadRequest, e.RequestID)
		}
		s.notePeriod(e.UserID, sub.Billing.NextBillingDate)
		if !sub.Billing.NextBillingDate.IsZero() && !now.Before(sub.Billing.NextBillingDate) {
			if early {
				// A rollover waits for the early writes, this one among them (see reserveNow).
				_ = s.markVoid(ctx, e.ID, "period ended before the early write")
				return nil, fmt.Errorf("billing: reserve %q: the period ended before the reservation was written", r.RequestID)
			}
			if err := s.rolloverUser(ctx, e.UserID); err != nil {
				return nil, err
			}
			continue
		}
		bal := sub.Features.AICredits
		if bal >= e.Reserved {
			continue // the balance changed under us: try again
		}
		if s.o.Policy == PolicyPerCall {
			_ = s.markVoid(ctx, e.ID, "insufficient credits")
			return nil, ErrInsufficientCredits
		}
		credits, maxTokens, ok := s.lowerCap(r, bal, now)
		if !ok {
			_ = s.markVoid(ctx, e.ID, "insufficient credits")
			return nil, ErrInsufficientCredits
		}
		e.Reserved, e.Credits, e.MaxTokens, e.CapLowered = credits, -credits, maxTokens, true
		if _, err := s.ledgerUpdate(ctx, e.ID, bson.E{Key: "state", Value: StatePending},
			bson.D{{Key: "$set", Value: bson.D{{Key: "credits", Value: -credits}, {Key: "reserved", Value: credits},
				{Key: "maxTokens", Value: maxTokens}, {Key: "capLowered", Value: true}}}}); err != nil {
			return nil, fmt.Errorf("billing: reserve: lower cap: %w", err)
		}
	}
	_ = s.markVoid(ctx, e.ID, "contention")
	return nil, fmt.Errorf("billing: reserve %q: balance kept changing: %w", r.RequestID, ErrInsufficientCredits)
}

func (s *Service) reservation(e *Entry, left int64) *Reservation {
	return &Reservation{RequestID: e.RequestID, UserID: e.UserID, Tool: e.Tool, Provider: e.Provider, Model: e.Model,
		Credits: e.Reserved, MaxTokens: e.MaxTokens, CapLowered: e.CapLowered, CreditsLeft: left}
}

func (s *Service) notePeriod(userID bson.ObjectID, end time.Time) {
	if !end.IsZero() {
		s.periodEnd.Store(userID, end)
	}
}

// worstCase returns the credits to hold for r: 1 under per_call; under per_cost the prompt at
// the input price plus the whole output cap at the output price, rounded up to credits, at
// least 1 (so an empty balance never starts a turn).
func (s *Service) worstCase(r ReserveRequest, at time.Time) (int64, error) {
	if s.o.Policy == PolicyPerCall {
		return 1, nil
	}
	c, err := s.o.Prices.Cost(r.Provider, r.Model, providers.Usage{Input: r.PromptTokens, Output: r.MaxTokens}, at)
	if err != nil {
		return 0, fmt.Errorf("billing: reserve: %w", err)
	}
	return max(1, ceilDiv(c.Micros, s.o.MicrosPerCredit)), nil
}

// lowerCap finds the largest output cap the balance pays for, with the prompt. ok is false when
// not even one output token is affordable.
func (s *Service) lowerCap(r ReserveRequest, balance int64, at time.Time) (credits, maxTokens int64, ok bool) {
	if balance < 1 {
		return 0, 0, false
	}
	price, err := s.o.Prices.Price(r.Provider, r.Model, at)
	if err != nil {
		return 0, 0, false
	}
	budget := int64(math.MaxInt64 / 2)
	if balance < budget/s.o.MicrosPerCredit {
		budget = balance * s.o.MicrosPerCredit
	}
	cost := func(out int64) int64 {
		c, err := s.o.Prices.Cost(r.Provider, r.Model, providers.Usage{Input: r.PromptTokens, Output: out}, at)
		if err != nil {
			return math.MaxInt64
		}
		return c.Micros
	}
	var out int64
	if price.Output == 0 {
		out = r.MaxTokens
	} else {
		avail := budget - cost(0)
		if avail <= 0 {
			return 0, 0, false
		}
		// avail µ$ buys avail·1e6/price output tokens; guard the multiplication.
		if avail > math.MaxInt64/1_000_000 {
			out = r.MaxTokens
		} else {
			out = min(r.MaxTokens, avail*1_000_000/price.Output)
		}
		for out > 0 && cost(out) > budget { // rounding up of the sum may cost one µ$ more
			out--
		}
	}
	if out < 1 || cost(out) > budget {
		return 0, 0, false
	}
	return min(balance, max(1, ceilDiv(cost(out), s.o.MicrosPerCredit))), out, true
}

// charge is the credits a turn costs under the policy, never more than reserved.
func (s *Service) charge(reserved int64, o Outcome, costMicros int64) int64 {
	var c int64
	switch {
	case s.o.Policy == PolicyPerCall:
		if o.ProducedOutput {
			c = 1
		}
	case !o.ProducedOutput && o.Status == StatusFailed:
		c = 0 // failed before its first token: nothing delivered, nothing charged
	default:
		c = ceilDiv(costMicros, s.o.MicrosPerCredit)
	}
	return min(c, reserved)
}

// LiveCost prices the usage so far for the running chat.usage frames: the cost and the balance
// the user would have if the turn ended now. No I/O.
func (s *Service) LiveCost(res *Reservation, u providers.Usage) (costMicros int64, creditsLeft int64) {
	c, err := s.o.Prices.Cost(res.Provider, res.Model, u, s.now())
	if err != nil {
		return 0, res.CreditsLeft
	}
	charged := s.charge(res.Credits, Outcome{Usage: u, ProducedOutput: true, Status: StatusDone}, c.Micros)
	return c.Micros, res.CreditsLeft + res.Credits - charged
}

// Balance returns the user's credit balance (features.aiCredits).
func (s *Service) Balance(ctx context.Context, userID bson.ObjectID) (int64, error) {
	if err := s.WaitApplied(ctx); err != nil { // the turns answered so far are in it
		return 0, err
	}
	return s.storedBalance(ctx, userID)
}

// storedBalance is the balance as stored: for a step that already waited for the user's
// journaled steps (holdSync), not for every user's batches as Balance does.
func (s *Service) storedBalance(ctx context.Context, userID bson.ObjectID) (int64, error) {
	d, err := s.readSub(ctx, userID)
	if err != nil {
		return 0, fmt.Errorf("billing: balance: %w", err)
	}
	if d == nil {
		return 0, ErrNoSubscription
	}
	return d.Features.AICredits, nil
}

// Settle ends a turn: it prices the usage, charges per the policy (never more than reserved)
// and returns the rest of the hold, in one conditional update guarded by the hold marker; it
// records the turn in the rollups, the tool's analytics and the realtime counters exactly once.
// It is idempotent per request id: a second call returns the first result without charging
// again, and a call after a crash mid-settle finishes the first call's work with its values.
func (s *Service) Settle(ctx context.Context, res *Reservation, o Outcome) (*Settlement, error) {
	if res == nil || res.RequestID == "" || res.UserID.IsZero() {
		return nil, fmt.Errorf("%w: settle needs a reservation", ErrBadRequest)
	}
	switch o.Status {
	case StatusDone, StatusCancelled, StatusFailed, StatusAbandoned:
	default:
		return nil, fmt.Errorf("%w: unknown status %q", ErrBadRequest, o.Status)
	}
	if set, ok, err := s.settlePaired(ctx, res, o); ok { // its reservation is not written yet
		return set, err
	}
	if set, ok, err := s.settleBehind(ctx, res, o); ok { // its reservation is queued in the journal
		return set, err
	}
	if err := res.waitWritten(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		// The turn ran on an answer that was never written: reserve now, so that what was
		// delivered is billed like any turn (capped at what the balance pays for).
		again, rerr := s.reserveAgain(ctx, res, o)
		if rerr != nil {
			s.log.Error("billing: a turn answered early is unbilled", "requestId", res.RequestID, "err", err, "again", rerr)
			return nil, fmt.Errorf("%w; reserving again: %w", err, rerr)
		}
		s.log.Warn("billing: an early reservation's write failed; reserved again at settle", "requestId", res.RequestID, "err", err)
		res = again
	}
	e, err := s.settleEntryOf(res, o)
	if err != nil {
		return nil, err
	}
	return s.settleEntry(ctx, e)
}

// settleEntryOf prices a turn's outcome and decides its charge, once: the pending settle
// entry of res.
func (s *Service) settleEntryOf(res *Reservation, o Outcome) (*Entry, error) {
	if o.At.IsZero() {
		o.At = s.now()
	}
	o.At = o.At.UTC()
	cost, err := s.o.Prices.Cost(res.Provider, res.Model, o.Usage, o.At)
	if err != nil {
		// The price book changed since Reserve (which checked the model): price it now.
		if cost, err = s.o.Prices.Cost(res.Provider, res.Model, o.Usage, s.now()); err != nil {
			return nil, fmt.Errorf("billing: settle: %w", err)
		}
	}
	charged := s.charge(res.Credits, o, cost.Micros)
	u := o.Usage
	return &Entry{RequestID: res.RequestID, Phase: PhaseSettle, State: StatePending, UserID: res.UserID,
		Credits: res.Credits - charged, Reserved: res.Credits, Charged: charged,
		Tool: res.Tool, Provider: res.Provider, Model: res.Model, MaxTokens: res.MaxTokens,
		Usage:      &UsageDoc{Input: u.Input, Output: u.Output, CacheRead: u.CacheRead, CacheWrite: u.CacheWrite, Reasoning: u.Reasoning, Estimated: u.Estimated},
		CostMicros: cost.Micros, PriceID: cost.PriceID, Status: o.Status, Output: o.ProducedOutput, Reason: o.Reason,
		At: o.At, Day: dayOf(o.At), Rollup: "claimed", CreatedAt: s.now().UTC()}, nil
}

// settleEntry runs the settle protocol for e (or for the stored entry of the same request):
//
//  1. insert the settle entry, pending, with the charge decided once (unique key);
//  2. one conditional update of the subscription guarded by the hold: $inc the unused credits
//     back and unset the hold;
//  3. $inc the rollups, the tool's analytics and the counters (only by the inserter, or by a
//     later call that claims the rollup from "todo");
//  4. mark the entry applied with the balance after, rollup done.
func (s *Service) settleEntry(ctx context.Context, e *Entry) (*Settlement, error) {
	if s.j != nil {
		// The journal's batches count on being the only writer of a subscription while the
		// user has steps in them: wait for those, and keep new ones out meanwhile.
		release, err := s.holdSync(ctx, e.UserID)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	return s.settleSteps(ctx, e)
}

// settleSteps is settleEntry's protocol.
func (s *Service) settleSteps(ctx context.Context, e *Entry) (*Settlement, error) {
	stored, existed, err := s.insertEntry(ctx, e)
	if err != nil {
		return nil, err
	}
	doRollup := !existed
	if existed {
		if stored.UserID != e.UserID {
			return nil, fmt.Errorf("%w: request id %q belongs to another user", ErrBadRequest, e.RequestID)
		}
		if stored.State != StatePending {
			return settlement(stored), nil
		}
		e = stored
	}
	key := holdKey("r_", e.RequestID)
	after := &subDoc{}
	upd, err := s.updateSub(ctx, e.UserID, bson.D{{Key: "holds." + key + ".c", Value: e.Reserved}},
		func(cur *subDoc) bool { h, held := cur.Holds[key]; return held && h.Credits == e.Reserved },
		bson.D{{Key: "$inc", Value: bson.D{{Key: "features.aiCredits", Value: e.Credits}, {Key: "holdCount", Value: -1}}},
			{Key: "$unset", Value: bson.D{{Key: "holds." + key, Value: ""}}}})
	if err == nil {
		after = upd
	}
	switch {
	case err == nil:
	case errors.Is(err, mongo.ErrNoDocuments):
		sub, err := s.readSub(ctx, e.UserID)
		if err != nil {
			return nil, err
		}
		if sub == nil {
			return nil, ErrNoSubscription
		}
		if h, ok := sub.Holds[key]; ok && h.Phase == PhaseReserve {
			// The hold differs from the reservation presented (a stale copy): settle against
			// the hold, which is the truth, by fixing the pending entry and trying again.
			e.Charged = min(e.Charged, h.Credits)
			e.Reserved, e.Credits = h.Credits, h.Credits-e.Charged
			if _, err := s.ledgerUpdate(ctx, e.ID, bson.E{Key: "state", Value: StatePending},
				bson.D{{Key: "$set", Value: bson.D{{Key: "reserved", Value: e.Reserved}, {Key: "charged", Value: e.Charged}, {Key: "credits", Value: e.Credits}}}}); err != nil {
				return nil, fmt.Errorf("billing: settle: %w", err)
			}
			return s.settleSteps(ctx, e)
		}
		nothingHeld := !existed
		if existed {
			reserve, err := s.findEntry(ctx, e.RequestID, PhaseReserve)
			if err != nil {
				return nil, err
			}
			nothingHeld = reserve == nil || reserve.State == StateVoid
		}
		if nothingHeld {
			// No hold and nothing was ever held for this request (never reserved, refused,
			// or the reserve never applied). Charging now could overspend.
			_ = s.markVoid(ctx, e.ID, "no reservation held")
			return nil, fmt.Errorf("%w: no credits are held for request %q", ErrBadRequest, e.RequestID)
		}
		// An earlier attempt of this very settle released the hold (the settle entry is
		// unique per request, so nobody else could have): continue with its values.
		after.Features.AICredits = sub.Features.AICredits
	default:
		return nil, fmt.Errorf("billing: settle: %w", err)
	}
	if !doRollup && e.Rollup != "done" && e.Rollup != "skip" {
		doRollup, err = s.claimRollup(ctx, e)
		if err != nil {
			return nil, err
		}
	}
	if doRollup && e.Rollup != "skip" {
		if err := s.record(ctx, e); err != nil {
			// The money is settled; the rollup stays "claimed" and Reconcile reports it.
			s.log.Error("billing: rollup failed", "requestId", e.RequestID, "err", err)
			return nil, err
		}
	}
	rollup := "done"
	if e.Rollup == "skip" {
		rollup = "skip"
	}
	if err := s.markAppliedAs(ctx, e.ID, e.Credits, after.Features.AICredits, bson.D{{Key: "rollup", Value: rollup}}, !existed); err != nil {
		return nil, err
	}
	e.State, e.BalanceAfter = StateApplied, after.Features.AICredits
	return settlement(e), nil
}

// claimRollup lets a continuing settle take over the rollup of an entry whose first attempt
// did not finish it; only one claimant wins.
func (s *Service) claimRollup(ctx context.Context, e *Entry) (bool, error) {
	var claimed bool
	err := s.onSub(ctx, e.UserID, func() (err error) {
		claimed, err = s.ledgerUpdate(ctx, e.ID, bson.E{Key: "rollup", Value: e.Rollup},
			bson.D{{Key: "$set", Value: bson.D{{Key: "rollup", Value: "reclaimed"}}}})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("billing: claim rollup: %w", err)
	}
	return claimed, nil
}

func settlement(e *Entry) *Settlement {
	charged := e.Charged
	if e.State == StateVoid {
		charged = 0
	}
	return &Settlement{CostMicros: e.CostMicros, CostUSD: float64(e.CostMicros) / 1e6, PriceID: e.PriceID,
		Credits: charged, CreditsLeft: e.BalanceAfter}
}

// reserveAgain reserves, synchronously, for a turn whose early reservation was not written
// (early.go), sized on what the turn used: its input as the prompt, its cap as the output.
func (s *Service) reserveAgain(ctx context.Context, res *Reservation, o Outcome) (*Reservation, error) {
	r, credits, now, err := s.prepareReserve(ReserveRequest{RequestID: res.RequestID, UserID: res.UserID, Tool: res.Tool,
		Provider: res.Provider, Model: res.Model, PromptTokens: o.Usage.Input, MaxTokens: res.MaxTokens})
	if err != nil {
		return nil, err
	}
	release, err := s.holdSync(ctx, r.UserID)
	if err != nil {
		return nil, err
	}
	defer release()
	return s.reserveNow(ctx, r, credits, now, false)
}
