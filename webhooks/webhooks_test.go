package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/internal/testenv"
	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/store"
	"github.com/maula-ai/maula-chat/tools"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// clock is a settable clock for retry intervals.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// hit is one request a receiver got.
type hit struct {
	header http.Header
	body   []byte
}

// receiver answers the statuses in script in turn (then 200) and records every request.
type receiver struct {
	mu     sync.Mutex
	script []int
	hits   []hit
	srv    *httptest.Server
}

func newReceiver(t *testing.T, script ...int) *receiver {
	r := &receiver{script: script}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.hits = append(r.hits, hit{req.Header.Clone(), b})
		code := http.StatusOK
		if len(r.script) > 0 {
			code, r.script = r.script[0], r.script[1:]
		}
		r.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) got() []hit {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hit(nil), r.hits...)
}

var (
	mongoOnce sync.Once
	sharedDB  *store.Store
	closeDB   func()
)

func TestMain(m *testing.M) {
	code := m.Run()
	if closeDB != nil {
		closeDB()
	}
	os.Exit(code)
}

func db(t *testing.T) *store.Store {
	t.Helper()
	mongoOnce.Do(func() {
		var err error
		sharedDB, closeDB, err = testenv.OpenMongo()
		if err != nil {
			t.Fatal(err)
		}
	})
	if sharedDB == nil {
		t.Fatal("no database")
	}
	return sharedDB
}

type fixture struct {
	svc  *Service
	clk  *clock
	user bson.ObjectID
	mux  *http.ServeMux
}

func newFixture(t *testing.T, st *store.Store, clk *clock, mod func(*Options)) *fixture {
	t.Helper()
	user := bson.NewObjectID()
	o := Options{Mongo: st, Tools: tools.Default(), Now: clk.Now, AllowPrivate: true, RetryBase: 10 * time.Second,
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Identify: func(context.Context) (bson.ObjectID, bool) { return user, true }}
	if mod != nil {
		mod(&o)
	}
	svc, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	svc.Routes(mux, func(h http.Handler) http.Handler { return h })
	return &fixture{svc: svc, clk: clk, user: user, mux: mux}
}

func (f *fixture) do(t *testing.T, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req := httptest.NewRequest(method, path, rd)
	w := httptest.NewRecorder()
	f.mux.ServeHTTP(w, req)
	var out map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &out)
	return w.Code, out
}

func (f *fixture) create(t *testing.T, body map[string]any) (id, secret string) {
	t.Helper()
	code, out := f.do(t, "POST", "/api/ipintel/webhooks", body)
	if code != http.StatusCreated {
		t.Fatalf("create webhook: %d %v", code, out)
	}
	return out["webhook"].(map[string]any)["id"].(string), out["secret"].(string)
}

