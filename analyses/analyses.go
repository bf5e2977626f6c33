// Package analyses records and serves the tools' analyses (the seed's <tool>-db.analyses):
// POST /api/{tool}/analyses for a tool's engine, GET /api/{tool}/analyses and
// /api/{tool}/analyses/{id} for their owner, and GET /api/ipintel/lookup/{ip} answering the
// latest analysis of an address from the response cache (kv, one hour) or the database.
//
// Recording follows the seed's "User Analyzes IP Address" flow after the engine: the analysis
// is validated (ipintel against the seed's IPAnalysis; every other tool against the common
// riskScore and threatLevel, its own fields kept), stored with expiresAt from the plan's
// retention, cached, counted in the day's analytics, and announced to the user's webhooks
// (analysis.created, threshold.exceeded) through a Notifier. API-key authentication, the
// key's rate limit and the api_logs entry are the caller's middleware's (auth.RequireUser).
package analyses

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/maula-ai/maula-chat/httpx"
	"github.com/maula-ai/maula-chat/kv"
	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/store"
	"github.com/maula-ai/maula-chat/tools"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// CacheTTL is how long a lookup answer stays in the response cache (the seed's one hour).
const CacheTTL = time.Hour

// HighRiskScore is the riskScore from which an analysis counts as a high-risk detection.
const HighRiskScore = 70

// Caller is the authenticated user of a request.
type Caller struct {
	UserID bson.ObjectID
	Plan   string
}

// Notifier announces a stored analysis (to the user's webhooks). It must not block on the
// network: it queues.
type Notifier interface {
	AnalysisCreated(ctx context.Context, tool string, userID bson.ObjectID, analysis any, riskScore float64) error
}

// KV is what the service uses of the key-value store: the response cache and the counters of
// the day's unique IPs and the seed's realtime analytics hash.
type KV interface {
	kv.Cache
	kv.Counters
}

// Options configure a Service.
type Options struct {
	Mongo *store.Store
	KV    KV
	Tools *tools.Registry
	// Retention returns how long a plan keeps analyses (0: for ever).
	Retention func(plan string) time.Duration
	// Identify returns the authenticated caller of a request's context.
	Identify func(ctx context.Context) (Caller, bool)
	// Notifier, when set, is told of every stored analysis.
	Notifier Notifier
	Log      *slog.Logger
	// Now is the clock of createdAt, expiresAt and the analytics day (time.Now when nil).
	Now func() time.Time
	// Locking says whether analytics writes take the shared "rollups" lease lock: "auto" (on
	// when the server is FerretDB), "on" or "off".
	Locking string
}

// Service records and serves analyses.
type Service struct {
	o         Options
	analytics *Analytics
}

// New returns the service.
func New(ctx context.Context, o Options) (*Service, error) {
	if o.Mongo == nil || o.KV == nil || o.Tools == nil || o.Identify == nil {
		return nil, errors.New("analyses: Mongo, KV, Tools and Identify are required")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Retention == nil {
		o.Retention = func(string) time.Duration { return 7 * 24 * time.Hour }
	}
	a, err := newAnalytics(ctx, o)
	if err != nil {
		return nil, err
	}
	return &Service{o: o, analytics: a}, nil
}

// Analytics returns the service's analytics aggregator (run its Run loop; Flush on shutdown).
func (s *Service) Analytics() *Analytics { return s.analytics }

// Routes mounts the routes on mux behind require (authentication, the API key's tool and
// permission checks, rate limit and api_logs).
func (s *Service) Routes(mux *http.ServeMux, require func(http.Handler) http.Handler) {
	mux.Handle("POST /api/{tool}/analyses", require(s.handle(s.create)))
	mux.Handle("GET /api/{tool}/analyses", require(s.handle(s.list)))
	mux.Handle("GET /api/{tool}/analyses/{id}", require(s.handle(s.get)))
	// {tool} rather than "ipintel" so that the auth middleware sees the tool and refuses
	// another tool's key with 403 wrong_tool; only ipintel answers.
	mux.Handle("GET /api/{tool}/lookup/{ip}", require(s.handle(s.lookup)))
}

type call struct {
	Caller
	tool tools.Tool
	coll *mongo.Collection
}

func (s *Service) handle(f func(w http.ResponseWriter, r *http.Request, c call) error) http.Handler {
	route := httpx.ToolRoute[Caller, tools.Tool]{
		Identify: func(r *http.Request) (Caller, bool) { return s.o.Identify(r.Context()) },
		Tool:     s.o.Tools.Get,
		Fail:     failField,
	}
	return route.Handle(func(w http.ResponseWriter, r *http.Request, who Caller, t tools.Tool) error {
		return f(w, r, call{Caller: who, tool: t, coll: s.o.Mongo.DB(t.Database()).Collection(model.CollAnalyses)})
	})
}

// failField writes a *FieldError as 400 invalid_field naming the field, anything else as
// httpx.Fail does.
func failField(w http.ResponseWriter, r *http.Request, err error) {
	var fe *FieldError
	if errors.As(err, &fe) {
		httpx.WriteJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]string{
			"code": "invalid_field", "message": fe.Error(), "field": fe.Field}})
		return
	}
	httpx.Fail(w, r, err)
}

