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

// BenchmarkWriteShapes compares the write shapes the money path can use on the embedded
// server: what one document costs alone, in a batch insert, and as an update by _id.
func BenchmarkWriteShapes(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, Options{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(ctx)
	coll := s.DB("bench-db").Collection("c")
	b.Run("insert-one", func(b *testing.B) {
		for b.Loop() {
			if _, err := coll.InsertOne(ctx, map[string]any{"n": 1}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("insert-many-64-per-doc", func(b *testing.B) {
		docs := make([]any, 64)
		for i := range docs {
			docs[i] = map[string]any{"n": i}
		}
		for b.Loop() {
			for i := range docs {
				docs[i] = map[string]any{"n": i}
			}
			if _, err := coll.InsertMany(ctx, docs); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/doc")
	})
	if _, err := coll.InsertOne(ctx, map[string]any{"_id": "k", "n": 0}); err != nil {
		b.Fatal(err)
	}
	if _, err := s.IndexIDs(ctx); err != nil {
		b.Fatal(err)
	}
	b.Run("update-by-id", func(b *testing.B) {
		for b.Loop() {
			if _, err := coll.UpdateOne(ctx, map[string]any{"_id": "k"}, map[string]any{"$inc": map[string]any{"n": 1}}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("find-by-id", func(b *testing.B) {
		for b.Loop() {
			if err := coll.FindOne(ctx, map[string]any{"_id": "k"}).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
