package billing

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/maula-ai/maula-chat/providers"
)

// fresh is req for a request id made for this call alone, as the hub makes them.
func fresh(r ReserveRequest) ReserveRequest { r.Fresh = true; return r }

// Early answers (early.go) keep every guarantee of the synchronous path: with many fresh
// turns of one user at once, exactly min(turns, B) run under per_call, no more than B is
// charged under per_cost, every early write lands (no settle fails), and the ledger, the
// balance and the rollups agree.
func TestEarlyReservationsNeverOverdraw(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		policy  string
		balance int64
		turns   int
	}{
		{PolicyPerCall, 23, 40},
		{PolicyPerCost, 300, 30},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/B=%d", c.policy, c.balance), func(t *testing.T) {
			ctx := context.Background()
			s := e.service(t, c.policy, 1000)
			u := newUser(t, s, c.balance)
			var ok, early, charged, costs atomic.Int64
			var wg sync.WaitGroup
			for i := range c.turns {
				wg.Go(func() {
					res, err := s.Reserve(ctx, fresh(req(u, fmt.Sprintf("early-%s-%d-%d", c.policy, c.balance, i))))
					if errors.Is(err, ErrInsufficientCredits) {
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					if res.CreditsLeft < 0 {
						t.Errorf("answered with a negative balance %d", res.CreditsLeft)
					}
					ok.Add(1)
					if res.written != nil {
						early.Add(1)
					}
					st, err := s.Settle(ctx, res, Outcome{Usage: providers.Usage{Input: 1000, Output: min(res.MaxTokens, 300)}, ProducedOutput: true, Status: StatusDone})
					if err != nil {
						t.Errorf("settle of an answered reservation: %v", err)
						return
					}
					charged.Add(st.Credits)
					costs.Add(st.CostMicros)
				})
			}
			wg.Wait()
			s.WaitEarly()
			bal := checkLedger(t, s, u)
			if c.policy == PolicyPerCall && ok.Load() != min(int64(c.turns), c.balance) {
				t.Fatalf("%d succeeded, want %d", ok.Load(), min(int64(c.turns), c.balance))
			}
			if charged.Load() > c.balance || bal != c.balance-charged.Load() {
				t.Fatalf("charged %d of %d, balance %d", charged.Load(), c.balance, bal)
			}
			if early.Load() == 0 {
				t.Fatal("no reservation was answered early: the test does not exercise early.go")
			}
			rep, err := s.Costs(ctx, CostQuery{From: e.clk.Now(), To: e.clk.Now(), GroupBy: []string{DimUser}, UserID: u})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Totals.CostMicros != costs.Load() || rep.Totals.Requests != ok.Load() {
				t.Fatalf("rollup %+v, settled cost %d over %d turns", rep.Totals, costs.Load(), ok.Load())
			}
			t.Logf("%d ok (%d early), charged %d, balance %d", ok.Load(), early.Load(), charged.Load(), bal)
		})
	}
}

// A grant that lowers the balance while early writes are in flight waits for them
// (holdEarly): here it then finds the balance too low and is refused, where without the wait it
// would take credits the early answers counted on and their writes would fail. The writes are
// held until the grant is waiting, so the order is the same on every run.
func TestEarlyWritesSurviveBalanceChanges(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.service(t, PolicyPerCall, 0)
	u := newUser(t, s, 20)
	gate := make(chan struct{})
	s.earlyFault = func(ReserveRequest) error { <-gate; return nil }
	var answered []*Reservation
	for i := range 10 {
		res, err := s.Reserve(ctx, fresh(req(u, fmt.Sprintf("bal-%s-%d", u.Hex(), i))))
		if err != nil || res.written == nil {
			t.Fatalf("reserve %d: %v (early %v)", i, err, res != nil && res.written != nil)
		}
		answered = append(answered, res)
	}
	granted := make(chan error, 1)
	go func() { granted <- s.Grant(ctx, u, -15, "correction") }()
	eu := s.earlyUser(u)
	var grantErr error
	over := false
	for waiting := false; !waiting && !over; { // until the grant waits for the early writes, or is over
		eu.mu.Lock()
		waiting = eu.blocked == 1
		eu.mu.Unlock()
		select {
		case grantErr = <-granted: // it did not wait
			over = true
		default:
			runtime.Gosched()
		}
	}
	close(gate)
	if !over {
		grantErr = <-granted
	}
	if !errors.Is(grantErr, ErrInsufficientCredits) {
		t.Fatalf("grant of -15 with 10 of 20 credits held: %v, want ErrInsufficientCredits", grantErr)
	}
	for _, res := range answered {
		if _, err := s.Settle(ctx, res, Outcome{Usage: providers.Usage{Input: 10, Output: 10}, ProducedOutput: true, Status: StatusDone}); err != nil {
			t.Errorf("settle %s: %v", res.RequestID, err)
		}
	}
	if got := checkLedger(t, s, u); got != 10 {
		t.Fatalf("balance %d, want 10", got)
	}
}

