package auth

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/maula-ai/maula-chat/httpx"
	"github.com/maula-ai/maula-chat/model"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// sessionEntry is what the caches hold for a session: enough to build a Principal without the
// database. It is stored as JSON under "session:<id>" in the kv cache.
type sessionEntry struct {
	UserID    string `json:"u"`
	Email     string `json:"e"`
	Role      string `json:"r"`
	Plan      string `json:"p"`
	TokenHash string `json:"h"`
	Expires   int64  `json:"x"` // unix milliseconds
	// fetched is when this instance last read the entry from kv or the database (local only).
	fetched time.Time
}

// touch asks the flush loop to set a session's lastActiveAt.
type touch struct {
	id bson.ObjectID
	at time.Time
}

func sessionCacheKey(id string) string { return "session:" + id }

func errUnauthorized(code, msg string) *httpx.APIError {
	return &httpx.APIError{Status: http.StatusUnauthorized, Code: code, Message: msg}
}

// createSession inserts a sessions document for u and returns its signed token. The document
// holds only the token's SHA-256; the caches are warmed so the first request is already fast.
func (s *Service) createSession(ctx context.Context, u *model.User, r *http.Request) (string, time.Time, error) {
	now := s.now().UTC()
	exp := now.Add(s.o.SessionTTL)
	id := bson.NewObjectID()
	tok, err := s.keyring.sign(id.Hex(), u.ID.Hex(), now, exp)
	if err != nil {
		return "", time.Time{}, err
	}
	doc := model.Session{
		ID: id, UserID: u.ID, Token: hashToken(tok), Device: deviceOf(r),
		CreatedAt: now, ExpiresAt: exp, LastActiveAt: now,
	}
	if _, err := s.sessions.InsertOne(ctx, doc); err != nil {
		return "", time.Time{}, fmt.Errorf("insert session: %w", err)
	}
	e := sessionEntry{UserID: u.ID.Hex(), Email: u.Email, Role: roleOf(u), Plan: u.Subscription.Plan,
		TokenHash: doc.Token, Expires: exp.UnixMilli()}
	s.cacheSession(ctx, id.Hex(), e)
	return tok, exp, nil
}

func roleOf(u *model.User) string {
	if u.Role == RoleAdmin {
		return RoleAdmin
	}
	return RoleUser
}

// cacheSession stores e in kv and locally; a kv failure only costs a database read later.
func (s *Service) cacheSession(ctx context.Context, id string, e sessionEntry) {
	ttl := min(sessionCacheTTL, time.UnixMilli(e.Expires).Sub(s.now()))
	if ttl > 0 {
		b, _ := json.Marshal(e)
		if err := s.o.KV.Set(ctx, sessionCacheKey(id), b, ttl); err != nil {
			s.log.Warn("session cache set failed", "err", err)
		}
	}
	e.fetched = s.now()
	s.sessCache.Add(id, e)
}

// tokenInfo is what a verified token said; the token cache maps a token's SHA-256 to it.
type tokenInfo struct {
	sid, sub string
	exp      int64 // unix milliseconds
}

// validateSession checks a session token: signature (HS256, known kid), issuer and expiry,
// then that its session exists, is not revoked and is the session this token was issued for.
// Warm path: one SHA-256 and two in-process lookups; no I/O and no JWT parsing. A token whose
// exact bytes were verified before needs no second signature check (same bytes, same
// result), so verified tokens are remembered by hash; expiry is still checked every time.
func (s *Service) validateSession(ctx context.Context, tok string) (*Principal, error) {
	th := hashToken(tok)
	now := s.now()
	ti, known, _ := s.tokCache.Get(th)
	if !known {
		c, err := s.keyring.parse(tok, s.now)
		if err != nil {
			if errors.Is(err, jwt.ErrTokenExpired) {
				return nil, errUnauthorized("token_expired", "the session token has expired; log in again")
			}
			return nil, &httpx.APIError{Status: http.StatusUnauthorized, Code: "invalid_token", Message: "the session token is not valid", Err: err}
		}
		ti = tokenInfo{sid: c.ID, sub: c.Subject, exp: c.ExpiresAt.UnixMilli()}
	} else if now.UnixMilli() >= ti.exp {
		return nil, errUnauthorized("token_expired", "the session token has expired; log in again")
	}
	uid, err := bson.ObjectIDFromHex(ti.sub)
	if err != nil {
		return nil, errUnauthorized("invalid_token", "the session token is not valid")
	}
	e, ok, tomb := s.sessCache.Get(ti.sid)
	if tomb {
		return nil, errUnauthorized("session_revoked", "the session was logged out")
	}
	if !ok || now.Sub(e.fetched) >= localTTL {
		if e, err = s.loadSession(ctx, ti.sid); err != nil {
			return nil, err
		}
	}
	if !hmac.Equal([]byte(e.TokenHash), []byte(th)) || e.UserID != ti.sub {
		return nil, errUnauthorized("invalid_token", "the session token is not valid")
	}
	if now.UnixMilli() >= e.Expires {
		return nil, errUnauthorized("token_expired", "the session has expired; log in again")
	}
	if !known {
		s.tokCache.Add(th, ti)
	}
	return &Principal{
		UserID: uid, Email: e.Email, Role: e.Role, Plan: e.Plan, SessionID: ti.sid,
		Permissions: []string{PermRead, PermWrite},
	}, nil
}

