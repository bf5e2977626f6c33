package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// AuthDB is the shared authentication database of the seed.
const AuthDB = "maula-auth-db"

// Index is one index to create: keys in order, and its options.
type Index struct {
	Name   string
	Keys   bson.D
	Unique bool
	// TTL, when non-nil, makes it a TTL index (expireAfterSeconds) on servers that support it.
	TTL *time.Duration
}

// Collection lists a collection's indexes.
type Collection struct {
	DB, Name string
	Indexes  []Index
}

func ttl(d time.Duration) *time.Duration { return &d }

// Retention periods from the seed's Data Retention Policy.
const (
	APILogRetention       = 30 * 24 * time.Hour
	ChatHistoryRetention  = 90 * 24 * time.Hour
	FreeAnalysisRetention = 7 * 24 * time.Hour
	SessionIdleRetention  = 24 * time.Hour
)

// Schema returns every collection with its indexes: the seed's "Indexing Strategy" for every
// tool database plus the unique indexes the domain needs. toolDBs are the tool database names.
func Schema(toolDBs []string) []Collection {
	cols := []Collection{
		{AuthDB, "users", []Index{{Name: "email_unique", Keys: bson.D{{Key: "email", Value: 1}}, Unique: true}}},
		{AuthDB, "sessions", []Index{
			{Name: "userId_1", Keys: bson.D{{Key: "userId", Value: 1}}},
			{Name: "lastActiveAt_ttl", Keys: bson.D{{Key: "lastActiveAt", Value: 1}}, TTL: ttl(SessionIdleRetention)},
		}},
		{AuthDB, "api_keys", []Index{
			{Name: "key_unique", Keys: bson.D{{Key: "key", Value: 1}}, Unique: true},
			{Name: "userId_toolName", Keys: bson.D{{Key: "userId", Value: 1}, {Key: "toolName", Value: 1}}},
		}},
		{AuthDB, "subscriptions", []Index{{Name: "userId_unique", Keys: bson.D{{Key: "userId", Value: 1}}, Unique: true}}},
		{AuthDB, "billing", []Index{{Name: "userId_createdAt", Keys: bson.D{{Key: "userId", Value: 1}, {Key: "createdAt", Value: -1}}}}},
		{AuthDB, "credit_ledger", []Index{
			{Name: "requestId_phase_unique", Keys: bson.D{{Key: "requestId", Value: 1}, {Key: "phase", Value: 1}}, Unique: true},
			{Name: "userId_createdAt", Keys: bson.D{{Key: "userId", Value: 1}, {Key: "createdAt", Value: -1}}},
		}},
		{AuthDB, "cost_rollups", []Index{
			{Name: "day_provider_model_tool_user_unique", Keys: bson.D{
				{Key: "day", Value: 1}, {Key: "provider", Value: 1}, {Key: "model", Value: 1},
				{Key: "tool", Value: 1}, {Key: "userId", Value: 1}}, Unique: true},
		}},
	}
	for _, db := range toolDBs {
		cols = append(cols,
			Collection{db, "analyses", []Index{
				{Name: "userId_1_createdAt_-1", Keys: bson.D{{Key: "userId", Value: 1}, {Key: "createdAt", Value: -1}}},
				{Name: "ipAddress_1", Keys: bson.D{{Key: "ipAddress", Value: 1}}},
				{Name: "result.riskScore_-1", Keys: bson.D{{Key: "result.riskScore", Value: -1}}},
				{Name: "expiresAt_ttl", Keys: bson.D{{Key: "expiresAt", Value: 1}}, TTL: ttl(0)},
			}},
			Collection{db, "chat_history", []Index{
				{Name: "userId_1_timestamp_-1", Keys: bson.D{{Key: "userId", Value: 1}, {Key: "timestamp", Value: -1}}},
				{Name: "sessionId_1", Keys: bson.D{{Key: "sessionId", Value: 1}}},
				// Not in the seed: billing's crash recovery finds a reply by its request.
				{Name: "requestId_1", Keys: bson.D{{Key: "requestId", Value: 1}}},
				{Name: "timestamp_ttl", Keys: bson.D{{Key: "timestamp", Value: 1}}, TTL: ttl(ChatHistoryRetention)},
			}},
			Collection{db, "api_logs", []Index{
				{Name: "userId_1_timestamp_-1", Keys: bson.D{{Key: "userId", Value: 1}, {Key: "timestamp", Value: -1}}},
				{Name: "apiKeyId_1", Keys: bson.D{{Key: "apiKeyId", Value: 1}}},
				{Name: "timestamp_ttl", Keys: bson.D{{Key: "timestamp", Value: 1}}, TTL: ttl(APILogRetention)},
			}},
			Collection{db, "webhooks", []Index{
				{Name: "userId_1_isActive_1", Keys: bson.D{{Key: "userId", Value: 1}, {Key: "isActive", Value: 1}}},
			}},
			Collection{db, "analytics", []Index{
				{Name: "userId_date_unique", Keys: bson.D{{Key: "userId", Value: 1}, {Key: "date", Value: 1}}, Unique: true},
			}},
		)
	}
	return cols
}

// RetentionMode says how expired documents are removed.
type RetentionMode string

// Retention modes: the server's TTL indexes, or this process's sweeper.
const (
	RetentionTTL     RetentionMode = "ttl-indexes"
	RetentionSweeper RetentionMode = "sweeper"
)

// MigrateResult says what Migrate did.
type MigrateResult struct {
	Mode    RetentionMode
	Skipped bool // the schema marker matched: nothing was created
	Indexes int
}

