package billing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/maula-ai/maula-chat/providers"
)

func req(u bson.ObjectID, id string) ReserveRequest {
	return ReserveRequest{RequestID: id, UserID: u, Tool: "ipintel", Provider: "claude", Model: "claude-sonnet-4-5",
		PromptTokens: 1000, MaxTokens: 1000}
}

func TestSettleRules(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	usage := providers.Usage{Input: 1000, Output: 500, CacheRead: 200}
	// sonnet: 1000×3 + 500×15 + 200×0.3 µ$/1000 → 3000+7500+60 = 10560 µ$.
	const cost = 10560
	cases := []struct {
		name    string
		policy  string
		out     Outcome
		charged int64
	}{
		{"per_call done", PolicyPerCall, Outcome{Usage: usage, ProducedOutput: true, Status: StatusDone}, 1},
		{"per_call cancelled with output", PolicyPerCall, Outcome{Usage: usage, ProducedOutput: true, Status: StatusCancelled}, 1},
		{"per_call abandoned with output", PolicyPerCall, Outcome{Usage: usage, ProducedOutput: true, Status: StatusAbandoned}, 1},
		{"per_call failed mid-stream", PolicyPerCall, Outcome{Usage: usage, ProducedOutput: true, Status: StatusFailed}, 1},
		{"per_call failed before first token", PolicyPerCall, Outcome{Status: StatusFailed}, 0},
		{"per_call cancelled before first token", PolicyPerCall, Outcome{Status: StatusCancelled}, 0},
		{"per_cost done", PolicyPerCost, Outcome{Usage: usage, ProducedOutput: true, Status: StatusDone}, 11}, // ceil(10560/1000)
		{"per_cost cancelled with output", PolicyPerCost, Outcome{Usage: usage, ProducedOutput: true, Status: StatusCancelled}, 11},
		{"per_cost failed before first token", PolicyPerCost, Outcome{Status: StatusFailed}, 0},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := e.service(t, c.policy, 1000)
			u := newUser(t, s, 100)
			res, err := s.Reserve(ctx, req(u, fmt.Sprintf("rules-%d", i)))
			if err != nil {
				t.Fatal(err)
			}
			wantHeld := int64(1)
			if c.policy == PolicyPerCost {
				wantHeld = 18 // 1000×3 + 1000×15 = 18000 µ$
			}
			if res.Credits != wantHeld || res.CreditsLeft != 100-wantHeld {
				t.Fatalf("reserved %d left %d", res.Credits, res.CreditsLeft)
			}
			st, err := s.Settle(ctx, res, c.out)
			if err != nil {
				t.Fatal(err)
			}
			if st.Credits != c.charged || st.CreditsLeft != 100-c.charged {
				t.Fatalf("charged %d left %d, want %d", st.Credits, st.CreditsLeft, c.charged)
			}
			if c.out.ProducedOutput && (st.CostMicros != cost || st.PriceID != "claude/claude-sonnet-4-5@2025-09-29") {
				t.Fatalf("cost %d %s", st.CostMicros, st.PriceID)
			}
			// Settling again returns the first result and charges nothing more.
			again, err := s.Settle(ctx, res, Outcome{Usage: providers.Usage{Output: 99999}, ProducedOutput: true, Status: StatusDone})
			if err != nil {
				t.Fatal(err)
			}
			if *again != *st {
				t.Fatalf("second settle %+v, first %+v", again, st)
			}
			if bal := checkLedger(t, s, u); bal != 100-c.charged {
				t.Fatalf("balance %d", bal)
			}
		})
	}
}

func TestReserveIdempotentAndUnknownModel(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.service(t, PolicyPerCall, 0)
	u := newUser(t, s, 5)
	r1, err := s.Reserve(ctx, req(u, "idem-1"))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.Reserve(ctx, req(u, "idem-1"))
	if err != nil {
		t.Fatal(err)
	}
	if r1.Credits != r2.Credits || r2.CreditsLeft != 4 {
		t.Fatalf("retry reserved again: %+v %+v", r1, r2)
	}
	bad := req(u, "idem-2")
	bad.Model = "no-such-model"
	if _, err := s.Reserve(ctx, bad); !errors.Is(err, providers.ErrUnknownModel) {
		t.Fatalf("unknown model: %v", err)
	}
	if e, _ := s.findEntry(ctx, "idem-2", PhaseReserve); e != nil {
		t.Fatal("unknown model wrote a ledger entry")
	}
	if _, err := s.Settle(ctx, r1, Outcome{ProducedOutput: true, Status: StatusDone}); err != nil {
		t.Fatal(err)
	}
	checkLedger(t, s, u)
}

