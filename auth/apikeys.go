package auth

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/maula-ai/maula-chat/httpx"
	"github.com/maula-ai/maula-chat/kv"
	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/plans"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

const (
	// KeyPrefix starts every API key: mk_<tool>_<random>.
	KeyPrefix = "mk_"
	// keyRandLen is the base62 length of 32 random bytes (62^43 > 2^256), zero-padded.
	keyRandLen = 43
	// displayLen is how many random characters the stored display prefix keeps.
	displayLen = 6
	// maxKeysPerUser bounds POST /auth/api-keys (50 default keys plus rotations of spares).
	maxKeysPerUser = 200
)

// keyEntry is what the caches hold for an API key (by the key's hash): enough to authorise a
// request without the database. Stored as JSON under "apikey:<hash>" in the kv cache.
type keyEntry struct {
	ID      string   `json:"i"`
	UserID  string   `json:"u"`
	Email   string   `json:"e"`
	Role    string   `json:"r"`
	Plan    string   `json:"p"`
	Tool    string   `json:"t"`
	Perms   []string `json:"pm"`
	RPM     int      `json:"m"`
	RPD     int      `json:"d"`
	Expires int64    `json:"x"` // unix milliseconds; 0: never
	Active  bool     `json:"a"`
	fetched time.Time
}

func keyCacheKey(hash string) string { return "apikey:" + hash }

// generateKey returns a new key text for tool, its hash and its display prefix.
func generateKey(tool string) (text, hash, prefix string, err error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", "", "", fmt.Errorf("generate API key: %w", err)
	}
	r := new(big.Int).SetBytes(raw).Text(62)
	r = strings.Repeat("0", keyRandLen-len(r)) + r
	text = KeyPrefix + tool + "_" + r
	return text, hashToken(text), KeyPrefix + tool + "_" + r[:displayLen], nil
}

// parseKey splits mk_<tool>_<random> and checks its shape; it does not look the key up.
func parseKey(text string) (tool string, ok bool) {
	rest, found := strings.CutPrefix(text, KeyPrefix)
	if !found {
		return "", false
	}
	tool, rnd, found := strings.Cut(rest, "_")
	if !found || tool == "" || len(rnd) != keyRandLen {
		return "", false
	}
	for i := 0; i < len(rnd); i++ {
		c := rnd[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return "", false
		}
	}
	return tool, true
}

// newKeyDoc builds an api_keys document and returns it with the key text, shown only once.
func newKeyDoc(uid bson.ObjectID, tool, name string, perms []string, rl model.RateLimit, exp *time.Time, now time.Time) (model.APIKey, string, error) {
	text, hash, prefix, err := generateKey(tool)
	if err != nil {
		return model.APIKey{}, "", err
	}
	return model.APIKey{
		ID: bson.NewObjectID(), UserID: uid, ToolName: tool, Key: hash, Name: name,
		Permissions: perms, RateLimit: rl, CreatedAt: now, ExpiresAt: exp, IsActive: true, Prefix: prefix,
	}, text, nil
}

// CreatedKey is an API key as answered at creation: the document's public fields plus the key
// text, which is never stored and never shown again.
type CreatedKey struct {
	model.APIKey
	Key string `json:"key"`
}

// defaultKeys builds one key per tool with the plan's limits.
func (s *Service) defaultKeys(uid bson.ObjectID, plan plans.Plan, now time.Time) ([]model.APIKey, []CreatedKey, error) {
	all := s.o.Tools.All()
	docs := make([]model.APIKey, 0, len(all))
	out := make([]CreatedKey, 0, len(all))
	rl := model.RateLimit{RequestsPerMinute: plan.APIKeyRequestsPerMinute, RequestsPerDay: plan.APIKeyRequestsPerDay}
	for _, t := range all {
		d, text, err := newKeyDoc(uid, t.ID, t.Name+" default key", []string{PermRead, PermWrite}, rl, nil, now)
		if err != nil {
			return nil, nil, err
		}
		docs = append(docs, d)
		out = append(out, CreatedKey{APIKey: d, Key: text})
	}
	return docs, out, nil
}

// RateLimitError is the cause of a 429: which limit was hit and when it resets.
type RateLimitError struct {
	Scope    string // "key_minute", "key_day", "chat", "login"
	Decision kv.Decision
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("rate limit %s: %d per window, retry in %s", e.Scope, e.Decision.Limit, e.Decision.RetryAfter)
}

