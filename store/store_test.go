package store

import (
	"context"
	"os"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// openTest opens the store the tests run against: MONGODB_URI when the environment sets one,
// the embedded FerretDB in a temporary directory otherwise.
func openTest(t *testing.T) *Store {
	t.Helper()
	ctx := context.Background()
	s, err := Open(ctx, Options{URI: os.Getenv("MONGODB_URI"), DataDir: t.TempDir(), Wait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

var testTools = []string{"ipintel-db", "fraudguard-db"}

func TestMigrateCreatesSeedIndexesIdempotently(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	cols := Schema(testTools)
	res, err := s.Migrate(ctx, cols, true)
	if err != nil {
		t.Fatal(err)
	}
	if s.Embedded && res.Mode != RetentionSweeper {
		t.Errorf("embedded FerretDB mode = %s, want sweeper (it has no TTL indexes)", res.Mode)
	}
	// Second run: the marker matches, nothing is done.
	res2, err := s.Migrate(ctx, cols, false)
	if err != nil || !res2.Skipped {
		t.Fatalf("warm migrate: skipped=%v err=%v", res2.Skipped, err)
	}
	// Forced again: creating existing indexes is not an error.
	if _, err := s.Migrate(ctx, cols, true); err != nil {
		t.Fatalf("forced re-migrate: %v", err)
	}
	names, err := s.Client.ListDatabaseNames(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range append([]string{AuthDB}, testTools...) {
		if !contains(names, want) {
			t.Errorf("database %s missing from %v", want, names)
		}
	}
	for _, tc := range []struct{ db, coll, index string }{
		{"ipintel-db", "analyses", "userId_1_createdAt_-1"},
		{"ipintel-db", "analyses", "result.riskScore_-1"},
		{"ipintel-db", "chat_history", "sessionId_1"},
		{"fraudguard-db", "api_logs", "apiKeyId_1"},
		{"fraudguard-db", "webhooks", "userId_1_isActive_1"},
		{AuthDB, "users", "email_unique"},
	} {
		specs, err := s.DB(tc.db).Collection(tc.coll).Indexes().ListSpecifications(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, sp := range specs {
			found = found || sp.Name == tc.index
		}
		if !found {
			t.Errorf("%s.%s lacks index %s", tc.db, tc.coll, tc.index)
		}
	}
	// The unique email index refuses a second user with the same email.
	users := s.DB(AuthDB).Collection("users")
	if _, err := users.InsertOne(ctx, bson.D{{Key: "email", Value: "a@b.c"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := users.InsertOne(ctx, bson.D{{Key: "email", Value: "a@b.c"}}); !IsDuplicateKey(err) {
		t.Fatalf("duplicate email: err = %v, want duplicate key", err)
	}
}

func TestSweeperDeletesExactlyTheExpired(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	cols := Schema(testTools)
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	type doc struct {
		db, coll, field string
		at              time.Time
		expired         bool
	}
	docs := []doc{
		{"ipintel-db", "api_logs", "timestamp", now.Add(-31 * day), true},
		{"ipintel-db", "api_logs", "timestamp", now.Add(-29 * day), false},
		{"ipintel-db", "chat_history", "timestamp", now.Add(-91 * day), true},
		{"ipintel-db", "chat_history", "timestamp", now.Add(-89 * day), false},
		{"fraudguard-db", "analyses", "expiresAt", now.Add(-time.Minute), true},
		{"fraudguard-db", "analyses", "expiresAt", now.Add(time.Minute), false},
		{AuthDB, "sessions", "lastActiveAt", now.Add(-25 * time.Hour), true},
		{AuthDB, "sessions", "lastActiveAt", now.Add(-23 * time.Hour), false},
	}
	for i, d := range docs {
		if _, err := s.DB(d.db).Collection(d.coll).InsertOne(ctx, bson.D{{Key: "n", Value: i}, {Key: d.field, Value: d.at}}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.Sweep(ctx, RetentionRules(cols), now)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("swept %d documents, want 4", n)
	}
	for i, d := range docs {
		c, err := s.DB(d.db).Collection(d.coll).CountDocuments(ctx, bson.D{{Key: "n", Value: i}})
		if err != nil {
			t.Fatal(err)
		}
		if got := c == 0; got != d.expired {
			t.Errorf("%s.%s %s=%v: deleted=%v, want %v", d.db, d.coll, d.field, d.at, got, d.expired)
		}
	}
}

func TestValidateURI(t *testing.T) {
	for _, tc := range []struct {
		uri string
		ok  bool
	}{
		{"mongodb://127.0.0.1:27017", true},
		{"mongodb+srv://", false},
		{"not-a-uri", false},
		{"http://x", false},
	} {
		if err := ValidateURI(tc.uri); (err == nil) != tc.ok {
			t.Errorf("ValidateURI(%q) = %v, want ok=%v", tc.uri, err, tc.ok)
		}
	}
}

func TestWritesSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(ctx, Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DB("ipintel-db").Collection("chat_history").InsertOne(ctx, bson.D{{Key: "message", Value: "kept"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close(ctx)
	n, err := s2.DB("ipintel-db").Collection("chat_history").CountDocuments(ctx, bson.D{{Key: "message", Value: "kept"}})
	if err != nil || n != 1 {
		t.Fatalf("after restart: count=%d err=%v", n, err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
