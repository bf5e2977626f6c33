package billing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/maula-ai/maula-chat/model"
)

const defaultPeriod = 30 * 24 * time.Hour

func (s *Service) period(plan string) time.Duration {
	if s.o.Plans != nil {
		if d := s.o.Plans.Period(plan); d > 0 {
			return d
		}
	}
	return defaultPeriod
}

func (s *Service) planCredits(plan string) (int64, error) {
	if s.o.Plans == nil {
		return 0, fmt.Errorf("%w: %q (no plan table configured)", ErrUnknownPlan, plan)
	}
	c, ok := s.o.Plans.Credits(plan)
	if !ok {
		return 0, fmt.Errorf("%w: %q", ErrUnknownPlan, plan)
	}
	return c, nil
}

func interval(d time.Duration) string {
	if d >= 360*24*time.Hour {
		return "yearly"
	}
	return "monthly"
}

// EnsureSubscription returns the user's subscription, opening one on plan when there is none:
// the plan's credits for one period, journalled as an "open" ledger entry. Registration should
// call it (or SetPlan) so that every balance starts in the ledger.
func (s *Service) EnsureSubscription(ctx context.Context, userID bson.ObjectID, plan string) (*model.Subscription, error) {
	var sub model.Subscription
	err := s.subs.FindOne(ctx, bson.D{{Key: "userId", Value: userID}}).Decode(&sub)
	if err == nil {
		return &sub, nil
	}
	if !errors.Is(err, mongo.ErrNoDocuments) {
		return nil, fmt.Errorf("billing: read subscription: %w", err)
	}
	credits, err := s.planCredits(plan)
	if err != nil {
		return nil, err
	}
	now := s.now().UTC()
	per := s.period(plan)
	e := &Entry{RequestID: "open:" + userID.Hex(), Phase: PhaseOpen, State: StatePending, UserID: userID,
		Credits: credits, Plan: plan, Reason: "subscription opened", At: now, CreatedAt: now}
	stored, existed, err := s.insertEntry(ctx, e)
	if err != nil {
		return nil, err
	}
	if existed {
		e = stored
	}
	key := holdKey("o_", e.RequestID+":"+e.Phase)
	amount, currency := 0.0, "USD"
	if p, ok := s.o.Plans.(PlanPricer); ok {
		amount, currency = p.Price(plan)
	}
	doc := bson.D{
		{Key: "_id", Value: bson.NewObjectID()}, {Key: "userId", Value: userID}, {Key: "plan", Value: plan},
		{Key: "billing", Value: bson.D{{Key: "amount", Value: amount}, {Key: "currency", Value: currency},
			{Key: "interval", Value: interval(per)}, {Key: "nextBillingDate", Value: now.Add(per)}}},
		{Key: "features", Value: bson.D{{Key: "maxAPIRequests", Value: 0}, {Key: "maxTools", Value: 0},
			{Key: "aiCredits", Value: e.Credits}, {Key: "supportLevel", Value: "basic"}}},
		{Key: "paymentMethod", Value: bson.D{{Key: "type", Value: "none"}}},
		{Key: "status", Value: "active"}, {Key: "createdAt", Value: now}, {Key: "updatedAt", Value: now},
		{Key: "holds", Value: bson.D{{Key: key, Value: hold{Phase: PhaseOpen, Credits: e.Credits, At: now, RequestID: e.RequestID}}}},
		{Key: "holdCount", Value: int64(1)},
	}
	if err := retryBusy(ctx, func() error { return s.write(func() error { _, err := s.subs.InsertOne(ctx, doc); return err }) }); err != nil && !isDup(err) {
		return nil, fmt.Errorf("billing: open subscription: %w", err)
	}
	cur, err := s.readSub(ctx, userID)
	if err != nil {
		return nil, err
	}
	if cur == nil {
		return nil, ErrNoSubscription
	}
	if h, ok := cur.Holds[key]; ok {
		if _, err := s.finishOp(ctx, e, key, h.Credits); err != nil {
			return nil, err
		}
	} else if e.State == StatePending {
		// Someone else (registration, another instance's open) created it first.
		_ = s.markVoid(ctx, e.ID, "subscription created elsewhere")
	}
	if err := s.subs.FindOne(ctx, bson.D{{Key: "userId", Value: userID}}).Decode(&sub); err != nil {
		return nil, fmt.Errorf("billing: read subscription: %w", err)
	}
	return &sub, nil
}