// loadSession reads a session from the kv cache, or the database on a miss, refreshes the
// local copy and, at most once a minute per session across instances, queues a lastActiveAt
// write.
func (s *Service) loadSession(ctx context.Context, sid string) (sessionEntry, error) {
	var e sessionEntry
	b, hit, err := s.o.KV.Get(ctx, sessionCacheKey(sid))
	if err != nil {
		s.log.Warn("session cache get failed; reading the database", "err", err)
	}
	if hit && json.Unmarshal(b, &e) == nil && e.UserID != "" {
		e.fetched = s.now()
		s.sessCache.Add(sid, e)
	} else {
		if e, err = s.sessionFromDB(ctx, sid); err != nil {
			return e, err
		}
		s.cacheSession(ctx, sid, e)
	}
	if _, tomb := s.isTombstoned(sid); tomb {
		return e, errUnauthorized("session_revoked", "the session was logged out")
	}
	s.maybeTouch(ctx, sid)
	return e, nil
}

func (s *Service) isTombstoned(sid string) (sessionEntry, bool) {
	e, _, tomb := s.sessCache.Get(sid)
	return e, tomb
}

func (s *Service) sessionFromDB(ctx context.Context, sid string) (sessionEntry, error) {
	id, err := bson.ObjectIDFromHex(sid)
	if err != nil {
		return sessionEntry{}, errUnauthorized("invalid_token", "the session token is not valid")
	}
	var doc model.Session
	err = s.sessions.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return sessionEntry{}, errUnauthorized("session_revoked", "the session no longer exists")
	}
	if err != nil {
		return sessionEntry{}, fmt.Errorf("find session: %w", err)
	}
	if doc.RevokedAt != nil {
		s.sessCache.Tombstone(sid)
		return sessionEntry{}, errUnauthorized("session_revoked", "the session was logged out")
	}
	if !s.now().Before(doc.ExpiresAt) {
		return sessionEntry{}, errUnauthorized("token_expired", "the session has expired; log in again")
	}
	u, err := s.userByID(ctx, doc.UserID)
	if err != nil {
		return sessionEntry{}, err
	}
	return sessionEntry{UserID: u.ID.Hex(), Email: u.Email, Role: roleOf(u), Plan: u.Subscription.Plan,
		TokenHash: doc.Token, Expires: doc.ExpiresAt.UnixMilli()}, nil
}

func (s *Service) userByID(ctx context.Context, id bson.ObjectID) (*model.User, error) {
	var u model.User
	err := s.users.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&u)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, errUnauthorized("unknown_user", "the account no longer exists")
	}
	if err != nil {
		return nil, fmt.Errorf("find user: %w", err)
	}
	return &u, nil
}

// maybeTouch queues a lastActiveAt write unless one was queued for this session, by any
// instance, within the last minute (a kv rate limit of 1 per minute is the shared guard).
func (s *Service) maybeTouch(ctx context.Context, sid string) {
	d, err := s.o.KV.Allow(ctx, "touch:"+sid, 1, time.Minute)
	if err != nil || !d.Allowed {
		return
	}
	id, err := bson.ObjectIDFromHex(sid)
	if err != nil {
		return
	}
	select {
	case s.touches <- touch{id: id, at: s.now().UTC()}:
	default: // the queue is full: lastActiveAt is advisory, dropping one touch is harmless
	}
}

