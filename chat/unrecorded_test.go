package chat

import (
	"context"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/maula-ai/maula-chat/model"
)

// TestUnrecordedStoresNothing: with recording off (MAULA_RECORDING=off, for benchmarks) a turn
// streams and ends in chat.done as usual, and no message of it is stored.
func TestUnrecordedStoresNothing(t *testing.T) {
	for _, tc := range []struct {
		name       string
		unrecorded bool
		want       int64
	}{{"recording on", false, 2}, {"recording off", true, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, rigConfig{mock: paced, tune: func(o *Options) { o.Unrecorded = tc.unrecorded }})
			u, tok := newUser()
			c := r.dial(t, tok)
			c.send(send("one", "claude", "hello"))
			if _, last := c.terminal("one"); last["type"] != "chat.done" {
				t.Fatalf("turn ended with %v", last)
			}
			n, err := r.mongo.DB("ipintel-db").Collection(model.CollChatHistory).CountDocuments(context.Background(), bson.D{{Key: "userId", Value: u}})
			if err != nil || n != tc.want {
				t.Fatalf("stored %d messages (%v), want %d", n, err, tc.want)
			}
		})
	}
}