const metaColl = "_maula_meta"

// Migrate creates every database, collection and index of the schema, idempotently. When force
// is false and the schema marker stored by an earlier run matches, it does nothing (warm start).
// TTL indexes are created where the server supports them; where it answers NotImplemented
// (FerretDB) the same fields get plain indexes and the mode is RetentionSweeper.
func (s *Store) Migrate(ctx context.Context, cols []Collection, force bool) (MigrateResult, error) {
	res, err := s.migrate(ctx, cols, force)
	if err != nil {
		return res, err
	}
	// Also on a warm start: a data dir written before IndexIDs existed gets its indexes now.
	if _, err := s.IndexIDs(ctx); err != nil {
		return res, err
	}
	return res, nil
}

func (s *Store) migrate(ctx context.Context, cols []Collection, force bool) (MigrateResult, error) {
	sum := schemaHash(cols)
	meta := s.DB(AuthDB).Collection(metaColl)
	if !force {
		var m struct {
			Hash string        `bson:"hash"`
			Mode RetentionMode `bson:"mode"`
		}
		err := meta.FindOne(ctx, bson.D{{Key: "_id", Value: "schema"}}).Decode(&m)
		if err == nil && m.Hash == sum {
			return MigrateResult{Mode: m.Mode, Skipped: true}, nil
		}
		if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
			return MigrateResult{}, fmt.Errorf("read schema marker: %w", err)
		}
	}
	mode, err := s.probeTTL(ctx)
	if err != nil {
		return MigrateResult{}, err
	}
	res := MigrateResult{Mode: mode}
	// On a fresh server most databases do not exist yet: skip asking them for their indexes.
	names, err := s.Client.ListDatabaseNames(ctx, bson.D{})
	if err != nil {
		return res, fmt.Errorf("list databases: %w", err)
	}
	existing := make(map[string]bool, len(names))
	for _, n := range names {
		existing[n] = true
	}
	// Collections are independent: create them a few at a time (the embedded server writes one
	// SQLite file per database, so databases proceed in parallel).
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		sem   = make(chan struct{}, 16)
	)
	for _, c := range cols {
		wg.Add(1)
		sem <- struct{}{}
		go func(c Collection) {
			defer func() { <-sem; wg.Done() }()
			n, err := s.createIndexes(ctx, c, mode, existing[c.DB])
			mu.Lock()
			defer mu.Unlock()
			res.Indexes += n
			if err != nil && first == nil {
				first = err
			}
		}(c)
	}
	wg.Wait()
	if first != nil {
		return res, first
	}
	_, err = meta.UpdateOne(ctx, bson.D{{Key: "_id", Value: "schema"}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "hash", Value: sum}, {Key: "mode", Value: mode}, {Key: "at", Value: time.Now().UTC()}}}},
		options.UpdateOne().SetUpsert(true))
	if err != nil {
		return res, fmt.Errorf("write schema marker: %w", err)
	}
	return res, nil
}

func (s *Store) createIndexes(ctx context.Context, c Collection, mode RetentionMode, dbExists bool) (int, error) {
	coll := s.DB(c.DB).Collection(c.Name)
	// FerretDB v1.24 panics when one createIndexes names several indexes that already exist,
	// so ask for the missing ones only (which also makes a warm run cheap).
	existing := map[string]bool{}
	var (
		specs []mongo.IndexSpecification
		err   error
	)
	if dbExists {
		specs, err = coll.Indexes().ListSpecifications(ctx)
	}
	var ce mongo.CommandError
	switch {
	case !dbExists:
	case err == nil:
		for _, sp := range specs {
			existing[sp.Name] = true
		}
	case errors.As(err, &ce) && ce.Code == 26: // NamespaceNotFound: a new collection
	default:
		return 0, fmt.Errorf("list indexes of %s.%s: %w", c.DB, c.Name, err)
	}
	models := make([]mongo.IndexModel, 0, len(c.Indexes))
	for _, ix := range c.Indexes {
		if existing[ix.Name] {
			continue
		}
		o := options.Index().SetName(ix.Name)
		if ix.Unique {
			o.SetUnique(true)
		}
		if ix.TTL != nil && mode == RetentionTTL {
			o.SetExpireAfterSeconds(int32(ix.TTL.Seconds()))
		}
		models = append(models, mongo.IndexModel{Keys: ix.Keys, Options: o})
	}
	if len(models) == 0 {
		return 0, nil
	}
	if _, err := coll.Indexes().CreateMany(ctx, models); err != nil {
		return 0, fmt.Errorf("create indexes on %s.%s: %w", c.DB, c.Name, err)
	}
	return len(models), nil
}

// probeTTL asks the server for a TTL index on a scratch collection and reports the mode.
func (s *Store) probeTTL(ctx context.Context) (RetentionMode, error) {
	coll := s.DB(AuthDB).Collection(metaColl)
	_, err := coll.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys:    bson.D{{Key: "ttlProbe", Value: 1}},
		Options: options.Index().SetName("ttl_probe").SetExpireAfterSeconds(3600),
	})
	if err == nil {
		return RetentionTTL, nil
	}
	var ce mongo.CommandError
	if errors.As(err, &ce) && (ce.Code == 238 || ce.Name == "NotImplemented") {
		return RetentionSweeper, nil
	}
	return "", fmt.Errorf("probe TTL index support: %w", err)
}

func schemaHash(cols []Collection) string {
	b, _ := json.Marshal(cols)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}