func TestSignVerify(t *testing.T) {
	now := time.Unix(1_767_225_600, 0)
	body := []byte(`{"event":"analysis.created"}`)
	good := SignatureValue("whsec_k", now.Unix(), body)
	tests := []struct {
		name, secret, header string
		body                 []byte
		at                   time.Time
		want                 error
	}{
		{"valid", "whsec_k", good, body, now, nil},
		{"valid within tolerance", "whsec_k", good, body, now.Add(4 * time.Minute), nil},
		{"stale", "whsec_k", good, body, now.Add(6 * time.Minute), ErrStaleTimestamp},
		{"wrong secret", "whsec_x", good, body, now, ErrSignatureMismatch},
		{"tampered body", "whsec_k", good, []byte(`{"event":"x"}`), now, ErrSignatureMismatch},
		{"second v1 matches", "whsec_k", good + ",v1=00ff", body, now, nil},
		{"no t", "whsec_k", "v1=" + Sign("whsec_k", now.Unix(), body), body, now, ErrBadSignatureHeader},
		{"garbage", "whsec_k", "nonsense", body, now, ErrBadSignatureHeader},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(tc.secret, tc.header, tc.body, tc.at, 0)
			if tc.want == nil && err != nil || tc.want != nil && !strings.Contains(errString(err), tc.want.Error()) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestBlockedReason(t *testing.T) {
	tests := []struct {
		ip      string
		blocked bool
	}{
		{"127.0.0.1", true}, {"127.8.9.10", true}, {"::1", true}, {"169.254.169.254", true}, {"fe80::1", true},
		{"10.1.2.3", true}, {"172.16.0.1", true}, {"192.168.1.1", true}, {"fd00::1", true}, {"0.0.0.0", true},
		{"::", true}, {"100.64.0.1", true}, {"::ffff:127.0.0.1", true}, {"::ffff:169.254.169.254", true},
		{"224.0.0.1", true}, {"255.255.255.255", true},
		{"8.8.8.8", false}, {"1.1.1.1", false}, {"2606:4700:4700::1111", false}, {"172.32.0.1", false},
	}
	for _, tc := range tests {
		t.Run(tc.ip, func(t *testing.T) {
			got := blockedReason(netip.MustParseAddr(tc.ip))
			if (got != "") != tc.blocked {
				t.Fatalf("blockedReason(%s) = %q, want blocked=%v", tc.ip, got, tc.blocked)
			}
		})
	}
}

// fakeResolver answers every name with the addresses of its map.
type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	return f[host], nil
}

func TestCreateRefusesPrivateDestinations(t *testing.T) {
	st := db(t)
	res := fakeResolver{
		"metadata.example": {netip.MustParseAddr("169.254.169.254")},
		"mixed.example":    {netip.MustParseAddr("93.184.215.14"), netip.MustParseAddr("10.0.0.5")},
		"public.example":   {netip.MustParseAddr("93.184.215.14")},
	}
	tests := []struct {
		name     string
		url      string
		allow    bool
		wantCode int
	}{
		{"loopback", "http://127.0.0.1:8080/hook", false, 400},
		{"metadata", "http://169.254.169.254/latest/meta-data", false, 400},
		{"ipv6 loopback", "http://[::1]:8080/", false, 400},
		{"localhost name", "http://localhost:8080/", false, 400},
		{"name resolving to metadata", "https://metadata.example/", false, 400},
		{"one private address of several", "https://mixed.example/", false, 400},
		{"private range", "http://10.0.0.8/", false, 400},
		{"public", "https://public.example/hook", false, 201},
		{"loopback allowed", "http://127.0.0.1:8080/hook", true, 201},
		{"metadata allowed", "http://169.254.169.254/", true, 201},
		{"not http", "ftp://public.example/", true, 400},
		{"user info", "https://u:p@public.example/", true, 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, st, &clock{t: time.Now()}, func(o *Options) { o.AllowPrivate, o.Resolver = tc.allow, res })
			code, out := f.do(t, "POST", "/api/ipintel/webhooks", map[string]any{"url": tc.url, "events": []string{EventAnalysisCreated}})
			if code != tc.wantCode {
				t.Fatalf("POST %s: %d %v, want %d", tc.url, code, out, tc.wantCode)
			}
			if code == 400 && !tc.allow && !strings.Contains(tc.name, "http") {
				if e := out["error"].(map[string]any); e["code"] != "blocked_destination" {
					t.Fatalf("error %v, want blocked_destination", e)
				}
			}
		})
	}
}