// Grant adds credits to the user's balance (negative: takes them back, never below zero), as a
// ledger entry with the reason.
func (s *Service) Grant(ctx context.Context, userID bson.ObjectID, credits int64, reason string) error {
	_, err := s.GrantOnce(ctx, userID, credits, reason, "grant:"+bson.NewObjectID().Hex())
	return err
}

// GrantOnce is Grant with the caller's idempotency key: a retry with the same key grants once.
// It returns the balance after the grant.
func (s *Service) GrantOnce(ctx context.Context, userID bson.ObjectID, credits int64, reason, key string) (int64, error) {
	if credits == 0 || key == "" {
		return 0, fmt.Errorf("%w: a grant needs non-zero credits and a key", ErrBadRequest)
	}
	e := &Entry{RequestID: key, Phase: PhaseGrant, UserID: userID, Credits: credits, Reason: reason}
	e, err := s.applyOp(ctx, e, func(*subDoc) (int64, bson.D, bson.D, bool, error) {
		return credits, nil, nil, false, nil
	})
	if err != nil {
		return 0, err
	}
	if e.UserID != userID {
		return 0, fmt.Errorf("%w: key %q was used for another user", ErrBadRequest, key)
	}
	return e.BalanceAfter, nil
}

// SetPlan moves the user to plan: the balance becomes the plan's credits (a "plan" ledger
// entry with the difference), a new period starts now, and a billing record (the seed's
// BillingRecord; no payment processor) is written. A user with no subscription gets one.
func (s *Service) SetPlan(ctx context.Context, userID bson.ObjectID, plan string) error {
	credits, err := s.planCredits(plan)
	if err != nil {
		return err
	}
	sub, err := s.readSub(ctx, userID)
	if err != nil {
		return err
	}
	if sub == nil {
		if _, err := s.EnsureSubscription(ctx, userID, plan); err != nil {
			return err
		}
		sub, err = s.readSub(ctx, userID)
		if err != nil {
			return err
		}
		return s.writeBillingRecord(ctx, sub, plan, "open:"+userID.Hex())
	}
	per := s.period(plan)
	key := "plan:" + bson.NewObjectID().Hex()
	e := &Entry{RequestID: key, Phase: PhasePlan, UserID: userID, Plan: plan, Reason: "plan " + sub.Plan + " → " + plan}
	amount, currency := 0.0, "USD"
	if p, ok := s.o.Plans.(PlanPricer); ok {
		amount, currency = p.Price(plan)
	}
	e, err = s.applyOp(ctx, e, func(cur *subDoc) (int64, bson.D, bson.D, bool, error) {
		now := s.now().UTC()
		return credits - cur.Features.AICredits,
			bson.D{{Key: "features.aiCredits", Value: cur.Features.AICredits}},
			bson.D{{Key: "plan", Value: plan}, {Key: "status", Value: "active"},
				{Key: "billing.nextBillingDate", Value: now.Add(per)}, {Key: "billing.interval", Value: interval(per)},
				{Key: "billing.amount", Value: amount}, {Key: "billing.currency", Value: currency}}, false, nil
	})
	if err != nil {
		return err
	}
	s.periodEnd.Delete(userID)
	// The money moved: a failure to note the summary must not skip the billing record or
	// invite a retry, which would be a second plan change.
	if err := s.noteUserPlan(ctx, userID, plan); err != nil {
		s.log.Error("billing: plan changed but the user's plan summary was not updated", "user", userID.Hex(), "err", err)
	}
	sub.Plan = plan
	return s.writeBillingRecord(ctx, sub, plan, e.RequestID)
}

// noteUserPlan keeps the plan summary embedded in the user document (users.subscription, the
// seed's User schema) in step with the subscription. Idempotent; a user document that does
// not exist (a user known only to billing) is not an error.
func (s *Service) noteUserPlan(ctx context.Context, userID bson.ObjectID, plan string) error {
	now := s.now().UTC()
	err := retryBusy(ctx, func() error {
		return s.write(func() error {
			_, err := s.users.UpdateOne(ctx, bson.D{{Key: "_id", Value: userID}}, bson.D{{Key: "$set", Value: bson.D{
				{Key: "subscription.plan", Value: plan}, {Key: "subscription.status", Value: "active"},
				{Key: "subscription.startDate", Value: now}, {Key: "updatedAt", Value: now}}}})
			return err
		})
	})
	if err != nil {
		return fmt.Errorf("billing: note the plan on the user: %w", err)
	}
	return nil
}

