package billing

import (
	"context"
	"errors"
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
// processes sharing the database (store.SharedLocks). On MongoDB the guarded update is atomic
// and the lock is off.

// onSub runs one write of the user's subscription: under the user's lock when locking is on,
// retried while the embedded server is busy (every such write is guarded, so a retry of a
// write that did apply matches nothing).
func (s *Service) onSub(ctx context.Context, userID bson.ObjectID, f func() error) error {
	return s.withLock(ctx, "sub:"+userID.Hex(), func() error { return retryBusy(ctx, f) })
}

// withLock runs f holding the named lock when locking is on (store.SharedLocks; the
// analytics writers of the same documents take the same locks).
func (s *Service) withLock(ctx context.Context, name string, f func() error) error {
	return s.shared.With(ctx, name, f)
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