func TestCRUDValidation(t *testing.T) {
	st := db(t)
	f := newFixture(t, st, &clock{t: time.Now()}, nil)
	tests := []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"no url", map[string]any{"events": []string{EventAnalysisCreated}}, "url"},
		{"no events", map[string]any{"url": "http://127.0.0.1/"}, "events"},
		{"unknown event", map[string]any{"url": "http://127.0.0.1/", "events": []string{"analysis.deleted"}}, "events"},
		{"bad backoff", map[string]any{"url": "http://127.0.0.1/", "events": []string{EventAnalysisCreated}, "retryPolicy": map[string]any{"backoff": "fibonacci"}}, "retryPolicy.backoff"},
		{"too many retries", map[string]any{"url": "http://127.0.0.1/", "events": []string{EventAnalysisCreated}, "retryPolicy": map[string]any{"maxRetries": 11}}, "retryPolicy.maxRetries"},
		{"reserved header", map[string]any{"url": "http://127.0.0.1/", "events": []string{EventAnalysisCreated}, "headers": map[string]string{"X-Maula-Signature": "x"}}, "headers"},
		{"threshold", map[string]any{"url": "http://127.0.0.1/", "events": []string{EventThresholdExceeded}, "threshold": 101}, "threshold"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out := f.do(t, "POST", "/api/ipintel/webhooks", tc.body)
			msg, _ := out["error"].(map[string]any)["message"].(string)
			if code != 400 || !strings.HasPrefix(msg, tc.field+":") {
				t.Fatalf("%d %v, want 400 naming %s", code, out, tc.field)
			}
		})
	}
	id, secret := f.create(t, map[string]any{"url": "http://127.0.0.1:1/x", "events": []string{EventAnalysisCreated}, "headers": map[string]string{"authorization": "Bearer abc"}})
	if !strings.HasPrefix(secret, SecretPrefix) {
		t.Fatalf("secret %q", secret)
	}
	code, got := f.do(t, "GET", "/api/ipintel/webhooks/"+id, nil)
	if code != 200 || strings.Contains(toJSON(got), secret) {
		t.Fatalf("GET: %d %v (the secret is shown once)", code, got)
	}
	code, got = f.do(t, "PATCH", "/api/ipintel/webhooks/"+id, map[string]any{"isActive": false, "retryPolicy": map[string]any{"maxRetries": 5, "backoff": "linear"}})
	w := got["webhook"].(map[string]any)
	if code != 200 || w["isActive"] != false || w["retryPolicy"].(map[string]any)["backoff"] != "linear" {
		t.Fatalf("PATCH: %d %v", code, got)
	}
	if code, got = f.do(t, "GET", "/api/ipintel/webhooks", nil); code != 200 || len(got["webhooks"].([]any)) != 1 {
		t.Fatalf("list: %d %v", code, got)
	}
	// Another tool's list is separate.
	if code, got = f.do(t, "GET", "/api/fraudguard/webhooks", nil); code != 200 || len(got["webhooks"].([]any)) != 0 {
		t.Fatalf("fraudguard list: %d %v", code, got)
	}
	if code, _ := f.do(t, "DELETE", "/api/ipintel/webhooks/"+id, nil); code != 200 {
		t.Fatalf("DELETE: %d", code)
	}
	if code, _ := f.do(t, "GET", "/api/ipintel/webhooks/"+id, nil); code != 404 {
		t.Fatalf("GET after DELETE: %d", code)
	}
}

func toJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// drain runs the worker until nothing is due at the clock's time.
func drain(t *testing.T, s *Service) {
	t.Helper()
	for range 10 {
		n, err := s.RunOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
}

func pending(t *testing.T, st *store.Store) []Delivery {
	t.Helper()
	cur, err := st.DB(store.AuthDB).Collection(CollDeliveries).Find(context.Background(), bson.D{{Key: "status", Value: StatusPending}})
	if err != nil {
		t.Fatal(err)
	}
	var out []Delivery
	if err := cur.All(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// A receiver failing 3 times gets the retries at the policy's intervals, each signed; a
// restart (a new Service on the same queue) between the attempts loses nothing.
func TestRetriesAtPolicyIntervalsAcrossRestart(t *testing.T) {
	st := db(t)
	tests := []struct {
		backoff string
		want    []time.Duration // gaps between attempts, with RetryBase 10 s
	}{
		{BackoffLinear, []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second}},
		{BackoffExponential, []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.backoff, func(t *testing.T) {
			clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			rcv := newReceiver(t, 500, 503, 500)
			f := newFixture(t, st, clk, nil)
			_, secret := f.create(t, map[string]any{"url": rcv.srv.URL + "/hook", "events": []string{EventAnalysisCreated, EventThresholdExceeded},
				"threshold": 90, "retryPolicy": map[string]any{"maxRetries": 3, "backoff": tc.backoff}})
			if err := f.svc.AnalysisCreated(context.Background(), "ipintel", f.user, map[string]any{"riskScore": 50}, 50); err != nil {
				t.Fatal(err)
			}
			svc := f.svc
			for i, gap := range tc.want {
				drain(t, svc)
				if n := len(rcv.got()); n != i+1 {
					t.Fatalf("after attempt %d the receiver got %d requests", i+1, n)
				}
				// Restart: a new instance (new claims owner, empty caches) takes over the queue.
				f2 := newFixture(t, st, clk, nil)
				svc = f2.svc
				clk.Add(gap - time.Second)
				drain(t, svc)
				if n := len(rcv.got()); n != i+1 {
					t.Fatalf("retry %d came %v early", i+1, time.Second)
				}
				clk.Add(time.Second)
			}
			drain(t, svc)
			hits := rcv.got()
			if len(hits) != 4 {
				t.Fatalf("receiver got %d requests, want 4 (1 + 3 retries)", len(hits))
			}
			var prev int64
			for i, h := range hits {
				ts, _ := strconv.ParseInt(h.header.Get(TimestampHeader), 10, 64)
				if err := Verify(secret, h.header.Get(SignatureHeader), h.body, time.Unix(ts, 0), 0); err != nil {
					t.Fatalf("attempt %d: %v", i+1, err)
				}
				if h.header.Get(EventHeader) != EventAnalysisCreated {
					t.Fatalf("attempt %d: event %q (a riskScore of 50 is under the threshold of 90)", i+1, h.header.Get(EventHeader))
				}
				if i > 0 {
					if got := time.Duration(ts-prev) * time.Second; got != tc.want[i-1] {
						t.Fatalf("gap before retry %d = %v, want %v", i, got, tc.want[i-1])
					}
				}
				prev = ts
				if h.header.Get(DeliveryHeader) != hits[0].header.Get(DeliveryHeader) || !bytes.Equal(h.body, hits[0].body) {
					t.Fatal("a retry is not the same delivery")
				}
			}
			var env Envelope
			if err := json.Unmarshal(hits[0].body, &env); err != nil || env.Event != EventAnalysisCreated || env.Tool != "ipintel" {
				t.Fatalf("body %s: %v", hits[0].body, err)
			}
			var h model.Webhook
			_ = st.DB("ipintel-db").Collection(model.CollWebhooks).FindOne(context.Background(), bson.D{{Key: "userId", Value: f.user}}).Decode(&h)
			if h.Stats.TotalSent != 4 || h.Stats.SuccessCount != 1 || h.Stats.FailureCount != 3 || h.Stats.LastSent == nil || h.ConsecutiveFailures != 0 {
				t.Fatalf("stats %+v, consecutive failures %d", h.Stats, h.ConsecutiveFailures)
			}
		})
	}
}

func TestThresholdExceededAndGivingUp(t *testing.T) {
	st := db(t)
	clk := &clock{t: time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)}
	rcv := newReceiver(t, 500, 500, 500, 500)
	f := newFixture(t, st, clk, nil)
	f.create(t, map[string]any{"url": rcv.srv.URL, "events": []string{EventThresholdExceeded}, "threshold": 80,
		"retryPolicy": map[string]any{"maxRetries": 1, "backoff": "linear"}})
	ctx := context.Background()
	_ = f.svc.AnalysisCreated(ctx, "ipintel", f.user, map[string]any{"riskScore": 79.9}, 79.9)
	drain(t, f.svc)
	if n := len(rcv.got()); n != 0 {
		t.Fatalf("threshold.exceeded fired under the threshold (%d)", n)
	}
	_ = f.svc.AnalysisCreated(ctx, "ipintel", f.user, map[string]any{"riskScore": 80}, 80)
	drain(t, f.svc)
	clk.Add(10 * time.Second)
	drain(t, f.svc)
	clk.Add(time.Hour)
	drain(t, f.svc)
	hits := rcv.got()
	if len(hits) != 2 || hits[0].header.Get(EventHeader) != EventThresholdExceeded {
		t.Fatalf("got %d hits, want 2 attempts of threshold.exceeded (maxRetries 1)", len(hits))
	}
	cur, _ := st.DB(store.AuthDB).Collection(CollDeliveryLog).Find(ctx, bson.D{{Key: "userId", Value: f.user}})
	var ds []Delivery
	_ = cur.All(ctx, &ds)
	if len(ds) != 1 || ds[0].Status != StatusFailed || ds[0].Attempts != 2 {
		t.Fatalf("deliveries %+v", ds)
	}
}

// Two instances draining one queue at once make every attempt once.
func TestTwoInstancesDeliverOnce(t *testing.T) {
	st := db(t)
	clk := &clock{t: time.Date(2026, 3, 3, 12, 0, 0, 0, time.UTC)}
	rcv := newReceiver(t)
	a := newFixture(t, st, clk, nil)
	a.create(t, map[string]any{"url": rcv.srv.URL, "events": []string{EventAnalysisCreated}})
	b := newFixture(t, st, clk, func(o *Options) {})
	b.svc.o.Identify = a.svc.o.Identify
	const n = 40
	for i := range n {
		if err := a.svc.AnalysisCreated(context.Background(), "ipintel", a.user, map[string]any{"i": i}, 1); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for _, s := range []*Service{a.svc, b.svc, a.svc, b.svc} {
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = s.RunOnce(context.Background()) }()
	}
	wg.Wait()
	drain(t, a.svc)
	seen := map[string]int{}
	for _, h := range rcv.got() {
		seen[h.header.Get(DeliveryHeader)]++
	}
	if len(seen) != n {
		t.Fatalf("%d deliveries arrived, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("delivery %s arrived %d times", id, c)
		}
	}
}

func TestDisabledAfterRunOfFailures(t *testing.T) {
	st := db(t)
	clk := &clock{t: time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)}
	rcv := newReceiver(t, 500, 500, 500, 500, 500, 500, 500)
	f := newFixture(t, st, clk, func(o *Options) { o.DisableAfter = 3 })
	id, _ := f.create(t, map[string]any{"url": rcv.srv.URL, "events": []string{EventAnalysisCreated}, "retryPolicy": map[string]any{"maxRetries": 5, "backoff": "linear"}})
	_ = f.svc.AnalysisCreated(context.Background(), "ipintel", f.user, map[string]any{}, 1)
	for range 6 {
		drain(t, f.svc)
		clk.Add(time.Minute)
	}
	if n := len(rcv.got()); n != 3 {
		t.Fatalf("receiver got %d attempts, want 3 before the webhook was disabled", n)
	}
	_, out := f.do(t, "GET", "/api/ipintel/webhooks/"+id, nil)
	w := out["webhook"].(map[string]any)
	if w["isActive"] != false || w["disabledReason"] == nil {
		t.Fatalf("webhook %v", w)
	}
	if len(pending(t, st)) != 0 {
		for _, d := range pending(t, st) {
			if d.WebhookID.Hex() == id {
				t.Fatalf("a delivery of the disabled webhook is still pending: %+v", d)
			}
		}
	}
	// Re-enabling resets the run.
	_, out = f.do(t, "PATCH", "/api/ipintel/webhooks/"+id, map[string]any{"isActive": true})
	if w := out["webhook"].(map[string]any); w["isActive"] != true || w["consecutiveFailures"].(float64) != 0 {
		t.Fatalf("re-enabled: %v", w)
	}
}

