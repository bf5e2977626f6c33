package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// TestSharedLocks: a lock another process holds makes With wait (here until ctx ends, f never
// runs); a lock whose holder died (lease expired) is broken and f runs; the lock is released
// afterwards; a nil *SharedLocks runs f unlocked.
func TestSharedLocks(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	locks := NewSharedLocks(s, false, nil)
	coll := s.DB(AuthDB).Collection(LockColl)
	hold := func(name string, expires time.Time) {
		t.Helper()
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: name}, {Key: "owner", Value: bson.NewObjectID()}, {Key: "expiresAt", Value: expires}}); err != nil {
			t.Fatal(err)
		}
	}
	ran := false
	f := func() error { ran = true; return nil }

	hold("held", time.Now().Add(time.Hour))
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := locks.With(wctx, "held", f); !errors.Is(err, context.DeadlineExceeded) || ran {
		t.Fatalf("a live lock of another holder: err %v, ran %v; want to wait until ctx ends", err, ran)
	}

	hold("abandoned", time.Now().Add(-time.Minute))
	if err := locks.With(ctx, "abandoned", f); err != nil || !ran {
		t.Fatalf("an expired lock: err %v, ran %v; want it broken and f run", err, ran)
	}
	if n, err := coll.CountDocuments(ctx, bson.D{{Key: "_id", Value: "abandoned"}}); err != nil || n != 0 {
		t.Fatalf("lock left behind after With: %d, %v", n, err)
	}

	var none *SharedLocks
	ran = false
	if err := none.With(ctx, "held", f); err != nil || !ran {
		t.Fatalf("nil locks: err %v, ran %v; want f run unlocked", err, ran)
	}
}
