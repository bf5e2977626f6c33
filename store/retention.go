package store

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Rule deletes the documents of one collection whose Field is older than MaxAge (or, with
// MaxAge 0, whose Field is in the past, as for analyses.expiresAt).
type Rule struct {
	DB, Coll, Field string
	MaxAge          time.Duration
}

// RetentionRules derives the sweeper's rules from the schema's TTL indexes, so the two modes
// delete the same documents.
func RetentionRules(cols []Collection) []Rule {
	var rules []Rule
	for _, c := range cols {
		for _, ix := range c.Indexes {
			if ix.TTL != nil && len(ix.Keys) == 1 {
				rules = append(rules, Rule{DB: c.DB, Coll: c.Name, Field: ix.Keys[0].Key, MaxAge: *ix.TTL})
			}
		}
	}
	return rules
}

// Sweep runs every rule once at time now and returns how many documents it deleted.
func (s *Store) Sweep(ctx context.Context, rules []Rule, now time.Time) (int64, error) {
	var total int64
	for _, r := range rules {
		cutoff := now.Add(-r.MaxAge)
		res, err := s.DB(r.DB).Collection(r.Coll).DeleteMany(ctx,
			bson.D{{Key: r.Field, Value: bson.D{{Key: "$lt", Value: cutoff}}}})
		if err != nil {
			return total, fmt.Errorf("sweep %s.%s: %w", r.DB, r.Coll, err)
		}
		total += res.DeletedCount
	}
	return total, nil
}

// RunSweeper sweeps every interval until ctx is done. It is started only in RetentionSweeper
// mode; with TTL indexes the server does this work.
func (s *Store) RunSweeper(ctx context.Context, rules []Rule, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := s.Sweep(ctx, rules, time.Now())
		switch {
		case err != nil && ctx.Err() == nil:
			log.Error("retention sweep failed", "err", err)
		case n > 0:
			log.Info("retention sweep deleted expired documents", "count", n)
		}
		// Collections created since the last pass (billing's, a tool's first write) get their
		// _id index here; see idindex.go.
		if _, err := s.IndexIDs(ctx); err != nil && ctx.Err() == nil {
			log.Warn("indexing _id lookups failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
