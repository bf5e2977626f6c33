package billing

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Early answers: a reservation answered before it is written.
//
// Why: a reservation is three writes to the embedded server (pending entry, subscription,
// applied entry), ~5 ms on an idle machine and hundreds of milliseconds when many turns are
// recorded at once, and every one of them used to stand between a user's message and its first
// token. When this process is the store's only writer (locking "local"), its copy of each
// subscription (the shadow, see currentSub) is the truth, so it can decide a reservation in
// memory and write it behind the answer, while the call to the provider is already under way.
// A user with nothing in memory yet (the first reservation since the start) costs one read of
// the subscription instead (loadShadow).
//
// What keeps it exact:
//   - Only a fresh request (ReserveRequest.Fresh: an id made for this call alone) is answered
//     early, so the write cannot meet an earlier entry of the same id.
//   - The decision counts the credits of the user's early reservations still being written
//     (earlyUser.reserved) as spent, so the writes cannot overdraw the balance in any order;
//     a reservation the balance does not cover with that margin takes the synchronous path.
//   - Every other step that lowers or sets a user's balance (a reservation on the synchronous
//     path, a grant, a reset, a plan change) first stops early answers for that user and waits
//     for the ones in flight (holdEarly): the guard of an early write never fails because of
//     a decision it was not counted in.
//   - Settle waits for the reservation's write before releasing it (with the journal, it is
//     queued behind that write: settleBehind).
//
// What a failed write costs: nothing. Settle finds the write failed and reserves again,
// synchronously, sized on what the turn used, before settling as usual; only when the balance
// cannot pay for that (or the store keeps failing) is the turn unbilled, logged as an error.
//
// What a crash costs: a turn whose reservation was not written yet dies with the process
// without a ledger entry or a hold, as if it had never been reserved; its partial reply is not
// charged and no credit is lost or created.

// earlyWrite is the write of one early reservation; err is set before done is closed.
type earlyWrite struct {
	done     chan struct{}
	err      error
	settling atomic.Bool // the first Settle of the reservation claims it (journal.go)
	// With the journal, the write waits a moment for the turn's settle (pairWait): state
	// says who writes it (writeWaiting, then writeAlone by its goroutine or writePaired by
	// the settle, which closes wake); entry is the reservation's ledger entry.
	state atomic.Int32
	wake  chan struct{}
	// queued is closed once a write alone is queued in the journal: a settle queued after
	// it is written in the same batch or a later one, so it need not wait for done.
	queued chan struct{}
	entry  *Entry
	req    ReserveRequest
	user   *earlyUser
}

// States of an early write.
const (
	writeWaiting int32 = iota
	writeAlone
	writePaired
)

// pairWait is how long an early reservation waits for its turn's settle before it is written
// alone: a short turn's reservation and settle then go into one batch as one step, one write
// of the subscription instead of two. A longer turn's reservation is written after it, while
// the reply streams. (A crash meanwhile loses the answer, as before any write: uncharged.)
const pairWait = 100 * time.Millisecond

// finish records the outcome of an early write whose credits are in the subscription (or
// were never written): answer and release.
func (w *earlyWrite) finish(err error) {
	w.release()
	w.answer(err)
}

// answer says the write is decided (err nil: in the journal or the store): its settle may go on.
func (w *earlyWrite) answer(err error) {
	w.err = err
	close(w.done)
}

// release gives back the write's count once its credits are in the shadow and the store (or
// were never written): the user's other steps stop counting it as in flight.
func (w *earlyWrite) release() {
	u := w.user
	u.mu.Lock()
	u.reserved -= w.entry.Reserved
	u.mu.Unlock()
	u.done()
}

// earlyUser counts one user's early reservations in flight. Its fields are owned by mu.
type earlyUser struct {
	mu       sync.Mutex
	reserved int64         // credits answered early and not yet written into the subscription
	inflight int           // early writes running
	blocked  int           // synchronous steps running or waiting: no early answer meanwhile
	idle     *sync.Cond    // broadcast when inflight drops to 0
	hurry    chan struct{} // closed by holdEarly: early writes waiting for a settle go now
}

func (s *Service) earlyUser(userID bson.ObjectID) *earlyUser {
	if v, ok := s.early.Load(userID); ok {
		return v.(*earlyUser)
	}
	u := &earlyUser{}
	u.idle = sync.NewCond(&u.mu)
	v, _ := s.early.LoadOrStore(userID, u)
	return v.(*earlyUser)
}

// holdEarly stops early answers for the user and waits until none is being written; the
// returned func lets them resume. A no-op unless early answers are possible (locking "local").
func (s *Service) holdEarly(userID bson.ObjectID) (release func()) {
	if !s.localOnly {
		return func() {}
	}
	u := s.earlyUser(userID)
	u.mu.Lock()
	u.blocked++
	if u.hurry != nil {
		close(u.hurry)
		u.hurry = nil
	}
	for u.inflight > 0 {
		u.idle.Wait()
	}
	u.mu.Unlock()
	return func() {
		u.mu.Lock()
		u.blocked--
		u.mu.Unlock()
	}
}

// holdSync is holdEarly for a step of the step-by-step path, which then asks the journal
// whether balances may change (journalReady): a batch of the user's that broke while the step
// waited is not in the subscription yet, and a step deciding on it could overdraw.
func (s *Service) holdSync(ctx context.Context, userID bson.ObjectID) (release func(), err error) {
	release = s.holdEarly(userID)
	if err := s.journalReady(ctx); err != nil {
		release()
		return nil, err
	}
	return release, nil
}

// done ends one step counted in inflight.
func (u *earlyUser) done() {
	u.mu.Lock()
	u.inflight--
	if u.inflight == 0 {
		u.idle.Broadcast()
	}
	u.mu.Unlock()
}