// A webhook stored with a loopback URL (saved while allowed, or a name that now resolves
// there) is refused at connect time when private destinations are not allowed.
func TestDialRefusedAtDelivery(t *testing.T) {
	st := db(t)
	clk := &clock{t: time.Date(2026, 3, 5, 12, 0, 0, 0, time.UTC)}
	rcv := newReceiver(t)
	open := newFixture(t, st, clk, nil)
	open.create(t, map[string]any{"url": rcv.srv.URL, "events": []string{EventAnalysisCreated}, "retryPolicy": map[string]any{"maxRetries": 0}})
	guarded := newFixture(t, st, clk, func(o *Options) { o.AllowPrivate = false })
	guarded.svc.o.Identify = open.svc.o.Identify
	_ = guarded.svc.AnalysisCreated(context.Background(), "ipintel", open.user, map[string]any{}, 1)
	drain(t, guarded.svc)
	if n := len(rcv.got()); n != 0 {
		t.Fatalf("a loopback receiver got %d requests", n)
	}
	cur, _ := st.DB(store.AuthDB).Collection(CollDeliveryLog).Find(context.Background(), bson.D{{Key: "userId", Value: open.user}})
	var ds []Delivery
	_ = cur.All(context.Background(), &ds)
	if len(ds) != 1 || ds[0].Status != StatusFailed || !strings.Contains(ds[0].LastError, "refusing to connect") {
		t.Fatalf("deliveries %+v", ds)
	}
}

