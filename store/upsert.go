package store

import (
	"context"
	"crypto/sha256"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// DerivedID is a stable ObjectID for a document identified by other fields (e.g. a user's
// analytics document of a day): the same parts give the same id, so the document can be
// addressed by _id, the one filter the embedded FerretDB answers without scanning.
func DerivedID(parts ...string) bson.ObjectID {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	var id bson.ObjectID
	copy(id[:], h.Sum(nil))
	return id
}

var upsertAfter = options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(options.After)

// UpsertByID applies update (e.g. a $inc) to the document whose _id is id, creating it with
// the key fields when it is missing, and returns it as updated. A document written before its
// id was derived (an older data dir) holds the same key fields under another _id; the unique
// index on those fields rejects the insert, and that document is updated instead.
func UpsertByID(ctx context.Context, c *mongo.Collection, id any, key, update bson.D) *mongo.SingleResult {
	withKey := append(append(bson.D{}, update...), bson.E{Key: "$setOnInsert", Value: key})
	r := c.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: id}}, withKey, upsertAfter)
	if IsDuplicateKey(r.Err()) {
		return c.FindOneAndUpdate(ctx, key, update, upsertAfter)
	}
	return r
}

// AnalyticsID is the _id of a user's analytics document of a day in a tool's database (one
// per user per day, the seed's Analytics schema); every writer of those documents uses it.
func AnalyticsID(user bson.ObjectID, day time.Time) bson.ObjectID {
	return DerivedID("analytics", user.Hex(), day.UTC().Format(time.DateOnly))
}