func errRateLimited(scope string, d kv.Decision) *httpx.APIError {
	return &httpx.APIError{Status: http.StatusTooManyRequests, Code: "rate_limited",
		Message: fmt.Sprintf("rate limit of %d reached; retry after %ds", d.Limit, retrySeconds(d)),
		Err:     &RateLimitError{Scope: scope, Decision: d}}
}

func retrySeconds(d kv.Decision) int64 {
	return max(int64((d.RetryAfter+time.Second-1)/time.Second), 1)
}

// SetRateHeaders writes X-RateLimit-Limit/Remaining/Reset (Reset in Unix seconds) and, for a
// denied decision, Retry-After in seconds.
func SetRateHeaders(w http.ResponseWriter, d kv.Decision) {
	h := w.Header()
	h.Set("X-RateLimit-Limit", strconv.Itoa(d.Limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(d.Remaining))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(d.Reset.Unix(), 10))
	if !d.Allowed {
		h.Set("Retry-After", strconv.FormatInt(retrySeconds(d), 10))
	}
}

// validateKey authorises an API key for wantTool ("" when the request names no tool): known,
// active, unexpired, of that tool, and within its per-minute and per-day limits. It counts
// the request in the kv usage counters, which the flush loop writes in batches.
func (s *Service) validateKey(ctx context.Context, text, wantTool string) (*Principal, error) {
	tool, ok := parseKey(text)
	if !ok {
		return nil, errUnauthorized("invalid_api_key", "the API key is not valid")
	}
	if _, known := s.o.Tools.Get(tool); !known {
		return nil, errUnauthorized("invalid_api_key", "the API key is not valid")
	}
	hash := hashToken(text)
	e, ok, tomb := s.keyCache.Get(hash)
	if tomb {
		return nil, errUnauthorized("invalid_api_key", "the API key was revoked")
	}
	now := s.now()
	if !ok || now.Sub(e.fetched) >= localTTL {
		var err error
		if e, err = s.loadKey(ctx, hash); err != nil {
			return nil, err
		}
	}
	switch {
	case !e.Active:
		return nil, errUnauthorized("invalid_api_key", "the API key is disabled")
	case e.Tool != tool:
		return nil, errUnauthorized("invalid_api_key", "the API key is not valid")
	case e.Expires != 0 && now.UnixMilli() >= e.Expires:
		return nil, errUnauthorized("api_key_expired", "the API key has expired")
	case wantTool != "" && wantTool != e.Tool:
		return nil, httpx.Errorf(http.StatusForbidden, "wrong_tool", "this API key is for %s, not %s", e.Tool, wantTool)
	}
	dm, err := s.o.KV.Allow(ctx, "key:"+e.ID+":m", e.RPM, time.Minute)
	if err != nil {
		return nil, fmt.Errorf("key rate limit: %w", err)
	}
	if !dm.Allowed {
		return nil, errRateLimited("key_minute", dm)
	}
	dd, err := s.o.KV.Allow(ctx, "key:"+e.ID+":d", e.RPD, 24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("key rate limit: %w", err)
	}
	if !dd.Allowed {
		return nil, errRateLimited("key_day", dd)
	}
	if _, err := s.o.KV.HIncrBy(ctx, usageKey, e.ID, 1, 0); err != nil {
		s.log.Warn("key usage count failed", "keyId", e.ID, "err", err)
	}
	kid, _ := bson.ObjectIDFromHex(e.ID)
	uid, _ := bson.ObjectIDFromHex(e.UserID)
	return &Principal{UserID: uid, Email: e.Email, Role: e.Role, Plan: e.Plan, APIKeyID: kid,
		Tool: e.Tool, Permissions: e.Perms, rate: &dm}, nil
}

