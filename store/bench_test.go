package store

import (
	"context"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/tools"
)

func allToolDBs() []string {
	var dbs []string
	for _, t := range tools.Default().All() {
		dbs = append(dbs, t.Database())
	}
	return dbs
}

// BenchmarkStartCold measures start to ready with the embedded server on an empty data dir:
// open FerretDB, connect, create the 51 databases' collections and indexes.
func BenchmarkStartCold(b *testing.B) {
	cols := Schema(allToolDBs())
	for b.Loop() {
		dir := b.TempDir()
		s, err := Open(context.Background(), Options{DataDir: dir, Wait: 10 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Migrate(context.Background(), cols, false); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		_ = s.Close(context.Background())
		b.StartTimer()
	}
}

// BenchmarkStartWarm is the same on a data dir an earlier run migrated.
func BenchmarkStartWarm(b *testing.B) {
	cols := Schema(allToolDBs())
	dir := b.TempDir()
	s, err := Open(context.Background(), Options{DataDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Migrate(context.Background(), cols, false); err != nil {
		b.Fatal(err)
	}
	_ = s.Close(context.Background())
	for b.Loop() {
		s, err := Open(context.Background(), Options{DataDir: dir})
		if err != nil {
			b.Fatal(err)
		}
		if res, err := s.Migrate(context.Background(), cols, false); err != nil || !res.Skipped {
			b.Fatalf("warm migrate: %+v %v", res, err)
		}
		b.StopTimer()
		_ = s.Close(context.Background())
		b.StartTimer()
	}
}

// BenchmarkInsertOne is one acknowledged write on the embedded server: the unit of cost of
// everything the chat path stores.
func BenchmarkInsertOne(b *testing.B) {
	s, err := Open(context.Background(), Options{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	coll := s.DB("bench-db").Collection("c")
	for b.Loop() {
		if _, err := coll.InsertOne(context.Background(), map[string]any{"n": 1}); err != nil {
			b.Fatal(err)
		}
	}
}