func (s *Service) flushTouches(ctx context.Context) error {
	var ids []bson.ObjectID
	var at time.Time
	for {
		select {
		case t := <-s.touches:
			ids = append(ids, t.id)
			at = t.at
			continue
		default:
		}
		break
	}
	if len(ids) == 0 {
		return nil
	}
	// One write for the whole batch: the touches are at most one flush interval apart.
	_, err := s.sessions.UpdateMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "lastActiveAt", Value: at}}}})
	if err != nil {
		return fmt.Errorf("touch sessions: %w", err)
	}
	return nil
}

// RevokeSession logs a session out everywhere: the database marks it revoked, the kv cache
// entry goes, and every instance (this one included) tombstones it in its in-process cache.
func (s *Service) RevokeSession(ctx context.Context, userID bson.ObjectID, sid string) error {
	id, err := bson.ObjectIDFromHex(sid)
	if err != nil {
		return httpx.Errorf(http.StatusNotFound, "not_found", "no such session")
	}
	res, err := s.sessions.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: id}, {Key: "userId", Value: userID}, {Key: "revokedAt", Value: bson.D{{Key: "$exists", Value: false}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "revokedAt", Value: s.now().UTC()}}}})
	if err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	if res.MatchedCount == 0 {
		return httpx.Errorf(http.StatusNotFound, "not_found", "no such active session")
	}
	s.sessCache.Tombstone(sid)
	s.dropShared(ctx, "session", sid, sessionCacheKey(sid))
	return nil
}

// dropShared deletes a kv cache entry and publishes the invalidation. A lookup on another
// instance that read the database just before the revocation could re-populate the kv entry
// just after the delete, so the delete is repeated once a moment later (cache-aside "delayed
// double delete"); instances that received the invalidation refuse the id anyway.
func (s *Service) dropShared(ctx context.Context, kind, id, cacheKey string) {
	if err := s.o.KV.Delete(ctx, cacheKey); err != nil {
		s.log.Warn("cache delete failed", "kind", kind, "err", err)
	}
	if err := s.publishInvalidation(ctx, kind, id); err != nil {
		s.log.Warn("invalidation publish failed", "kind", kind, "err", err)
	}
	select {
	case <-s.stopped():
		return // shutting down: no new goroutines once Close may be waiting for them
	default:
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTimer(2 * time.Second)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.stopped():
		}
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.o.KV.Delete(dctx, cacheKey)
	}()
}

// sessionView is a session as GET /auth/sessions shows it.
type sessionView struct {
	ID           string       `json:"id"`
	Device       model.Device `json:"device"`
	CreatedAt    time.Time    `json:"createdAt"`
	ExpiresAt    time.Time    `json:"expiresAt"`
	LastActiveAt time.Time    `json:"lastActiveAt"`
	Current      bool         `json:"current"`
}

// listSessions returns the user's live sessions, newest first.
func (s *Service) listSessions(ctx context.Context, p *Principal) ([]sessionView, error) {
	cur, err := s.sessions.Find(ctx, bson.D{{Key: "userId", Value: p.UserID}, {Key: "revokedAt", Value: bson.D{{Key: "$exists", Value: false}}}})
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	var docs []model.Session
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	now := s.now()
	out := make([]sessionView, 0, len(docs))
	for i := len(docs) - 1; i >= 0; i-- {
		d := docs[i]
		if !now.Before(d.ExpiresAt) {
			continue
		}
		out = append(out, sessionView{ID: d.ID.Hex(), Device: d.Device, CreatedAt: d.CreatedAt,
			ExpiresAt: d.ExpiresAt, LastActiveAt: d.LastActiveAt, Current: d.ID.Hex() == p.SessionID})
	}
	return out, nil
}

// deviceOf describes the client of r for the sessions document.
func deviceOf(r *http.Request) model.Device {
	if r == nil {
		return model.Device{Platform: "cli"}
	}
	ua := r.UserAgent()
	if len(ua) > 256 {
		ua = ua[:256]
	}
	return model.Device{UserAgent: ua, IP: clientIP(r), Platform: platformOf(ua)}
}

// clientIP is the peer address. Forwarded headers are not trusted: any client can set them,
// and the login limiter keys on this address.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func platformOf(ua string) string {
	l := strings.ToLower(ua)
	switch {
	case strings.Contains(l, "android"):
		return "android"
	case strings.Contains(l, "iphone"), strings.Contains(l, "ipad"):
		return "ios"
	case strings.Contains(l, "windows"):
		return "windows"
	case strings.Contains(l, "mac os"), strings.Contains(l, "macintosh"):
		return "macos"
	case strings.Contains(l, "linux"):
		return "linux"
	case ua == "":
		return "unknown"
	default:
		return "other"
	}
}