func TestCreditsLowOncePerDay(t *testing.T) {
	st := db(t)
	clk := &clock{t: time.Date(2026, 3, 6, 12, 0, 0, 0, time.UTC)}
	rcv := newReceiver(t)
	f := newFixture(t, st, clk, nil)
	f.create(t, map[string]any{"url": rcv.srv.URL, "events": []string{EventCreditsLow, EventChatCompleted}})
	ctx := context.Background()
	for range 3 {
		if err := f.svc.CreditsLow(ctx, f.user, "ipintel", map[string]any{"balance": 5, "planCredits": 100}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.svc.ChatCompleted(ctx, f.user, "ipintel", map[string]any{"requestId": "r1"}); err != nil {
		t.Fatal(err)
	}
	drain(t, f.svc)
	got := map[string]int{}
	for _, h := range rcv.got() {
		got[h.header.Get(EventHeader)]++
	}
	if got[EventCreditsLow] != 1 || got[EventChatCompleted] != 1 {
		t.Fatalf("events %v", got)
	}
	if !CreditsAreLow(9, 100) || CreditsAreLow(10, 100) || CreditsAreLow(0, 0) {
		t.Fatal("CreditsAreLow")
	}
}

// Once this instance has seen the day's credits.low marker claimed, it does not ask the store
// again (a user under the threshold reaches CreditsLow on every turn): even with the marker
// document gone, the day's second call queues nothing; the next day fires again.
func TestCreditsLowRemembersTheClaim(t *testing.T) {
	st := db(t)
	clk := &clock{t: time.Date(2026, 3, 9, 12, 0, 0, 0, time.UTC)}
	rcv := newReceiver(t)
	f := newFixture(t, st, clk, nil)
	f.create(t, map[string]any{"url": rcv.srv.URL, "events": []string{EventCreditsLow}})
	ctx := context.Background()
	low := func() {
		t.Helper()
		if err := f.svc.CreditsLow(ctx, f.user, "ipintel", map[string]any{"balance": 5, "planCredits": 100}); err != nil {
			t.Fatal(err)
		}
	}
	low()
	if _, err := f.svc.claims.DeleteMany(ctx, bson.D{}); err != nil {
		t.Fatal(err)
	}
	low()
	clk.Add(24 * time.Hour)
	low()
	drain(t, f.svc)
	if n := len(rcv.got()); n != 2 {
		t.Fatalf("%d credits.low deliveries over two days, want 2", n)
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		policy string
		n      int
		want   time.Duration
	}{
		{BackoffLinear, 1, 30 * time.Second}, {BackoffLinear, 3, 90 * time.Second},
		{BackoffExponential, 1, 30 * time.Second}, {BackoffExponential, 4, 240 * time.Second},
		{BackoffExponential, 40, 24 * time.Hour},
	}
	for _, tc := range tests {
		if got := Backoff(tc.policy, 30*time.Second, tc.n); got != tc.want {
			t.Errorf("Backoff(%s, %d) = %v, want %v", tc.policy, tc.n, got, tc.want)
		}
	}
}

// BenchmarkDeliveries measures queued deliveries made per second to a local receiver: the
// worker's passes (find due, claim by insert, post signed, record in bulk, stats per webhook).
func BenchmarkDeliveries(b *testing.B) {
	mongoOnce.Do(func() {
		var err error
		sharedDB, closeDB, err = testenv.OpenMongo()
		if err != nil {
			b.Fatal(err)
		}
	})
	st := sharedDB
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	user := bson.NewObjectID()
	svc, err := New(context.Background(), Options{Mongo: st, Tools: tools.Default(), AllowPrivate: true,
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Identify: func(context.Context) (bson.ObjectID, bool) { return user, true }})
	if err != nil {
		b.Fatal(err)
	}
	hook := model.Webhook{ID: bson.NewObjectID(), UserID: user, URL: srv.URL, Events: []string{EventAnalysisCreated}, IsActive: true,
		Secret: "whsec_bench", RetryPolicy: model.RetryPolicy{MaxRetries: 3, Backoff: BackoffExponential}, Threshold: 70, CreatedAt: time.Now()}
	if _, err := st.DB("ipintel-db").Collection(model.CollWebhooks).InsertOne(context.Background(), hook); err != nil {
		b.Fatal(err)
	}
	payload := map[string]any{"analysis": map[string]any{"id": "x", "riskScore": 42, "ipAddress": "203.0.113.9"}}
	ctx := context.Background()
	// Queue b.N events (not timed), then time the worker draining them.
	b.StopTimer()
	for range b.N {
		if err := svc.AnalysisCreated(ctx, "ipintel", user, payload, 42); err != nil {
			b.Fatal(err)
		}
	}
	b.StartTimer()
	start := time.Now()
	for {
		n, err := svc.RunOnce(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deliveries/s")
}
