package analyses

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/internal/testenv"
	"github.com/maula-ai/maula-chat/kv"
	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/store"
	"github.com/maula-ai/maula-chat/tools"
	"go.mongodb.org/mongo-driver/v2/bson"
)

var (
	sharedDB *store.Store
	closeDB  func()
)

func TestMain(m *testing.M) {
	var err error
	sharedDB, closeDB, err = testenv.OpenMongo()
	if err != nil {
		panic(err)
	}
	code := m.Run()
	closeDB()
	os.Exit(code)
}

func body(t testing.TB, s string) *Input {
	t.Helper()
	var in Input
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		t.Fatal(err)
	}
	return &in
}

const ipBody = `{"ipAddress":"%s","result":{"riskScore":%v,"isProxy":false,"isVPN":true,"isTor":%v,"isDatacenter":false,"isBot":false,
"country":"Germany","countryCode":"%s","city":"Berlin","region":"Berlin","latitude":52.5,"longitude":13.4,"timezone":"Europe/Berlin",
"isp":"x","organization":"y","asn":3320,"threatLevel":"high"},"metadata":{"processingTime":%v,"modelVersion":"m1","confidence":0.8}}`

func TestValidateTable(t *testing.T) {
	ok := `{"ipAddress":"::ffff:1.2.3.4","result":{"riskScore":50,"isProxy":false,"isVPN":false,"isTor":false,"isDatacenter":false,"isBot":false,"country":"","countryCode":"","city":"","region":"","latitude":0,"longitude":0,"timezone":"","isp":"","organization":"","asn":0,"threatLevel":"low"},"metadata":{"processingTime":1,"modelVersion":"m","confidence":1}}`
	tests := []struct {
		name, tool, body, field string
	}{
		{"valid ipintel, unknowns empty", "ipintel", ok, ""},
		{"timezone offset", "ipintel", replace(ok, `"timezone":""`, `"timezone":"+05:30"`), ""},
		{"timezone junk", "ipintel", replace(ok, `"timezone":""`, `"timezone":"not a zone!"`), "result.timezone"},
		{"result an array", "ipintel", `{"ipAddress":"1.2.3.4","result":[1],"metadata":{"processingTime":1,"modelVersion":"m","confidence":1}}`, "result"},
		{"no result", "fraudguard", `{"metadata":{"processingTime":1,"modelVersion":"m","confidence":1}}`, "result"},
		{"other tool valid, nested", "smartscore", `{"result":{"riskScore":0,"threatLevel":"medium","a":{"b":[1,2.5,{"c":null}]}},"metadata":{"processingTime":1,"modelVersion":"m","confidence":0}}`, ""},
		{"other tool dotted name", "smartscore", `{"result":{"riskScore":0,"threatLevel":"medium","a":{"b.c":1}},"metadata":{"processingTime":1,"modelVersion":"m","confidence":0}}`, "result.a.b.c"},
		{"other tool riskScore negative", "smartscore", `{"result":{"riskScore":-1,"threatLevel":"low"},"metadata":{"processingTime":1,"modelVersion":"m","confidence":0}}`, "result.riskScore"},
		{"other tool bad ip", "botshield", `{"ipAddress":"1.2.3","result":{"riskScore":1,"threatLevel":"low"},"metadata":{"processingTime":1,"modelVersion":"m","confidence":0}}`, "ipAddress"},
		{"metadata unknown field", "smartscore", `{"result":{"riskScore":1,"threatLevel":"low"},"metadata":{"processingTime":1,"modelVersion":"m","confidence":0,"gpu":"a100"}}`, "metadata.gpu"},
		{"processingTime negative", "smartscore", `{"result":{"riskScore":1,"threatLevel":"low"},"metadata":{"processingTime":-1,"modelVersion":"m","confidence":0}}`, "metadata.processingTime"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := validate(tc.tool, body(t, tc.body))
			if tc.field == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if tc.tool == "ipintel" && v.ip != "1.2.3.4" {
					t.Fatalf("ip %q, want the unmapped 1.2.3.4", v.ip)
				}
				return
			}
			fe, okErr := err.(*FieldError)
			if !okErr || fe.Field != tc.field {
				t.Fatalf("err %v, want a FieldError on %s", err, tc.field)
			}
		})
	}
}

func replace(s, old, new string) string {
	for i := 0; i+len(old) <= len(s); i++ {
		if s[i:i+len(old)] == old {
			return s[:i] + new + s[i+len(old):]
		}
	}
	panic("replace: " + old + " not found")
}

