package store

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// LockColl is the collection of maula-auth-db holding the shared locks of SharedLocks.
const LockColl = "billing_locks"

// lockLease is how long a holder that died keeps a shared lock.
const lockLease = 30 * time.Second

// SharedLocks are named locks for the writers of documents that FerretDB cannot update
// atomically (an update is a read, then a write of the whole document), shared by every
// process using the same database. A lock is a document {_id: name, owner, expiresAt} in
// maula-auth-db.billing_locks: the insert wins, a duplicate waits with jittered backoff, a
// lock whose lease expired (its holder died) is removed, conditional on its owner, and
// retried. In each process callers queue on LocalLock(name) first, so that at most one
// goroutine per instance polls (failed inserts are writes too); when this process is the
// embedded server's only client (localOnly), that mutex is the whole lock.
type SharedLocks struct {
	coll      *mongo.Collection
	localOnly bool
	log       *slog.Logger
}

// NewSharedLocks returns the shared locks of s; log receives the breaking of expired locks.
func NewSharedLocks(s *Store, localOnly bool, log *slog.Logger) *SharedLocks {
	if log == nil {
		log = slog.Default()
	}
	return &SharedLocks{coll: s.DB(AuthDB).Collection(LockColl), localOnly: localOnly, log: log}
}

// With runs f holding the lock name. A nil *SharedLocks runs f unlocked (locking off).
func (l *SharedLocks) With(ctx context.Context, name string, f func() error) error {
	if l == nil {
		return f()
	}
	mu := LocalLock("lock:" + name)
	mu.Lock()
	defer mu.Unlock()
	if l.localOnly {
		return f()
	}
	unlock, err := l.acquire(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	return f()
}

func (l *SharedLocks) acquire(ctx context.Context, name string) (func(), error) {
	owner := bson.NewObjectID()
	wait := 200 * time.Microsecond
	for attempt := 0; ; attempt++ {
		now := time.Now()
		_, err := l.coll.InsertOne(ctx, bson.D{{Key: "_id", Value: name}, {Key: "owner", Value: owner}, {Key: "expiresAt", Value: now.Add(lockLease)}})
		if err == nil {
			return func() { l.release(ctx, name, owner) }, nil
		}
		if !IsDuplicateKey(err) && !IsBusy(err) {
			return nil, fmt.Errorf("lock %s: %w", name, err)
		}
		if attempt%50 == 49 {
			var cur struct {
				Owner     bson.ObjectID `bson:"owner"`
				ExpiresAt time.Time     `bson:"expiresAt"`
			}
			if err := l.coll.FindOne(ctx, bson.D{{Key: "_id", Value: name}}).Decode(&cur); err == nil && now.After(cur.ExpiresAt) {
				l.log.Warn("breaking an expired lock", "lock", name)
				_, _ = l.coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: name}, {Key: "owner", Value: cur.Owner}})
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("lock %s: %w", name, ctx.Err())
		case <-time.After(wait/2 + rand.N(wait)):
		}
		wait = min(wait*2, 10*time.Millisecond)
	}
}

// RollupsLock is the name of the lock every writer of the rollup and analytics documents
// takes (billing's settles, the analyses' analytics): one name, or they would not exclude
// each other.
const RollupsLock = "rollups"

// release deletes the lock if it is still ours, even when the caller's ctx is done, or the
// lock would stay until its lease ends; a busy embedded server is retried a few times.
func (l *SharedLocks) release(ctx context.Context, name string, owner bson.ObjectID) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var err error
	for range 5 {
		if _, err = l.coll.DeleteOne(dctx, bson.D{{Key: "_id", Value: name}, {Key: "owner", Value: owner}}); err == nil || !IsBusy(err) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err != nil {
		// The lock stays until its lease ends: every writer of it waits that long.
		l.log.Warn("store: shared lock not released", "lock", name, "err", err)
	}
}
