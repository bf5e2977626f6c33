package billing

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/maula-ai/maula-chat/providers"
)

// turnUsage is what every turn of the journal tests used.
var turnUsage = providers.Usage{Input: 1200, Output: 340, CacheRead: 100}

// checkJournaled checks what the journal tests expect of a user after their turns: the ledger
// equals the balance, nothing is held, and the user's cost report counts turns settled
// turns costing costMicros in all.
func checkJournaled(t *testing.T, s *Service, u bson.ObjectID, day time.Time, turns, costMicros int64) int64 {
	t.Helper()
	ctx := context.Background()
	bal := checkLedger(t, s, u)
	sub, err := s.readSub(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	if sub.HoldCount != 0 || len(sub.Holds) != 0 {
		t.Fatalf("holds left: count %d, %v", sub.HoldCount, sub.Holds)
	}
	rep, err := s.Costs(ctx, CostQuery{From: day, To: day, GroupBy: []string{DimUser}, UserID: u, Fresh: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Totals.Requests != turns || rep.Totals.CostMicros != costMicros {
		t.Fatalf("report: %d requests costing %d µ$, want %d costing %d", rep.Totals.Requests, rep.Totals.CostMicros, turns, costMicros)
	}
	return bal
}

// The hub's turns go through the journal, many at a time: concurrent turns of several users,
// some of them not fresh (written step by step beside the journal's batches), leave every
// ledger equal to its balance, no hold, the reports exact, and fewer batches than steps.
func TestJournalWritesTurnsTogether(t *testing.T) {
	e := newEnv(t)
	e.clk.Add(400 * 24 * time.Hour) // a day of its own for the reports
	ctx := context.Background()
	s := e.service(t, PolicyPerCost, 1000)
	if s.j == nil {
		t.Fatal("no journal with locking local")
	}
	const users, perUser = 6, 8
	type tally struct{ turns, cost, charged atomic.Int64 }
	us := make([]bson.ObjectID, users)
	got := make([]tally, users)
	for i := range us {
		us[i] = newUser(t, s, 5000)
	}
	var journaled atomic.Int64
	var wg sync.WaitGroup
	for i := range users * perUser {
		wg.Go(func() {
			ui := i % users
			r := req(us[ui], fmt.Sprintf("journal-%s-%d", us[ui].Hex(), i))
			r.Fresh = i%4 != 3 // one turn in four the step-by-step way
			res, err := s.Reserve(ctx, r)
			if err != nil {
				t.Error(err)
				return
			}
			if res.written != nil {
				journaled.Add(1)
			}
			st, err := s.Settle(ctx, res, Outcome{Usage: turnUsage, ProducedOutput: true, Status: StatusDone})
			if err != nil {
				t.Error(err)
				return
			}
			got[ui].turns.Add(1)
			got[ui].cost.Add(st.CostMicros)
			got[ui].charged.Add(st.Credits)
		})
	}
	wg.Wait()
	s.WaitEarly()
	if t.Failed() {
		return
	}
	for i, u := range us {
		bal := checkJournaled(t, s, u, e.clk.Now(), got[i].turns.Load(), got[i].cost.Load())
		if bal != 5000-got[i].charged.Load() {
			t.Fatalf("user %d: balance %d, charged %d of 5000", i, bal, got[i].charged.Load())
		}
	}
	if journaled.Load() == 0 || s.j.seq == 0 {
		t.Fatal("nothing went through the journal")
	}
	// Each journaled turn is at least one step (two when its reservation is written alone).
	if s.j.seq >= journaled.Load() {
		t.Fatalf("%d batches for %d journaled turns: nothing was written together", s.j.seq, journaled.Load())
	}
	t.Logf("%d journaled turns in %d batches", journaled.Load(), s.j.seq)
	// Every batch document before the last rollup write is deleted (shutdown waits for it).
	cur, err := s.j.coll.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$gte", Value: s.j.name + ":"}, {Key: "$lt", Value: s.j.name + ";"}}}},
		options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		t.Fatal(err)
	}
	var kept []journalDoc
	if err := cur.All(ctx, &kept); err != nil {
		t.Fatal(err)
	}
	if len(kept) == 0 || !kept[0].Rollups {
		t.Fatalf("%d batch documents kept after shutdown; want the last rollup write's first", len(kept))
	}
}

// A batch that fails partway is completed, never half applied: by the flush itself when a
// replay succeeds, otherwise by the next start, which replays the journal. Its steps were
// answered once its journal document was written; until the replay billing refuses to change
// balances. A batch whose journal document was not written is not applied at all, and its
// steps are written the step-by-step way.
func TestJournalFailureAndReplay(t *testing.T) {
	e := newEnv(t)
	e.clk.Add(401 * 24 * time.Hour)
	cases := []struct {
		step      string
		after     int  // occurrences of step that pass before the fault
		permanent bool // fails every time from then on: the process "dies"
	}{
		{"journal", 0, false}, // not written: the settles go step by step
		{"ledger", 0, false},
		{"sub", 1, false},
		{"rollup", 3, false},
		{"ledger", 0, true},
		{"sub", 1, true},
		{"rollup", 4, true},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s@%d/permanent=%v", c.step, c.after, c.permanent), func(t *testing.T) {
			ctx := context.Background()
			name := fmt.Sprintf("replay-%d", journalNames.Add(1))
			s := e.serviceJournal(t, PolicyPerCall, 0, "local", name)
			u1, u2 := newUser(t, s, 100), newUser(t, s, 100)
			users := []bson.ObjectID{u1, u2}
			var res []*Reservation
			for i := range 6 {
				r, err := s.Reserve(ctx, fresh(req(users[i%2], fmt.Sprintf("%s-%d", name, i))))
				if err != nil {
					t.Fatal(err)
				}
				if r.written == nil {
					t.Fatal("not answered early: the test does not exercise the journal")
				}
				if err := r.waitWritten(ctx); err != nil {
					t.Fatal(err)
				}
				res = append(res, r)
			}
			if err := s.WaitApplied(ctx); err != nil { // no write of theirs meets the fault hook
				t.Fatal(err)
			}
			// All six settles in one batch: a reservation of a third user holds the journal
			// (its flush waits in the fault hook) until the six are queued behind it.
			var seen, batches atomic.Int64
			var dead atomic.Bool // the process "died": nothing it still tries may land
			held, release := make(chan struct{}), make(chan struct{})
			fault := errors.New("disk on fire")
			s.journalFault = func(step string) error {
				if dead.Load() {
					return fault
				}
				if step == "journal" && batches.Add(1) == 1 {
					close(held)
					<-release
					return nil
				}
				if batches.Load() < 2 { // the holder's batch: never fails
					return nil
				}
				if step != c.step {
					return nil
				}
				n := seen.Add(1)
				if n <= int64(c.after) || (!c.permanent && n > int64(c.after)+1) {
					return nil
				}
				return fault
			}
			u3 := newUser(t, s, 10)
			if _, err := s.Reserve(ctx, fresh(req(u3, name+"-holder"))); err != nil {
				t.Fatal(err)
			}
			<-held
			var wg sync.WaitGroup
			errs := make([]error, len(res))
			for i, r := range res {
				wg.Go(func() {
					_, errs[i] = s.Settle(ctx, r, Outcome{Usage: turnUsage, ProducedOutput: true, Status: StatusDone})
				})
			}
			waitQueued(t, s, len(res), time.Minute) // behind the holder
			close(release)
			wg.Wait()
			// The settles' rollups are carried to a later batch: the one a report asks for.
			syncErr := s.SyncJournal(ctx)
			if seen.Load() <= int64(c.after) {
				t.Fatalf("the fault at %s was never reached", c.step)
			}
			after := s
			if c.permanent {
				// The settles are in the journal document, so they stand, answered; what broke
				// is the rest of their batch (or the rollups' batch), which the report's sync
				// finds waiting for its replay.
				for _, err := range errs {
					if err != nil {
						t.Fatalf("settle: %v", err)
					}
				}
				if !errors.Is(syncErr, errJournalBroken) {
					t.Fatalf("on a broken journal: %v, want errJournalBroken", syncErr)
				}
				if _, err := s.Reserve(ctx, fresh(req(u1, name+"-later"))); !errors.Is(err, errJournalBroken) {
					t.Fatalf("reserve on a broken journal: %v, want errJournalBroken", err)
				}
				if err := s.Grant(ctx, u1, 1, "while broken"); !errors.Is(err, errJournalBroken) {
					t.Fatalf("grant on a broken journal: %v, want errJournalBroken", err)
				}
				// The process dies here; the next start replays its journal.
				dead.Store(true)
				after = e.serviceJournal(t, PolicyPerCall, 0, "local", name)
			} else {
				for _, err := range append(errs, syncErr) {
					if err != nil {
						t.Fatalf("settle: %v (the flush should have completed its batch)", err)
					}
				}
			}
			for _, u := range users {
				cost := settledCost(t, after, u)
				if bal := checkJournaled(t, after, u, e.clk.Now(), 3, cost); bal != 97 {
					t.Fatalf("balance %d, want 97 (three turns of one credit)", bal)
				}
			}
			// The replayed batch is written once: starting again changes nothing.
			dead.Store(true)
			again := e.serviceJournal(t, PolicyPerCall, 0, "local", name)
			for _, u := range users {
				checkJournaled(t, again, u, e.clk.Now(), 3, settledCost(t, again, u))
			}
			// And the memory the new start works from agrees with the store: a turn more.
			r, err := again.Reserve(ctx, fresh(req(u1, name+"-after")))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := again.Settle(ctx, r, Outcome{Usage: turnUsage, ProducedOutput: true, Status: StatusDone}); err != nil {
				t.Fatal(err)
			}
			if bal := checkJournaled(t, again, u1, e.clk.Now(), 4, settledCost(t, again, u1)); bal != 96 {
				t.Fatalf("balance %d after one more turn, want 96", bal)
			}
		})
	}
}

