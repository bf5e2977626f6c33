package billing

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/maula-ai/maula-chat/providers"
)

// TestRecoverDangling builds, directly in the database, the state a process leaves when it
// dies at each point of the reserve and settle protocols, then checks that RecoverDangling
// (run by another instance, later) neither loses nor creates a credit.
func TestRecoverDangling(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	stored := providers.Usage{Input: 1000, Output: 300}
	history := func(_ context.Context, rid, tool string) (*providers.Usage, bool, error) {
		if rid[len(rid)-1] == 'H' { // requests whose reply the hub stored end in H
			return &stored, true, nil
		}
		return nil, false, nil
	}
	cases := []struct {
		name  string
		crash func(t *testing.T, s *Service, u bson.ObjectID, rid string)
		want  int64 // balance change after recovery, from 100
	}{
		{"died after ledger insert, before the $inc", func(t *testing.T, s *Service, u bson.ObjectID, rid string) {
			// Only the pending reserve entry exists.
			if _, _, err := s.insertEntry(ctx, &Entry{RequestID: rid, Phase: PhaseReserve, State: StatePending, UserID: u,
				Credits: -1, Reserved: 1, Tool: "ipintel", Provider: "claude", Model: "claude-sonnet-4-5", CreatedAt: s.now(), At: s.now()}); err != nil {
				t.Fatal(err)
			}
		}, 0},
		{"died after the $inc, nothing stored: refunded", func(t *testing.T, s *Service, u bson.ObjectID, rid string) {
			if _, err := s.Reserve(ctx, req(u, rid)); err != nil {
				t.Fatal(err)
			}
			// And the ledger mark never happened.
			_, _ = s.ledger.UpdateOne(ctx, bson.D{{Key: "requestId", Value: rid}, {Key: "phase", Value: PhaseReserve}},
				bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: StatePending}}}})
		}, 0},
		{"died mid-stream, reply stored: settled as abandoned", func(t *testing.T, s *Service, u bson.ObjectID, rid string) {
			if _, err := s.Reserve(ctx, req(u, rid)); err != nil {
				t.Fatal(err)
			}
		}, -1},
		{"died after the settle entry, before the release", func(t *testing.T, s *Service, u bson.ObjectID, rid string) {
			res, err := s.Reserve(ctx, req(u, rid))
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.insertEntry(ctx, &Entry{RequestID: rid, Phase: PhaseSettle, State: StatePending, UserID: u,
				Credits: 0, Reserved: res.Credits, Charged: 1, Tool: res.Tool, Provider: res.Provider, Model: res.Model,
				Usage: &UsageDoc{Input: 10, Output: 10}, CostMicros: 180, Status: StatusDone, Output: true,
				At: s.now(), Day: dayOf(s.now()), Rollup: "claimed", CreatedAt: s.now()}); err != nil {
				t.Fatal(err)
			}
		}, -1},
		{"died after the release, before the ledger mark", func(t *testing.T, s *Service, u bson.ObjectID, rid string) {
			res, err := s.Reserve(ctx, req(u, rid))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Settle(ctx, res, Outcome{Usage: stored, ProducedOutput: true, Status: StatusDone}); err != nil {
				t.Fatal(err)
			}
			_, _ = s.ledger.UpdateOne(ctx, bson.D{{Key: "requestId", Value: rid}, {Key: "phase", Value: PhaseSettle}},
				bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: StatePending}}}})
		}, -1},
		{"grant died after the $inc", func(t *testing.T, s *Service, u bson.ObjectID, rid string) {
			if _, err := s.GrantOnce(ctx, u, 7, "test", rid); err != nil {
				t.Fatal(err)
			}
			// Put the marker back and the entry to pending: as if steps 3 and 4 never ran.
			key := holdKey("o_", rid+":"+PhaseGrant)
			_, _ = s.subs.UpdateOne(ctx, bson.D{{Key: "userId", Value: u}}, bson.D{{Key: "$set", Value: bson.D{{Key: "holds." + key, Value: hold{Phase: PhaseGrant, Credits: 7, At: s.now(), RequestID: rid}}}},
				{Key: "$inc", Value: bson.D{{Key: "holdCount", Value: 1}}}})
			_, _ = s.ledger.UpdateOne(ctx, bson.D{{Key: "requestId", Value: rid}, {Key: "phase", Value: PhaseGrant}},
				bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: StatePending}}}})
		}, 7},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dead := e.service(t, PolicyPerCall, 0)
			u := newUser(t, dead, 100)
			rid := fmt.Sprintf("crash-%d-H", i)
			if i < 2 {
				rid = fmt.Sprintf("crash-%d", i)
			}
			c.crash(t, dead, u, rid)
			// The next start, later: another instance recovers.
			e.clk.Add(time.Hour)
			next := e.service(t, PolicyPerCall, 0)
			if _, err := next.RecoverDangling(ctx, history); err != nil {
				t.Fatal(err)
			}
			bal := checkLedger(t, next, u)
			if bal != 100+c.want {
				t.Fatalf("balance %d, want %d", bal, 100+c.want)
			}
			sub, _ := next.readSub(ctx, u)
			if len(sub.Holds) != 0 || sub.HoldCount != 0 {
				t.Fatalf("holds left: %v (%d)", sub.Holds, sub.HoldCount)
			}
			// Recovering again changes nothing.
			if n, err := next.RecoverDangling(ctx, history); err != nil || n != 0 {
				t.Fatalf("second recovery: %d %v", n, err)
			}
			if b2 := checkLedger(t, next, u); b2 != bal {
				t.Fatalf("second recovery moved the balance %d → %d", bal, b2)
			}
		})
	}
}