// writeBillingRecord writes the seed's BillingRecord for a plan change. paymentIntent names
// the ledger entry (there is no payment processor yet).
func (s *Service) writeBillingRecord(ctx context.Context, sub *subDoc, plan, ledgerKey string) error {
	now := s.now().UTC()
	amount, currency := 0.0, "USD"
	if p, ok := s.o.Plans.(PlanPricer); ok {
		amount, currency = p.Price(plan)
	}
	status := "paid"
	var paidAt *time.Time
	if amount > 0 {
		status = "pending"
	} else {
		paidAt = &now
	}
	id := bson.NewObjectID()
	rec := model.BillingRecord{ID: id, UserID: sub.UserID, SubscriptionID: sub.ID, Amount: amount, Currency: currency,
		Status: status, Invoice: model.Invoice{Number: "MAULA-" + now.Format("20060102") + "-" + id.Hex()[16:]},
		PaymentIntent: "ledger:" + ledgerKey, CreatedAt: now, PaidAt: paidAt}
	if _, err := s.bills.InsertOne(ctx, rec); err != nil {
		return fmt.Errorf("billing: write billing record: %w", err)
	}
	return nil
}

// rolloverUser resets the user's balance to the plan's credits when the period has ended, as a
// "reset" ledger entry keyed by the period that ended (so exactly one instance does it), and
// moves nextBillingDate forward by whole periods past now.
func (s *Service) rolloverUser(ctx context.Context, userID bson.ObjectID) error {
	sub, err := s.readSub(ctx, userID)
	if err != nil || sub == nil {
		return err
	}
	now := s.now().UTC()
	end := sub.Billing.NextBillingDate
	if end.IsZero() || now.Before(end) {
		s.notePeriod(userID, end)
		return nil
	}
	credits, err := s.planCredits(sub.Plan)
	if err != nil {
		return err
	}
	per := s.period(sub.Plan)
	next := end
	for !next.After(now) {
		next = next.Add(per)
	}
	e := &Entry{RequestID: "reset:" + userID.Hex() + ":" + end.UTC().Format(time.RFC3339), Phase: PhaseReset,
		UserID: userID, Plan: sub.Plan, Reason: "period rollover"}
	_, err = s.applyOp(ctx, e, func(cur *subDoc) (int64, bson.D, bson.D, bool, error) {
		if !cur.Billing.NextBillingDate.Equal(end) {
			return 0, nil, nil, true, nil // rolled over already
		}
		return credits - cur.Features.AICredits,
			bson.D{{Key: "billing.nextBillingDate", Value: end}, {Key: "features.aiCredits", Value: cur.Features.AICredits}},
			bson.D{{Key: "billing.nextBillingDate", Value: next}}, false, nil
	})
	if err != nil {
		return fmt.Errorf("billing: rollover: %w", err)
	}
	s.notePeriod(userID, next)
	return nil
}

// RolloverDue rolls over every subscription whose period has ended (at most limit of them) and
// returns how many it rolled. The periodic loop calls it; Reserve also checks lazily.
func (s *Service) RolloverDue(ctx context.Context, limit int64) (int, error) {
	cur, err := s.subs.Find(ctx, bson.D{{Key: "billing.nextBillingDate", Value: bson.D{{Key: "$lte", Value: s.now().UTC()}}}},
		findLimit(limit, bson.D{{Key: "userId", Value: 1}}))
	if err != nil {
		return 0, fmt.Errorf("billing: find due subscriptions: %w", err)
	}
	var due []subDoc
	if err := cur.All(ctx, &due); err != nil {
		return 0, fmt.Errorf("billing: find due subscriptions: %w", err)
	}
	n := 0
	for _, d := range due {
		if err := s.rolloverUser(ctx, d.UserID); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// Run does the periodic work until ctx ends: period rollovers and recovery of dangling
// reservations (settledFromHistory as for RecoverDangling; nil refunds them all).
func (s *Service) Run(ctx context.Context, every time.Duration, settledFromHistory HistoryLookup) {
	if every <= 0 {
		every = time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := s.RolloverDue(ctx, 1000); err != nil && ctx.Err() == nil {
			s.log.Warn("billing: rollover loop", "err", err)
		}
		if _, err := s.RecoverDangling(ctx, settledFromHistory); err != nil && ctx.Err() == nil {
			s.log.Warn("billing: recovery loop", "err", err)
		}
	}
}