func newService(t testing.TB, now func() time.Time, n Notifier) *Service {
	t.Helper()
	s, err := New(context.Background(), Options{Mongo: sharedDB, KV: kv.NewMemory(), Tools: tools.Default(), Now: now, Notifier: n,
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Retention: func(plan string) time.Duration { return map[string]time.Duration{"free": 7 * 24 * time.Hour}[plan] },
		Identify:  func(context.Context) (Caller, bool) { return Caller{}, false }})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func fmtBody(ip string, risk float64, tor bool, cc string, ms float64) string {
	return sprintf(ipBody, ip, risk, tor, cc, ms)
}

// Analytics count exactly, concurrent requests included: unique IPs, high risk, top lists,
// average processing time, failures; and "keep for ever" plans store no expiresAt.
func TestAnalyticsExact(t *testing.T) {
	day := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	s := newService(t, func() time.Time { return day }, nil)
	user := bson.NewObjectID()
	ips := []string{"1.1.1.1", "2.2.2.2", "3.3.3.3", "1.1.1.1", "2.2.2.2", "1.1.1.1"}
	ccs := []string{"DE", "US", "DE", "DE", "US", "FR"}
	var wg sync.WaitGroup
	const rounds = 5
	for r := range rounds {
		for i := range ips {
			wg.Add(1)
			go func() {
				defer wg.Done()
				risk := float64(10 * (i + 5)) // 50..100: four are >= 70
				if _, err := s.Record(context.Background(), "ipintel", Caller{UserID: user, Plan: "free"},
					body(t, fmtBody(ips[i], risk, i%2 == 0, ccs[i], float64(10*(r+1)))), day); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()
	s.analytics.Failed("ipintel", user, day)
	if err := s.analytics.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var a model.Analytics
	if err := sharedDB.DB("ipintel-db").Collection(model.CollAnalytics).FindOne(context.Background(),
		bson.D{{Key: "userId", Value: user}, {Key: "date", Value: midnight(day)}}).Decode(&a); err != nil {
		t.Fatal(err)
	}
	m := a.Metrics
	n := int64(rounds * len(ips))
	if m.TotalRequests != n+1 || m.SuccessfulRequests != n || m.FailedRequests != 1 || m.UniqueIPs != 3 || m.HighRiskDetections != 4*rounds {
		t.Fatalf("metrics %+v", m)
	}
	if len(m.TopCountries) != 3 || m.TopCountries[0] != (model.CountItem{Country: "DE", Count: 3 * rounds}) || m.TopCountries[2].Country != "FR" {
		t.Fatalf("topCountries %+v", m.TopCountries)
	}
	if m.TopThreats[0] != (model.CountItem{Type: "vpn", Count: n}) || m.TopThreats[1] != (model.CountItem{Type: "tor", Count: 3 * rounds}) {
		t.Fatalf("topThreats %+v", m.TopThreats)
	}
	if m.AverageProcessingTime != 30 { // rounds of 10..50 ms
		t.Fatalf("averageProcessingTime %v", m.AverageProcessingTime)
	}
	// A second flush adds to the same document.
	if _, err := s.Record(context.Background(), "ipintel", Caller{UserID: user, Plan: "enterprise-forever"}, body(t, fmtBody("4.4.4.4", 1, false, "", 1)), day); err != nil {
		t.Fatal(err)
	}
	if err := s.analytics.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = sharedDB.DB("ipintel-db").Collection(model.CollAnalytics).FindOne(context.Background(), bson.D{{Key: "userId", Value: user}}).Decode(&a)
	if a.Metrics.UniqueIPs != 4 || a.Metrics.TotalRequests != n+2 {
		t.Fatalf("after the second flush: %+v", a.Metrics)
	}
	var raw bson.M
	_ = sharedDB.DB("ipintel-db").Collection(model.CollAnalyses).FindOne(context.Background(), bson.D{{Key: "userId", Value: user}, {Key: "ipAddress", Value: "4.4.4.4"}}).Decode(&raw)
	if _, has := raw["expiresAt"]; has {
		t.Fatalf("a plan keeping analyses for ever stored expiresAt: %v", raw)
	}
}

type countingNotifier struct {
	mu    sync.Mutex
	risks []float64
}

func (c *countingNotifier) AnalysisCreated(_ context.Context, tool string, _ bson.ObjectID, _ any, risk float64) error {
	c.mu.Lock()
	c.risks = append(c.risks, risk)
	c.mu.Unlock()
	return nil
}

// BenchmarkRecord is the storage side of POST /api/{tool}/analyses: validate, insert, cache,
// count, notify (a queue insert is measured in the webhooks benchmark and the HTTP one).
func BenchmarkRecord(b *testing.B) {
	s := newService(b, time.Now, &countingNotifier{})
	user := bson.NewObjectID()
	raw := fmtBody("5.6.7.8", 80, true, "DE", 20)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Record(context.Background(), "ipintel", Caller{UserID: user, Plan: "free"}, body(b, raw), time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "analyses/s")
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
