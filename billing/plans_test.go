package billing

import (
	"context"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/maula-ai/maula-chat/model"
)

// TestSetPlan: an admin's plan change sets the balance to the new plan's credits through a
// "plan" ledger entry, writes a billing record naming that entry, moves the user's embedded
// plan summary, and an unknown plan changes nothing.
func TestSetPlan(t *testing.T) {
	e := newEnv(t)
	s := e.service(t, PolicyPerCall, 0)
	ctx := context.Background()
	db := e.mongo.DB(model.AuthDB)
	u := newUser(t, s, 7)
	if _, err := db.Collection(model.CollUsers).InsertOne(ctx, model.User{ID: u, Email: u.Hex() + "@plans.example",
		Subscription: model.UserSubscription{Plan: "free", Status: "active"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPlan(ctx, u, "no-such-plan"); err == nil {
		t.Fatal("SetPlan to an unknown plan succeeded")
	}
	if err := s.SetPlan(ctx, u, "pro"); err != nil {
		t.Fatal(err)
	}
	if bal, err := s.Balance(ctx, u); err != nil || bal != testPlans["pro"] {
		t.Fatalf("balance after plan change = %d, %v; want %d", bal, err, testPlans["pro"])
	}
	var entry Entry
	if err := db.Collection(model.CollLedger).FindOne(ctx, bson.D{{Key: "userId", Value: u}, {Key: "phase", Value: PhasePlan}}).Decode(&entry); err != nil {
		t.Fatalf("plan ledger entry: %v", err)
	}
	if entry.State != StateApplied || entry.Credits != testPlans["pro"]-7 || entry.BalanceAfter != testPlans["pro"] {
		t.Errorf("plan entry = state %s credits %d balanceAfter %d; want applied, %d, %d",
			entry.State, entry.Credits, entry.BalanceAfter, testPlans["pro"]-7, testPlans["pro"])
	}
	var rec model.BillingRecord
	if err := db.Collection(model.CollBilling).FindOne(ctx, bson.D{{Key: "userId", Value: u}}).Decode(&rec); err != nil {
		t.Fatalf("billing record: %v", err)
	}
	if rec.PaymentIntent != "ledger:"+entry.RequestID {
		t.Errorf("billing record names %q, want the ledger entry %q", rec.PaymentIntent, entry.RequestID)
	}
	var user model.User
	if err := db.Collection(model.CollUsers).FindOne(ctx, bson.D{{Key: "_id", Value: u}}).Decode(&user); err != nil {
		t.Fatal(err)
	}
	if user.Subscription.Plan != "pro" || user.Subscription.Status != "active" {
		t.Errorf("users.subscription = %+v, want plan pro, active", user.Subscription)
	}
	sub, err := s.readSub(ctx, u)
	if err != nil || sub.Plan != "pro" || sub.HoldCount != 0 || len(sub.Holds) != 0 {
		t.Errorf("subscription after plan change: %+v, %v; want plan pro and no markers left", sub, err)
	}
}