// View is an analysis as the API answers it and as webhooks carry it.
type View struct {
	ID        string     `json:"id"`
	Tool      string     `json:"tool"`
	IPAddress string     `json:"ipAddress,omitempty"`
	Result    jsonDoc    `json:"result"`
	Metadata  jsonDoc    `json:"metadata"`
	CreatedAt time.Time  `json:"createdAt"`
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

// doc is the stored document: the seed's IPAnalysis shape for every tool, expiresAt absent
// when the plan keeps analyses for ever.
type doc struct {
	ID        bson.ObjectID `bson:"_id"`
	UserID    bson.ObjectID `bson:"userId"`
	IPAddress string        `bson:"ipAddress,omitempty"`
	Result    bson.D        `bson:"result"`
	Metadata  bson.D        `bson:"metadata"`
	CreatedAt time.Time     `bson:"createdAt"`
	ExpiresAt *time.Time    `bson:"expiresAt,omitempty"`
}

func (d *doc) view(tool string) View {
	return View{ID: d.ID.Hex(), Tool: tool, IPAddress: d.IPAddress, Result: jsonDoc(d.Result), Metadata: jsonDoc(d.Metadata),
		CreatedAt: d.CreatedAt.UTC(), ExpiresAt: d.ExpiresAt}
}

// jsonDoc writes a bson.D as a JSON object in field order (nested documents too).
type jsonDoc bson.D

// MarshalJSON implements json.Marshaler.
func (d jsonDoc) MarshalJSON() ([]byte, error) {
	var b strings.Builder
	b.WriteByte('{')
	for i, e := range d {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(e.Key)
		b.Write(k)
		b.WriteByte(':')
		v, err := json.Marshal(jsonValue(e.Value))
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return []byte(b.String()), nil
}

func jsonValue(v any) any {
	switch x := v.(type) {
	case bson.D:
		return jsonDoc(x)
	case bson.A:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonValue(e)
		}
		return out
	case bson.DateTime:
		return x.Time().UTC()
	default:
		return v
	}
}

// UnmarshalJSON reads an object back (for cached answers), keeping field order at the top.
func (d *jsonDoc) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return errors.New("analyses: cached document is not an object")
	}
	out, ferr := readObject(dec, "cached", 0)
	if ferr != nil {
		return ferr
	}
	*d = jsonDoc(out)
	return nil
}