// TestRecoverLeavesYoungHolds: a reservation younger than DanglingAfter may belong to a live
// instance and is left alone.
func TestRecoverLeavesYoungHolds(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.service(t, PolicyPerCall, 0)
	u := newUser(t, s, 3)
	res, err := s.Reserve(ctx, req(u, "young-1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecoverDangling(ctx, nil); err != nil {
		t.Fatal(err)
	}
	st, err := s.Settle(ctx, res, Outcome{ProducedOutput: true, Status: StatusDone})
	if err != nil || st.Credits != 1 || st.CreditsLeft != 2 {
		t.Fatalf("settle after recovery pass: %+v %v", st, err)
	}
}

// TestPeriodRollover: at nextBillingDate the balance is reset to the plan's credits, once,
// as a ledger entry.
func TestPeriodRollover(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a, b := e.service(t, PolicyPerCall, 0), e.service(t, PolicyPerCall, 0)
	u := newUser(t, a, 7)
	if _, err := a.Reserve(ctx, req(u, "roll-1")); err != nil { // caches the period end
		t.Fatal(err)
	}
	e.clk.Add(31 * 24 * time.Hour)
	res, err := a.Reserve(ctx, req(u, "roll-2"))
	if err != nil {
		t.Fatal(err)
	}
	if res.CreditsLeft != testPlans["free"]-1 {
		t.Fatalf("after rollover left %d", res.CreditsLeft)
	}
	if _, err := b.RolloverDue(ctx, 1000); err != nil { // another instance's loop: must not reset again
		t.Fatal(err)
	}
	cur, _ := a.ledger.CountDocuments(ctx, bson.D{{Key: "userId", Value: u}, {Key: "phase", Value: PhaseReset}, {Key: "state", Value: StateApplied}})
	if cur != 1 {
		t.Fatalf("%d reset entries", cur)
	}
	e.clk.Add(time.Hour)
	if _, err := a.RecoverDangling(ctx, nil); err != nil { // refunds roll-1 (held across the reset)
		t.Fatal(err)
	}
	checkLedger(t, a, u)
}