// reserveEarly answers r at once when the user's balance, less the early reservations still
// being written, covers credits; ok is false when r must take the synchronous path.
func (s *Service) reserveEarly(ctx context.Context, r ReserveRequest, credits int64, now time.Time) (res *Reservation, ok bool) {
	if !s.localOnly || !r.Fresh {
		return nil, false
	}
	u := s.earlyUser(r.UserID)
	u.mu.Lock()
	// The shadow is read under u.mu: a finished early write stores its shadow before it
	// takes u.mu to give back its count, so an early reservation is counted at least once.
	v, loaded := s.shadow.Load(r.UserID)
	if !loaded || u.blocked > 0 {
		u.mu.Unlock()
		return nil, false
	}
	sub := v.(*subDoc)
	end := sub.Billing.NextBillingDate
	left := sub.Features.AICredits - u.reserved - credits
	if (!end.IsZero() && !now.Before(end)) || left < 0 {
		u.mu.Unlock() // a period to roll over, or a balance to look at closely
		return nil, false
	}
	s.earlyMu.RLock() // WaitEarly may have begun: no new write after it (sync.WaitGroup's rule)
	if s.earlyClosed {
		s.earlyMu.RUnlock()
		u.mu.Unlock()
		return nil, false
	}
	u.reserved += credits
	u.inflight++
	if u.hurry == nil {
		u.hurry = make(chan struct{})
	}
	hurry := u.hurry // taken with the count: a holdEarly from now on closes this one
	u.mu.Unlock()

	w := &earlyWrite{done: make(chan struct{}), wake: make(chan struct{}), queued: make(chan struct{}), req: r, user: u,
		entry: &Entry{ID: bson.NewObjectID(), RequestID: r.RequestID, Phase: PhaseReserve, UserID: r.UserID,
			Credits: -credits, Reserved: credits, Tool: r.Tool, Provider: r.Provider, Model: r.Model,
			MaxTokens: r.MaxTokens, At: now, CreatedAt: now}}
	defer s.earlyMu.RUnlock()
	s.earlyJobs.Go(func() {
		if s.j != nil {
			t := time.NewTimer(s.pairWait)
			select {
			case <-t.C:
			case <-w.wake: // its settle took it
			case <-hurry: // a synchronous step of the user's waits for it
			case <-s.earlyHurry: // shutdown
			}
			t.Stop()
		}
		if !w.state.CompareAndSwap(writeWaiting, writeAlone) {
			return // written with its settle (settlePaired)
		}
		// The turn may be cancelled at once; the write must still happen or the settle fails.
		err := s.testEarlyFault(r)
		switch {
		case err != nil:
		case s.j != nil: // with the journal: written with other turns' steps (journal.go)
			wait := s.queueJournal(w.release, w.entry)
			close(w.queued) // its settle may queue behind it now
			w.answer(wait())
			return
		default:
			var got *Reservation
			got, err = s.reserveNow(context.WithoutCancel(ctx), r, credits, now, true)
			if err == nil && (got.Credits != credits || got.CapLowered) {
				// Cannot happen while holdEarly guards every other balance change.
				err = fmt.Errorf("billing: early reservation %q written as %d credits, answered %d", r.RequestID, got.Credits, credits)
			}
		}
		w.finish(err)
	})
	return &Reservation{RequestID: r.RequestID, UserID: r.UserID, Tool: r.Tool, Provider: r.Provider, Model: r.Model,
		Credits: credits, MaxTokens: r.MaxTokens, CreditsLeft: left, written: w}, true
}

// loadShadow reads, for a request that may be answered early, the user's subscription into
// the shadow when it is not there yet (the user's first reservation since the process
// started); it reports whether the shadow holds the user now, so that the caller asks for an
// early answer again (the user's other turns, starting together, may have loaded it first).
// Under the user's lock, like every write of the shadow: with the store's only writer, what
// is read there is the truth.
func (s *Service) loadShadow(ctx context.Context, r ReserveRequest) bool {
	if !s.localOnly || !r.Fresh {
		return false
	}
	if _, ok := s.shadow.Load(r.UserID); ok {
		return true
	}
	present := false
	err := s.onSub(ctx, r.UserID, func() error {
		if _, ok := s.shadow.Load(r.UserID); ok {
			present = true
			return nil
		}
		d, err := s.readSub(ctx, r.UserID)
		if err != nil || d == nil {
			return err
		}
		s.shadow.Store(r.UserID, d)
		present = true
		return nil
	})
	return err == nil && present
}

// waitWritten waits for an early reservation's write and returns its error.
func (res *Reservation) waitWritten(ctx context.Context) error {
	if res.written == nil {
		return nil
	}
	select {
	case <-res.written.done:
	case <-ctx.Done():
		return fmt.Errorf("billing: settle: waiting for the reservation's write: %w", ctx.Err())
	}
	if res.written.err != nil {
		return fmt.Errorf("billing: settle: the reservation %q was not written: %w", res.RequestID, res.written.err)
	}
	return nil
}

// WaitEarly waits until every early reservation answered so far is written, and writes
// the rollups the journal carries; later reservations take the synchronous path (shutdown).
func (s *Service) WaitEarly() {
	s.earlyMu.Lock()
	if !s.earlyClosed {
		close(s.earlyHurry)
	}
	s.earlyClosed = true
	s.earlyMu.Unlock()
	s.earlyJobs.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.closeJournal(ctx)
}

// testEarlyFault, when set by a test, fails the write of an early reservation.
func (s *Service) testEarlyFault(r ReserveRequest) error {
	if s.earlyFault == nil {
		return nil
	}
	return s.earlyFault(r)
}
