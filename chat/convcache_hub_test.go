package chat

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/maula-ai/maula-chat/model"
)

// TestPromptCachesFollowTheWrites: with the hub as the store's only writer, the second turn of
// a conversation is built from the cache, and an analysis the analyses service reports
// (AnalysisCreated) is in the very next prompt's context; one written behind the hub's back is
// not, which shows the context came from the cache.
func TestPromptCachesFollowTheWrites(t *testing.T) {
	r := newRig(t, rigConfig{mock: paced})
	if r.hub.rec.conv == nil || r.hub.rec.ctx == nil {
		t.Skip("the caches are on only when this process is the store's only writer")
	}
	ctx := context.Background()
	u, tok := newUser()
	c := r.dial(t, tok)
	analyses := r.mongo.DB("ipintel-db").Collection(model.CollAnalyses)
	addAnalysis := func(ip string) {
		t.Helper()
		if _, err := analyses.InsertOne(ctx, bson.D{{Key: "userId", Value: u}, {Key: "ip", Value: ip}, {Key: "createdAt", Value: time.Now()}}); err != nil {
			t.Fatal(err)
		}
	}
	// storedContext returns the ips in the stored context of the user message of request id.
	storedContext := func(id string) string {
		t.Helper()
		var m model.ChatMessage
		err := r.mongo.DB("ipintel-db").Collection(model.CollChatHistory).FindOne(ctx,
			bson.D{{Key: "userId", Value: u}, {Key: "role", Value: "user"}, {Key: "message", Value: "question " + id}}).Decode(&m)
		if err != nil {
			t.Fatalf("user message of %s: %v", id, err)
		}
		var ips []any
		for _, a := range m.Context.PreviousResults {
			for _, e := range a.(bson.D) {
				if e.Key == "ip" {
					ips = append(ips, e.Value)
				}
			}
		}
		return fmt.Sprint(ips)
	}
	turn := func(id, session string) string {
		t.Helper()
		f := send(id, "claude", "question "+id)
		f.SessionID = session
		c.send(f)
		fs, last := c.terminal(id)
		if last["type"] != "chat.done" {
			t.Fatalf("turn %s ended with %v", id, last)
		}
		return fs[0]["sessionId"].(string)
	}

	session := turn("one", "")
	if got := storedContext("one"); got != "[]" {
		t.Fatalf("first turn's context = %s, want none", got)
	}
	addAnalysis("10.0.0.1")
	if err := r.hub.AnalysisCreated(ctx, "ipintel", u, nil, 0); err != nil {
		t.Fatal(err)
	}
	turn("two", session)
	if got := storedContext("two"); got != "[10.0.0.1]" {
		t.Fatalf("after a reported analysis the context = %s, want [10.0.0.1]", got)
	}
	addAnalysis("10.0.0.2") // not reported: the cached context stands
	turn("three", session)
	if got := storedContext("three"); got != "[10.0.0.1]" {
		t.Fatalf("context = %s, want the cached [10.0.0.1]", got)
	}
	// The conversation's cache holds the three turns, newest first.
	msgs, hit, _ := r.hub.rec.conv.get(convKey{"ipintel-db", u, session})
	if !hit || len(msgs) != 6 || msgs[0].Role != "assistant" || msgs[1].Message != "question three" || msgs[5].Message != "question one" {
		t.Fatalf("cached conversation: hit %v, %d messages %v", hit, len(msgs), texts(msgs))
	}
}