func TestPerCostLowersCap(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.service(t, PolicyPerCost, 1000)
	u := newUser(t, s, 10) // 10 credits = 10,000 µ$
	r := req(u, "cap-1")   // worst case 18,000 µ$ = 18 credits
	res, err := s.Reserve(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	// prompt 3000 µ$; 7000 µ$ left at 15 µ$/token... = 466 tokens (6990 µ$ → 9990 → 10 credits).
	if !res.CapLowered || res.MaxTokens != 466 || res.Credits != 10 || res.CreditsLeft != 0 {
		t.Fatalf("lowered reservation %+v", res)
	}
	st, err := s.Settle(ctx, res, Outcome{Usage: providers.Usage{Input: 1000, Output: 466}, ProducedOutput: true, Status: StatusDone})
	if err != nil {
		t.Fatal(err)
	}
	if st.Credits != 10 || st.CreditsLeft != 0 {
		t.Fatalf("settled %+v", st)
	}
	if _, err := s.Reserve(ctx, req(u, "cap-2")); !errors.Is(err, ErrInsufficientCredits) {
		t.Fatalf("empty balance: %v", err)
	}
	checkLedger(t, s, u)
}

// TestConcurrentReservesTwoInstances: 200 turns at once from two services sharing one Mongo.
func TestConcurrentReservesTwoInstances(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		policy  string
		balance int64
	}{
		{PolicyPerCall, 37},
		{PolicyPerCall, 250},
		{PolicyPerCost, 300},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/B=%d", c.policy, c.balance), func(t *testing.T) {
			if c.balance >= 200 && c.policy == PolicyPerCall && os.Getenv("MAULA_LONG_TESTS") == "" {
				// 200 successful turns of one user serialize on the user's lock on FerretDB:
				// over a minute on a loaded 2-core machine.
				t.Skip("set MAULA_LONG_TESTS=1 for the B ≥ 200 case")
			}
			ctx := context.Background()
			// Two instances sharing the database: the shared lease lock must hold.
			a, b := e.serviceLocking(t, c.policy, 1000, "on"), e.serviceLocking(t, c.policy, 1000, "on")
			// 200 turns as the issue says with MAULA_LONG_TESTS=1; 60 otherwise: the shared
			// lease lock on FerretDB costs several writes a step, and CI has a time budget.
			turns := int64(60)
			if os.Getenv("MAULA_LONG_TESTS") != "" {
				turns = 200
			}
			u := newUser(t, a, c.balance)
			var ok, refused, charged, costs atomic.Int64
			var wg sync.WaitGroup
			for i := range turns {
				s := a
				if i%2 == 1 {
					s = b
				}
				wg.Go(func() {
					res, err := s.Reserve(ctx, req(u, fmt.Sprintf("conc-%s-%d-%d", c.policy, c.balance, i)))
					if errors.Is(err, ErrInsufficientCredits) {
						refused.Add(1)
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					if res.CreditsLeft < 0 {
						t.Errorf("negative balance %d", res.CreditsLeft)
					}
					ok.Add(1)
					st, err := s.Settle(ctx, res, Outcome{Usage: providers.Usage{Input: 1000, Output: min(res.MaxTokens, 300)}, ProducedOutput: true, Status: StatusDone})
					if err != nil {
						t.Error(err)
						return
					}
					charged.Add(st.Credits)
					costs.Add(st.CostMicros)
				})
			}
			wg.Wait()
			bal := checkLedger(t, a, u)
			if c.policy == PolicyPerCall && ok.Load() != min(turns, c.balance) {
				t.Fatalf("%d succeeded, want %d (refused %d)", ok.Load(), min(turns, c.balance), refused.Load())
			}
			if charged.Load() > c.balance || bal != c.balance-charged.Load() {
				t.Fatalf("charged %d of %d, balance %d", charged.Load(), c.balance, bal)
			}
			// Rollups agree with the settlements.
			rep, err := a.Costs(ctx, CostQuery{From: e.clk.Now(), To: e.clk.Now(), GroupBy: []string{DimUser}, UserID: u})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Totals.CostMicros != costs.Load() || rep.Totals.Requests != ok.Load() {
				t.Fatalf("rollup %+v, settled cost %d over %d turns", rep.Totals, costs.Load(), ok.Load())
			}
			t.Logf("%d ok, %d refused, charged %d, balance %d", ok.Load(), refused.Load(), charged.Load(), bal)
		})
	}
}

// An outcome's reason is kept on the settle entry, so the ledger says why a turn whose output
// the client saw was settled as failed without output.
func TestSettleKeepsReason(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.service(t, PolicyPerCall, 0)
	u := newUser(t, s, 3)
	res, err := s.Reserve(ctx, req(u, "reason-1"))
	if err != nil {
		t.Fatal(err)
	}
	const why = "reply not stored (done, output sent: true): settled as failed, not charged"
	st, err := s.Settle(ctx, res, Outcome{Usage: providers.Usage{Input: 10, Output: 5}, Status: StatusFailed, Reason: why})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.findEntry(ctx, "reason-1", PhaseSettle)
	if err != nil || got == nil {
		t.Fatalf("settle entry: %v, %v", got, err)
	}
	if got.Reason != why || st.Credits != 0 || checkLedger(t, s, u) != 3 {
		t.Fatalf("entry reason %q, charged %d", got.Reason, st.Credits)
	}
}