// journalSeq is the journal's last batch written everywhere, once the one running is.
func journalSeq(s *Service) int64 {
	s.j.mu.Lock()
	defer s.j.mu.Unlock()
	return s.j.seq
}

// settledCost is the sum of the user's settle entries' costs, from the ledger.
func settledCost(t *testing.T, s *Service, u bson.ObjectID) int64 {
	t.Helper()
	if err := s.WaitApplied(context.Background()); err != nil {
		t.Fatal(err)
	}
	cur, err := s.ledger.Find(context.Background(), bson.D{{Key: "userId", Value: u}, {Key: "phase", Value: PhaseSettle}})
	if err != nil {
		t.Fatal(err)
	}
	var es []Entry
	if err := cur.All(context.Background(), &es); err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, e := range es {
		if e.State != StateApplied {
			t.Fatalf("settle entry %s is %s", e.RequestID, e.State)
		}
		sum += e.CostMicros
	}
	return sum
}

// The journal's update of a subscription nets the holds of a batch: a reserve settled in the
// same batch neither sets nor unsets its hold (MongoDB refuses both on one path).
func TestJournalSubUpdate(t *testing.T) {
	mark := &journalMark{name: "n", seq: 7}
	r1 := &Entry{RequestID: "a", Phase: PhaseReserve, Credits: -5, Reserved: 5}
	s1 := &Entry{RequestID: "a", Phase: PhaseSettle, Credits: 3, Reserved: 5}
	r2 := &Entry{RequestID: "b", Phase: PhaseReserve, Credits: -4, Reserved: 4}
	s0 := &Entry{RequestID: "c", Phase: PhaseSettle, Credits: 1, Reserved: 2}
	cases := []struct {
		name    string
		entries []*Entry
		want    string
	}{
		{"reserve", []*Entry{r1}, `{"$inc": {"features.aiCredits": {"$numberLong":"-5"},"holdCount": {"$numberLong":"1"}},"$set": {"journal.n": {"$numberLong":"7"},"holds.r_a": {"p": "reserve","c": {"$numberLong":"5"},"at": {"$date":{"$numberLong":"-62135596800000"}},"rid": "a"}}}`},
		{"reserve and settle", []*Entry{r1, s1}, `{"$inc": {"features.aiCredits": {"$numberLong":"-2"},"holdCount": {"$numberLong":"0"}},"$set": {"journal.n": {"$numberLong":"7"}}}`},
		{"settle of an earlier batch, and a new reserve", []*Entry{s0, r2}, `{"$inc": {"features.aiCredits": {"$numberLong":"-3"},"holdCount": {"$numberLong":"0"}},"$set": {"journal.n": {"$numberLong":"7"},"holds.r_b": {"p": "reserve","c": {"$numberLong":"4"},"at": {"$date":{"$numberLong":"-62135596800000"}},"rid": "b"}},"$unset": {"holds.r_c": ""}}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw, err := bson.Marshal(journalSubUpdate(c.entries, mark))
			if err != nil {
				t.Fatal(err)
			}
			if got := bson.Raw(raw).String(); got != c.want {
				t.Fatalf("update\n%s\nwant\n%s", got, c.want)
			}
		})
	}
}

// A short turn's reservation waits for its settle (pairWait) and both are written as one step
// of one batch: one journal batch for the whole turn, the ledger and balance as usual. A
// synchronous step of the user's (here a grant) does not wait out pairWait: it hurries the
// reservation's write (with an hour's pairWait, the test would not end otherwise).
func TestJournalPairsAShortTurn(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.service(t, PolicyPerCall, 0)
	// A reservation waits for its settle for an hour: the turn is paired however slow the
	// machine, and the grant below must hurry the next one.
	s.pairWait = time.Hour
	u := newUser(t, s, 10)
	res, err := s.Reserve(ctx, fresh(req(u, "paired-"+u.Hex())))
	if err != nil {
		t.Fatal(err)
	}
	if res.written == nil {
		t.Fatal("not answered early")
	}
	before := journalSeq(s)
	st, err := s.Settle(ctx, res, Outcome{Usage: turnUsage, ProducedOutput: true, Status: StatusDone})
	if err != nil {
		t.Fatal(err)
	}
	if got := journalSeq(s) - before; got != 1 || st.CreditsLeft != 9 {
		t.Fatalf("%d batches, balance after %d: want the turn in one batch, 9 left", got, st.CreditsLeft)
	}
	wantBalance(t, s, u, 9)

	res, err = s.Reserve(ctx, fresh(req(u, "hurried-"+u.Hex())))
	if err != nil || res.written == nil {
		t.Fatalf("second turn: %v (early: %v)", err, res != nil && res.written != nil)
	}
	if err := s.Grant(ctx, u, 5, "test"); err != nil {
		t.Fatal(err)
	}
	if got := res.written.state.Load(); got != writeAlone {
		t.Fatalf("reservation write state %d after the grant, want written alone", got)
	}
	if _, err := s.Settle(ctx, res, Outcome{Usage: turnUsage, ProducedOutput: true, Status: StatusDone}); err != nil {
		t.Fatal(err)
	}
	wantBalance(t, s, u, 13)
}

// A journaled settle is answered once its batch's journal document is written; the ledger
// and the subscription follow behind the answer. A balance read meanwhile waits for them, so a
// client reading its balance after chat.done sees the turn (a grant beside it lands too; that
// a step-by-step step waits for them is TestJournalSyncStepWaitsForTheApply's).
func TestJournalAnswersBeforeApplying(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.service(t, PolicyPerCall, 0)
	s.pairWait = time.Hour // reserve and settle in one batch
	u := newUser(t, s, 10)
	res, err := s.Reserve(ctx, fresh(req(u, "behind-"+u.Hex())))
	if err != nil || res.written == nil {
		t.Fatalf("reserve: %v (early: %v)", err, res != nil && res.written != nil)
	}
	applying, release := holdStep(s, "ledger")
	st, err := s.Settle(ctx, res, Outcome{Usage: turnUsage, ProducedOutput: true, Status: StatusDone})
	if err != nil || st.CreditsLeft != 9 {
		t.Fatalf("settle: %v, %+v", err, st)
	}
	<-applying // the settle was answered while its batch's ledger write is held
	// The store still says 10; the read waits instead of saying so (until its deadline here).
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if b, err := s.Balance(short, u); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("balance read while the answered batch is not applied: %d, %v; want it to wait", b, err)
	}
	type read struct {
		bal int64
		err error
	}
	balance, granted := make(chan read, 1), make(chan error, 1)
	go func() { b, err := s.Balance(ctx, u); balance <- read{b, err} }()
	go func() { granted <- s.Grant(ctx, u, 5, "test") }()
	release()
	if r := <-balance; r.err != nil || (r.bal != 9 && r.bal != 14) {
		t.Fatalf("balance read after the apply: %d, %v; want 9 (or 14 after the grant)", r.bal, r.err)
	}
	if err := <-granted; err != nil {
		t.Fatal(err)
	}
	wantBalance(t, s, u, 14)
}

// A settle whose reservation is being written alone (the turn outlasted pairWait) queues
// behind it in the journal instead of waiting for the reservation's batch to be answered:
// here it is queued while that batch is held, and both are written.
func TestJournalSettleQueuesBehindItsReservation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.service(t, PolicyPerCall, 0)
	s.pairWait = 0 // the reservation is written alone at once
	u := newUser(t, s, 10)
	held, release := holdStep(s, "journal")
	res, err := s.Reserve(ctx, fresh(req(u, "behind-"+u.Hex())))
	if err != nil || res.written == nil {
		t.Fatalf("reserve: %v (early: %v)", err, res != nil && res.written != nil)
	}
	<-held // the reservation's batch waits in its journal write
	settled := make(chan error, 1)
	go func() {
		st, err := s.Settle(ctx, res, Outcome{Usage: turnUsage, ProducedOutput: true, Status: StatusDone})
		if err == nil && st.CreditsLeft != 9 {
			err = fmt.Errorf("credits left %d, want 9", st.CreditsLeft)
		}
		settled <- err
	}()
	waitQueued(t, s, 1, 10*time.Second) // behind its reservation's batch
	release()
	if err := <-settled; err != nil {
		t.Fatal(err)
	}
	wantBalance(t, s, u, 9)
}

// A start replays the last batch with the settles it carries: those of the batches kept since
// the last one that wrote the rollups (whose own settles, and all before, are in them).
func TestJournalCarriedSince(t *testing.T) {
	settle := func(id string) *Entry { return &Entry{RequestID: id, Phase: PhaseSettle, Rollup: "done"} }
	batch := func(seq int64, rollups bool, es ...*Entry) *journalDoc {
		d := &journalDoc{Seq: seq, Rollups: rollups, Entries: es}
		if err := d.pack(); err != nil {
			t.Fatal(err)
		}
		d.Entries = nil // as read from the store
		return d
	}
	reserve := &Entry{RequestID: "r", Phase: PhaseReserve}
	stepPath := &Entry{RequestID: "s", Phase: PhaseSettle, Rollup: "claimed"} // its rollups are not the journal's
	legacy := batch(13, false, settle("l"))
	legacy.Carried = []bson.ObjectID{bson.NewObjectID()} // the first format: what it carried is listed
	cases := []struct {
		name   string
		docs   []*journalDoc
		want   []string
		listed *journalDoc
	}{
		{"no rollup write kept", []*journalDoc{batch(1, false, settle("a")), batch(2, false, settle("b"), reserve), batch(3, false, settle("c"))}, []string{"a", "b"}, nil},
		{"since the last rollup write", []*journalDoc{batch(4, false, settle("a")), batch(5, true, settle("b")), batch(6, false, settle("c"), stepPath), batch(7, false, settle("d"))}, []string{"c"}, nil},
		{"the last writes them", []*journalDoc{batch(8, true, settle("a")), batch(9, false, settle("b")), batch(10, true)}, []string{"b"}, nil},
		{"alone", []*journalDoc{batch(11, false, settle("a"))}, nil, nil},
		{"after a batch of the first format", []*journalDoc{batch(12, true, settle("a")), legacy, batch(14, false, settle("m")), batch(15, false)}, []string{"l", "m"}, legacy},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			last := c.docs[len(c.docs)-1]
			if err := carriedSince(c.docs, last); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range last.carried {
				got = append(got, e.RequestID)
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) || last.listed != c.listed {
				t.Fatalf("carried %v (listed %v), want %v (listed %v)", got, last.listed != nil, c.want, c.listed != nil)
			}
		})
	}
}

// A step of the step-by-step path waits for the journaled steps of its user to be written
// everywhere, not only answered: here a synchronous reservation meets a balance whose last
// credit an early reservation took, answered but not yet in the stored subscription, and is
// refused instead of spending the credit again.
func TestJournalSyncStepWaitsForTheApply(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.service(t, PolicyPerCall, 0)
	s.pairWait = 0 // the early reservation is written alone at once
	u := newUser(t, s, 1)
	applying, release := holdStep(s, "ledger")
	if _, err := s.Reserve(ctx, fresh(req(u, "early-"+u.Hex()))); err != nil {
		t.Fatal(err)
	}
	<-applying // answered; the stored subscription still says 1
	done := make(chan error, 1)
	go func() { _, err := s.Reserve(ctx, req(u, "sync-"+u.Hex())); done <- err }()
	eu := s.earlyUser(u)
	for parked := false; !parked; runtime.Gosched() {
		select {
		case err := <-done:
			t.Fatalf("the synchronous reservation did not wait for the journal's write: %v", err)
		default:
		}
		eu.mu.Lock()
		parked = eu.blocked > 0 && eu.inflight > 0 // waiting in holdEarly for the write
		eu.mu.Unlock()
	}
	release()
	if err := <-done; !errors.Is(err, ErrInsufficientCredits) {
		t.Fatalf("synchronous reservation: %v, want ErrInsufficientCredits", err)
	}
	wantBalance(t, s, u, 0)
}

// holdStep makes the first write of the journal at step wait until release is called; held is
// closed when it is reached.
func holdStep(s *Service, step string) (held <-chan struct{}, release func()) {
	reached, free := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.journalFault = func(at string) error {
		if at == step {
			once.Do(func() { close(reached); <-free })
		}
		return nil
	}
	return reached, func() { close(free) }
}

// waitQueued waits until n steps wait in the journal's queue; within is how long before the
// test says they took another path.
func waitQueued(t *testing.T, s *Service, n int, within time.Duration) {
	t.Helper()
	for queued, start := 0, time.Now(); queued < n; runtime.Gosched() {
		s.j.q.mu.Lock()
		queued = len(s.j.q.queue)
		s.j.q.mu.Unlock()
		if time.Since(start) > within {
			t.Fatalf("%d of %d steps queued in the journal: some took another path", queued, n)
		}
	}
}

// wantBalance checks the user's ledger against the balance, and the balance against want.
func wantBalance(t *testing.T, s *Service, u bson.ObjectID, want int64) {
	t.Helper()
	if bal := checkLedger(t, s, u); bal != want {
		t.Fatalf("balance %d, want %d", bal, want)
	}
}