// loadKey reads a key entry from the kv cache, or the database on a miss.
func (s *Service) loadKey(ctx context.Context, hash string) (keyEntry, error) {
	var e keyEntry
	b, hit, err := s.o.KV.Get(ctx, keyCacheKey(hash))
	if err != nil {
		s.log.Warn("key cache get failed; reading the database", "err", err)
	}
	if !hit || json.Unmarshal(b, &e) != nil || e.ID == "" {
		var doc model.APIKey
		err := s.keys.FindOne(ctx, bson.D{{Key: "key", Value: hash}}).Decode(&doc)
		if errors.Is(err, mongo.ErrNoDocuments) {
			return e, errUnauthorized("invalid_api_key", "the API key is not valid")
		}
		if err != nil {
			return e, fmt.Errorf("find API key: %w", err)
		}
		u, err := s.userByID(ctx, doc.UserID)
		if err != nil {
			return e, err
		}
		e = keyEntry{ID: doc.ID.Hex(), UserID: u.ID.Hex(), Email: u.Email, Role: roleOf(u),
			Plan: u.Subscription.Plan, Tool: doc.ToolName, Perms: doc.Permissions,
			RPM: doc.RateLimit.RequestsPerMinute, RPD: doc.RateLimit.RequestsPerDay, Active: doc.IsActive}
		if doc.ExpiresAt != nil {
			e.Expires = doc.ExpiresAt.UnixMilli()
		}
		b, _ := json.Marshal(e)
		if err := s.o.KV.Set(ctx, keyCacheKey(hash), b, sessionCacheTTL); err != nil {
			s.log.Warn("key cache set failed", "err", err)
		}
	}
	e.fetched = s.now()
	s.keyCache.Add(hash, e)
	if _, _, tomb := s.keyCache.Get(hash); tomb {
		return e, errUnauthorized("invalid_api_key", "the API key was revoked")
	}
	return e, nil
}

// flushUsage moves the pending usage counts from kv into api_keys in one bulk write. HTake is
// atomic, so several instances flushing at once never count a request twice; on a write
// failure the counts are put back for the next flush.
func (s *Service) flushUsage(ctx context.Context) error {
	counts, err := s.o.KV.HTake(ctx, usageKey)
	if err != nil {
		return fmt.Errorf("take key usage: %w", err)
	}
	if len(counts) == 0 {
		return nil
	}
	now := s.now().UTC()
	models := make([]mongo.WriteModel, 0, len(counts))
	for id, n := range counts {
		oid, err := bson.ObjectIDFromHex(id)
		if err != nil || n <= 0 {
			continue
		}
		// lastRequest is accurate to the flush interval: the counters carry counts, not times.
		models = append(models, mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "_id", Value: oid}}).
			SetUpdate(bson.D{
				{Key: "$inc", Value: bson.D{{Key: "usage.totalRequests", Value: n}}},
				{Key: "$set", Value: bson.D{{Key: "usage.lastRequest", Value: now}}},
			}))
	}
	if len(models) == 0 {
		return nil
	}
	if _, err := s.keys.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false)); err != nil {
		for id, n := range counts {
			_, _ = s.o.KV.HIncrBy(ctx, usageKey, id, n, 0)
		}
		return fmt.Errorf("flush key usage: %w", err)
	}
	return nil
}

// createKeyInput is the body of POST /auth/api-keys.
type createKeyInput struct {
	ToolName    string           `json:"toolName"`
	Name        string           `json:"name"`
	Permissions []string         `json:"permissions"`
	RateLimit   *model.RateLimit `json:"rateLimit"`
	ExpiresAt   *time.Time       `json:"expiresAt"`
}

func (s *Service) createKey(ctx context.Context, p *Principal, in createKeyInput) (CreatedKey, error) {
	if _, ok := s.o.Tools.Get(in.ToolName); !ok {
		return CreatedKey{}, httpx.Errorf(http.StatusBadRequest, "unknown_tool", "toolName %q is not a tool", in.ToolName)
	}
	t, _ := s.o.Tools.Get(in.ToolName)
	if in.Name == "" {
		in.Name = t.Name + " key"
	}
	if len(in.Name) > 100 {
		return CreatedKey{}, httpx.Errorf(http.StatusBadRequest, "invalid_name", "name is limited to 100 bytes")
	}
	perms, err := normPerms(in.Permissions)
	if err != nil {
		return CreatedKey{}, err
	}
	plan := s.plans.Lookup(p.Plan)
	rl := model.RateLimit{RequestsPerMinute: plan.APIKeyRequestsPerMinute, RequestsPerDay: plan.APIKeyRequestsPerDay}
	if in.RateLimit != nil {
		// A key may be limited below the plan, never above it.
		r := *in.RateLimit
		if r.RequestsPerMinute < 1 || r.RequestsPerMinute > rl.RequestsPerMinute ||
			r.RequestsPerDay < r.RequestsPerMinute || r.RequestsPerDay > rl.RequestsPerDay {
			return CreatedKey{}, httpx.Errorf(http.StatusBadRequest, "invalid_rate_limit",
				"rateLimit must have 1 <= requestsPerMinute <= %d and requestsPerMinute <= requestsPerDay <= %d",
				rl.RequestsPerMinute, rl.RequestsPerDay)
		}
		rl = r
	}
	now := s.now().UTC()
	if in.ExpiresAt != nil {
		if !in.ExpiresAt.After(now) {
			return CreatedKey{}, httpx.Errorf(http.StatusBadRequest, "invalid_expiry", "expiresAt must be in the future")
		}
		e := in.ExpiresAt.UTC()
		in.ExpiresAt = &e
	}
	n, err := s.keys.CountDocuments(ctx, bson.D{{Key: "userId", Value: p.UserID}})
	if err != nil {
		return CreatedKey{}, fmt.Errorf("count keys: %w", err)
	}
	if n >= maxKeysPerUser {
		return CreatedKey{}, httpx.Errorf(http.StatusConflict, "too_many_keys", "at most %d API keys per account; delete some first", maxKeysPerUser)
	}
	doc, text, err := newKeyDoc(p.UserID, in.ToolName, in.Name, perms, rl, in.ExpiresAt, now)
	if err != nil {
		return CreatedKey{}, err
	}
	if _, err := s.keys.InsertOne(ctx, doc); err != nil {
		return CreatedKey{}, fmt.Errorf("insert key: %w", err)
	}
	return CreatedKey{APIKey: doc, Key: text}, nil
}

