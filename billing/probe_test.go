package billing

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// TestProbeConditionalInc checks whether the server applies a guarded $inc atomically under
// concurrency (FerretDB v1 reads, then writes by _id).
func TestProbeConditionalInc(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.mongo.DB("probe").Collection("c")
	id := bson.NewObjectID()
	if _, err := c.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "n", Value: int64(50)}}); err != nil {
		t.Fatal(err)
	}
	var ok, errs atomic.Int64
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			r, err := c.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "n", Value: bson.D{{Key: "$gte", Value: 1}}}},
				bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: int64(-1)}}}})
			if err != nil {
				errs.Add(1)
				return
			}
			ok.Add(r.ModifiedCount)
		})
	}
	wg.Wait()
	var d struct{ N int64 }
	_ = c.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&d)
	t.Logf("modified %d, errors %d, final n %d (atomic would be: modified 50, n 0)", ok.Load(), errs.Load(), d.N)
}
