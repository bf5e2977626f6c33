package billing

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/maula-ai/maula-chat/store"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// Why locks: FerretDB v1 (SQLite backend) executes an update as a query followed by a write of
// the whole document by _id, in separate steps. Two concurrent guarded $inc on one document
// both match and the later write overwrites the earlier: 100 concurrent "successful" decrements
// of a balance of 50 ended at 39 (measured against v1.24.2). The one operation it does apply
// atomically is an insert against a unique key. So on FerretDB every write billing makes to a
// shared document (a subscription, a rollup) runs under a lease lock that is exactly that: an
// insert of {_id: name} into maula-auth-db.billing_locks, deleted on release. It works across
// processes sharing the database. On MongoDB the guarded update is atomic and the lock is off.

const (
	lockColl  = "billing_locks"
	lockLease = 30 * time.Second // a holder dead for this long loses the lock
)

// onSub runs one write of the user's subscription: under the user's lock when locking is on,
// retried while the embedded server is busy (every such write is guarded, so a retry of a
// write that did apply matches nothing).
func (s *Service) onSub(ctx context.Context, userID bson.ObjectID, f func() error) error {
	return s.withLock(ctx, "sub:"+userID.Hex(), func() error { return retryBusy(ctx, f) })
}

// withLock runs f holding the named lock when locking is on.
func (s *Service) withLock(ctx context.Context, name string, f func() error) error {
	if !s.locking {
		return f()
	}
	// Queue this process's callers on a local mutex first, so that at most one goroutine per
	// instance polls the shared lock: failed inserts are writes too, and hundreds of pollers
	// would starve the embedded server. The mutex is process-wide and shared with the other
	// writers of the same documents (analytics), see store.LocalLock.
	mu := store.LocalLock("lock:" + name)
	mu.Lock()
	defer mu.Unlock()
	if s.localOnly {
		return f() // the only client of its embedded server: the mutex is the whole lock
	}
	unlock, err := s.lock(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	return f()
}

// lock acquires name: insert wins, a duplicate waits with jittered backoff; a lock whose
// lease expired (its holder died) is removed, conditional on its owner, and retried.
func (s *Service) lock(ctx context.Context, name string) (func(), error) {
	owner := bson.NewObjectID()
	wait := 200 * time.Microsecond
	for attempt := 0; ; attempt++ {
		now := time.Now()
		_, err := s.locks.InsertOne(ctx, bson.D{{Key: "_id", Value: name}, {Key: "owner", Value: owner}, {Key: "expiresAt", Value: now.Add(lockLease)}})
		if err == nil {
			return func() {
				// Release even when the caller's ctx is done, or the lock stays until its lease ends.
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				for range 5 {
					if _, err := s.locks.DeleteOne(dctx, bson.D{{Key: "_id", Value: name}, {Key: "owner", Value: owner}}); err == nil || !isBusy(err) {
						return
					}
					time.Sleep(time.Millisecond)
				}
			}, nil
		}
		if !isDup(err) && !isBusy(err) {
			return nil, fmt.Errorf("billing: lock %s: %w", name, err)
		}
		if attempt%50 == 49 {
			var cur struct {
				Owner     bson.ObjectID `bson:"owner"`
				ExpiresAt time.Time     `bson:"expiresAt"`
			}
			if err := s.locks.FindOne(ctx, bson.D{{Key: "_id", Value: name}}).Decode(&cur); err == nil && now.After(cur.ExpiresAt) {
				s.log.Warn("billing: breaking an expired lock", "lock", name)
				_, _ = s.locks.DeleteOne(ctx, bson.D{{Key: "_id", Value: name}, {Key: "owner", Value: cur.Owner}})
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("billing: lock %s: %w", name, ctx.Err())
		case <-time.After(wait/2 + rand.N(wait)):
		}
		wait = min(wait*2, 10*time.Millisecond)
	}
}

// isBusy reports SQLite's "database is locked" from the embedded server (store.IsBusy).
func isBusy(err error) bool { return store.IsBusy(err) }

// retryBusy runs f again while it fails with isBusy. Only for steps that are idempotent or
// that did not commit when busy.
func retryBusy(ctx context.Context, f func() error) error {
	wait := time.Millisecond
	for attempt := 0; ; attempt++ {
		err := f()
		if !isBusy(err) || attempt == 20 {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(wait/2 + rand.N(wait)):
		}
		wait = min(wait*2, 50*time.Millisecond)
	}
}