func normPerms(in []string) ([]string, error) {
	if len(in) == 0 {
		return []string{PermRead, PermWrite}, nil
	}
	var read, write bool
	for _, p := range in {
		switch p {
		case PermRead:
			read = true
		case PermWrite:
			write = true
		default:
			return nil, httpx.Errorf(http.StatusBadRequest, "invalid_permission", "permission %q is not read or write", p)
		}
	}
	var out []string
	if read {
		out = append(out, PermRead)
	}
	if write {
		out = append(out, PermWrite)
	}
	return out, nil
}

func (s *Service) listKeys(ctx context.Context, uid bson.ObjectID) ([]model.APIKey, error) {
	cur, err := s.keys.Find(ctx, bson.D{{Key: "userId", Value: uid}})
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	out := []model.APIKey{}
	if err := cur.All(ctx, &out); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return out, nil
}

func keyID(raw string) (bson.ObjectID, error) {
	id, err := bson.ObjectIDFromHex(raw)
	if err != nil {
		return id, httpx.Errorf(http.StatusNotFound, "not_found", "no such API key")
	}
	return id, nil
}

// rotateKey gives key id a new text in place (same id, settings and usage); the old text
// stops working on every instance at once.
func (s *Service) rotateKey(ctx context.Context, uid bson.ObjectID, rawID string) (CreatedKey, error) {
	id, err := keyID(rawID)
	if err != nil {
		return CreatedKey{}, err
	}
	var old model.APIKey
	if err := s.keys.FindOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "userId", Value: uid}}).Decode(&old); err != nil {
		if errors.Is(err, mongo.ErrNoDocuments) {
			return CreatedKey{}, httpx.Errorf(http.StatusNotFound, "not_found", "no such API key")
		}
		return CreatedKey{}, fmt.Errorf("find key: %w", err)
	}
	text, hash, prefix, err := generateKey(old.ToolName)
	if err != nil {
		return CreatedKey{}, err
	}
	// Conditional on the old hash: of two concurrent rotations only one wins.
	res, err := s.keys.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "key", Value: old.Key}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "key", Value: hash}, {Key: "prefix", Value: prefix}}}})
	if err != nil {
		return CreatedKey{}, fmt.Errorf("rotate key: %w", err)
	}
	if res.ModifiedCount == 0 {
		return CreatedKey{}, httpx.Errorf(http.StatusConflict, "conflict", "the key was changed concurrently; retry")
	}
	s.revokeKeyHash(ctx, old.Key)
	doc := old
	doc.Key, doc.Prefix = hash, prefix
	return CreatedKey{APIKey: doc, Key: text}, nil
}

// deleteKey removes key id; its text stops working on every instance at once.
func (s *Service) deleteKey(ctx context.Context, uid bson.ObjectID, rawID string) error {
	id, err := keyID(rawID)
	if err != nil {
		return err
	}
	var old model.APIKey
	err = s.keys.FindOneAndDelete(ctx, bson.D{{Key: "_id", Value: id}, {Key: "userId", Value: uid}}).Decode(&old)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return httpx.Errorf(http.StatusNotFound, "not_found", "no such API key")
	}
	if err != nil {
		return fmt.Errorf("delete key: %w", err)
	}
	s.revokeKeyHash(ctx, old.Key)
	return nil
}

func (s *Service) revokeKeyHash(ctx context.Context, hash string) {
	s.keyCache.Tombstone(hash)
	s.dropShared(ctx, "key", hash, keyCacheKey(hash))
}