// Record validates and stores an analysis of tool for c at now, then caches, counts and
// announces it. Invalid input is a *FieldError.
func (s *Service) Record(ctx context.Context, tool string, c Caller, in *Input, now time.Time) (View, error) {
	t, ok := s.o.Tools.Get(tool)
	if !ok {
		return View{}, fmt.Errorf("analyses: unknown tool %q", tool)
	}
	v, err := validate(t.ID, in)
	if err != nil {
		s.analytics.Failed(t.ID, c.UserID, now)
		return View{}, err
	}
	now = now.UTC().Truncate(time.Millisecond)
	d := doc{ID: bson.NewObjectID(), UserID: c.UserID, IPAddress: v.ip, Result: v.result, Metadata: v.metadata, CreatedAt: now}
	if keep := s.o.Retention(c.Plan); keep > 0 {
		exp := now.Add(keep)
		d.ExpiresAt = &exp
	}
	if _, err := s.o.Mongo.DB(t.Database()).Collection(model.CollAnalyses).InsertOne(ctx, d); err != nil {
		return View{}, fmt.Errorf("analyses: insert: %w", err)
	}
	view := d.view(t.ID)
	if v.ip != "" {
		s.cachePut(ctx, t.ID, c.UserID, v.ip, view)
	}
	s.analytics.Recorded(ctx, t.ID, c.UserID, now, v)
	if s.o.Notifier != nil {
		if err := s.o.Notifier.AnalysisCreated(ctx, t.ID, c.UserID, view, v.riskScore); err != nil {
			// The analysis is stored; failing the request now would make the engine post it
			// twice. The queue insert failing is an operational error: log it loudly.
			s.o.Log.Error("analyses: webhooks not queued", "tool", t.ID, "analysisId", view.ID, "err", err)
		}
	}
	return view, nil
}

func (s *Service) create(w http.ResponseWriter, r *http.Request, c call) error {
	var in Input
	if err := httpx.Decode(w, r, &in, 0); err != nil {
		s.analytics.Failed(c.tool.ID, c.UserID, s.o.Now())
		return err
	}
	v, err := s.Record(r.Context(), c.tool.ID, c.Caller, &in, s.o.Now())
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/"+c.tool.ID+"/analyses/"+v.ID)
	httpx.WriteJSON(w, http.StatusCreated, map[string]any{"analysis": v})
	return nil
}

// Page limits of GET /api/{tool}/analyses.
const (
	DefaultLimit = 20
	MaxLimit     = 100
)

func (s *Service) list(w http.ResponseWriter, r *http.Request, c call) error {
	q := r.URL.Query()
	limit := DefaultLimit
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > MaxLimit {
			return fieldErr("limit", "must be an integer from 1 to %d", MaxLimit)
		}
		limit = n
	}
	filter := bson.D{{Key: "userId", Value: c.UserID}}
	if m := q.Get("minRiskScore"); m != "" {
		f, err := strconv.ParseFloat(m, 64)
		if err != nil || f < 0 || f > 100 {
			return fieldErr("minRiskScore", "must be a number from 0 to 100")
		}
		filter = append(filter, bson.E{Key: "result.riskScore", Value: bson.D{{Key: "$gte", Value: f}}})
	}
	if ip := q.Get("ip"); ip != "" {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return fieldErr("ip", "must be an IPv4 or IPv6 address")
		}
		filter = append(filter, bson.E{Key: "ipAddress", Value: a.Unmap().String()})
	}
	if cur := q.Get("cursor"); cur != "" {
		at, id, err := parseCursor(cur)
		if err != nil {
			return fieldErr("cursor", "is not a cursor this API returned")
		}
		filter = append(filter, bson.E{Key: "$or", Value: bson.A{
			bson.D{{Key: "createdAt", Value: bson.D{{Key: "$lt", Value: at}}}},
			bson.D{{Key: "createdAt", Value: at}, {Key: "_id", Value: bson.D{{Key: "$lt", Value: id}}}},
		}})
	}
	cur, err := c.coll.Find(r.Context(), filter, options.Find().
		SetSort(bson.D{{Key: "createdAt", Value: -1}, {Key: "_id", Value: -1}}).SetLimit(int64(limit)+1))
	if err != nil {
		return fmt.Errorf("analyses: list: %w", err)
	}
	var docs []doc
	if err := cur.All(r.Context(), &docs); err != nil {
		return fmt.Errorf("analyses: list: %w", err)
	}
	out := map[string]any{}
	if len(docs) > limit {
		docs = docs[:limit]
		last := docs[limit-1]
		out["nextCursor"] = makeCursor(last.CreatedAt, last.ID)
	}
	views := make([]View, len(docs))
	for i := range docs {
		views[i] = docs[i].view(c.tool.ID)
	}
	out["analyses"] = views
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