// An early answer whose write failed is reserved again at Settle, so the delivered turn is
// billed like any other; a user who cannot pay for it any more is not overdrawn.
func TestEarlyWriteFailureReservesAgain(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cases := []struct {
		name        string
		drainBefore bool // spend the balance between the answer and the settle
		wantErr     bool
		wantBalance int64
	}{
		{"balance still covers it", false, false, 4},
		{"balance spent meanwhile", true, true, 0},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := e.service(t, PolicyPerCall, 0)
			u := newUser(t, s, 5)
			s.earlyFault = func(ReserveRequest) error { return errors.New("injected write failure") }
			res, err := s.Reserve(ctx, fresh(req(u, fmt.Sprintf("fault-%d", i))))
			if err != nil || res.written == nil {
				t.Fatalf("reserve: %v (early %v)", err, res != nil && res.written != nil)
			}
			<-res.written.done
			s.earlyFault = nil
			if c.drainBefore {
				if err := s.Grant(ctx, u, -5, "spent"); err != nil {
					t.Fatal(err)
				}
			}
			st, err := s.Settle(ctx, res, Outcome{Usage: providers.Usage{Input: 10, Output: 10}, ProducedOutput: true, Status: StatusDone})
			if (err != nil) != c.wantErr {
				t.Fatalf("settle: %v, want error %v", err, c.wantErr)
			}
			if err == nil && st.Credits != 1 {
				t.Fatalf("charged %d, want 1", st.Credits)
			}
			if got := checkLedger(t, s, u); got != c.wantBalance {
				t.Fatalf("balance %d, want %d", got, c.wantBalance)
			}
		})
	}
}

// The write of an early answer outlives the turn's context: a turn cancelled at once still
// settles (here: as cancelled with no output, so nothing is charged).
func TestEarlyWriteOutlivesCancelledTurn(t *testing.T) {
	e := newEnv(t)
	s := e.service(t, PolicyPerCall, 0)
	u := newUser(t, s, 5)
	ctx, cancel := context.WithCancel(context.Background())
	res, err := s.Reserve(ctx, fresh(req(u, "cancelled-at-once")))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if res.written == nil {
		t.Fatal("not answered early")
	}
	st, err := s.Settle(context.Background(), res, Outcome{Status: StatusCancelled})
	if err != nil {
		t.Fatal(err)
	}
	if st.Credits != 0 || checkLedger(t, s, u) != 5 {
		t.Fatalf("charged %d, balance %d", st.Credits, checkLedger(t, s, u))
	}
}

// Only a fresh request, with the store's only writer, is answered before it is written: a
// request id that may have been used before must meet its earlier entry synchronously.
func TestEarlyAnswerOnlyWhenSafe(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cases := []struct {
		name    string
		locking string
		fresh   bool
		early   bool
	}{
		{"fresh, only writer", "local", true, true},
		{"not fresh", "local", false, false},
		{"shared store", "on", true, false},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := e.serviceLocking(t, PolicyPerCall, 0, c.locking)
			u := newUser(t, s, 5)
			r := req(u, fmt.Sprintf("safe-%d", i))
			r.Fresh = c.fresh
			res, err := s.Reserve(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			if got := res.written != nil; got != c.early {
				t.Fatalf("answered early: %v, want %v", got, c.early)
			}
			if _, err := s.Settle(ctx, res, Outcome{ProducedOutput: true, Status: StatusDone}); err != nil {
				t.Fatal(err)
			}
			if got := checkLedger(t, s, u); got != 4 {
				t.Fatalf("balance %d, want 4", got)
			}
		})
	}
}

// A user's first reservation after a start (nothing of theirs in memory yet) is answered early
// too: the subscription is read once instead of being written before the answer.
func TestEarlyFirstReservationAfterStart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	u := newUser(t, e.service(t, PolicyPerCall, 0), 3)
	s := e.service(t, PolicyPerCall, 0) // a new process over the same store: an empty shadow
	res, err := s.Reserve(ctx, fresh(req(u, "first-after-start-"+u.Hex())))
	if err != nil {
		t.Fatal(err)
	}
	if res.written == nil || res.CreditsLeft != 2 {
		t.Fatalf("answered early: %v, credits left %d", res.written != nil, res.CreditsLeft)
	}
	if _, err := s.Settle(ctx, res, Outcome{ProducedOutput: true, Status: StatusDone}); err != nil {
		t.Fatal(err)
	}
	if got := checkLedger(t, s, u); got != 2 {
		t.Fatalf("balance %d, want 2", got)
	}
}