func makeCursor(at time.Time, id bson.ObjectID) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at.UnixMilli(), 10) + "." + id.Hex()))
}

func parseCursor(s string) (time.Time, bson.ObjectID, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return time.Time{}, bson.ObjectID{}, fmt.Errorf("analyses: cursor: %w", err)
	}
	ms, hex, ok := strings.Cut(string(b), ".")
	if !ok {
		return time.Time{}, bson.ObjectID{}, errors.New("analyses: cursor: no separator")
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return time.Time{}, bson.ObjectID{}, fmt.Errorf("analyses: cursor: %w", err)
	}
	id, err := bson.ObjectIDFromHex(hex)
	if err != nil {
		return time.Time{}, bson.ObjectID{}, fmt.Errorf("analyses: cursor: %w", err)
	}
	return time.UnixMilli(n).UTC(), id, nil
}

var errNotFound = httpx.Errorf(http.StatusNotFound, "not_found", "no such analysis")

func (s *Service) get(w http.ResponseWriter, r *http.Request, c call) error {
	id, err := bson.ObjectIDFromHex(r.PathValue("id"))
	if err != nil {
		return errNotFound
	}
	var d doc
	err = c.coll.FindOne(r.Context(), bson.D{{Key: "_id", Value: id}, {Key: "userId", Value: c.UserID}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return errNotFound
	}
	if err != nil {
		return fmt.Errorf("analyses: get: %w", err)
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"analysis": d.view(c.tool.ID)})
	return nil
}

// cacheKey is the seed's cache:ipintel:{ip}, followed by the user: analyses are private to
// their user, so one user's answer is never served to another.
func cacheKey(tool, ip string, user bson.ObjectID) string {
	return "cache:" + tool + ":" + ip + ":" + user.Hex()
}

func (s *Service) cachePut(ctx context.Context, tool string, user bson.ObjectID, ip string, v View) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	if err := s.o.KV.Set(ctx, cacheKey(tool, ip, user), b, CacheTTL); err != nil {
		s.o.Log.Warn("analyses: cache set failed", "err", err)
	}
}

func (s *Service) lookup(w http.ResponseWriter, r *http.Request, c call) error {
	if c.tool.ID != "ipintel" {
		return httpx.Errorf(http.StatusNotFound, "not_found", "lookup is an ipintel route")
	}
	a, err := netip.ParseAddr(r.PathValue("ip"))
	if err != nil || a.Zone() != "" {
		return fieldErr("ip", "must be an IPv4 or IPv6 address")
	}
	ip := a.Unmap().String()
	key := cacheKey(c.tool.ID, ip, c.UserID)
	if b, hit, err := s.o.KV.Get(r.Context(), key); err == nil && hit {
		var v View
		if json.Unmarshal(b, &v) == nil {
			w.Header().Set("X-Cache", "HIT")
			httpx.WriteJSON(w, http.StatusOK, map[string]any{"analysis": v, "cached": true})
			return nil
		}
	} else if err != nil {
		s.o.Log.Warn("analyses: cache get failed; reading the database", "err", err)
	}
	var d doc
	err = c.coll.FindOne(r.Context(), bson.D{{Key: "userId", Value: c.UserID}, {Key: "ipAddress", Value: ip}},
		options.FindOne().SetSort(bson.D{{Key: "createdAt", Value: -1}, {Key: "_id", Value: -1}})).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return httpx.Errorf(http.StatusNotFound, "not_found", "no analysis of %s", ip)
	}
	if err != nil {
		return fmt.Errorf("analyses: lookup: %w", err)
	}
	v := d.view(c.tool.ID)
	s.cachePut(r.Context(), c.tool.ID, c.UserID, ip, v)
	w.Header().Set("X-Cache", "MISS")
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"analysis": v, "cached": false})
	return nil
}
