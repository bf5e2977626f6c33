package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/config"
	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/protocol"
	"github.com/maula-ai/maula-chat/providers/mockllm"
	"github.com/maula-ai/maula-chat/server"
	"github.com/maula-ai/maula-chat/webhooks"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// toolsServer is the whole server in process (what serveOn builds) with the tool APIs mounted,
// so a test can stop it and start another on the same data directory.
type toolsServer struct {
	base string
	st   *stores
	halt func() // stops serving and the background loops (their last writes done); stores stay open
	stop func() // halt, then close the stores
}

// upstream is the fake LLM upstream, recording the body of every Claude request.
type upstream struct {
	srv    *httptest.Server
	bodies chan []byte
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{bodies: make(chan []byte, 16)}
	mock := mockllm.New(mockllm.Options{Chunks: 4, ChunkSize: 6, ErrorAfter: -1, ResetAfter: -1, InputTokens: 40})
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if strings.HasSuffix(r.URL.Path, "/v1/messages") {
			select {
			case u.bodies <- b:
			default:
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		mock.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func startToolsServer(t testing.TB, dataDir string, up *upstream) *toolsServer {
	t.Helper()
	t.Setenv("ANTHROPIC_API_KEY", "test")
	t.Setenv("ANTHROPIC_BASE_URL", up.srv.URL)
	t.Setenv("MAULA_ECHO_PROVIDER", "1")
	vars := map[string]string{"MAULA_DATA_DIR": dataDir, "MAULA_BCRYPT_COST": "4"}
	cfg, err := config.Load(nil, func(k string) string { return vars[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	st, err := openStores(ctx, cfg, log, false)
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(log, cfg.BasePath)
	a, err := mount(ctx, srv, cfg, st, log)
	if err != nil {
		t.Fatal(err)
	}
	closeTools := func(context.Context) {}
	// Once mount wires mountTools itself, the routes are already there.
	if _, pattern := srv.Mux.Handler(httptest.NewRequest("POST", "/api/ipintel/analyses", nil)); pattern != "POST /api/{tool}/analyses" {
		if closeTools, err = mountTools(ctx, srv, cfg, st, a.auth, log); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, 5*time.Second) }()
	ts := &toolsServer{base: "http://" + ln.Addr().String(), st: st}
	var halted, stopped sync.Once
	ts.halt = func() {
		halted.Do(func() {
			cancel()
			<-served
			cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer ccancel()
			closeTools(cctx)
			a.close(cctx)
		})
	}
	ts.stop = func() {
		ts.halt()
		stopped.Do(st.close)
	}
	t.Cleanup(ts.stop)
	return ts
}

func (s *toolsServer) do(t testing.TB, method, path, cred string, body any) (int, http.Header, map[string]any) {
	t.Helper()
	return doJSON(t, method, s.base+path, cred, body)
}

// registerKeys registers a user and returns the session token and the key texts by tool.
func (s *toolsServer) registerKeys(t testing.TB, email string) (string, map[string]string) {
	t.Helper()
	code, _, out := s.do(t, "POST", "/auth/register", "", map[string]string{"email": email, "password": "correct horse battery"})
	if code != http.StatusCreated {
		t.Fatalf("register: %d %v", code, out)
	}
	keys := map[string]string{}
	for _, k := range out["apiKeys"].([]any) {
		m := k.(map[string]any)
		keys[m["toolName"].(string)] = m["key"].(string)
	}
	return out["token"].(string), keys
}

// hookReceiver records signed deliveries; fail makes it answer 500 while set.
type hookReceiver struct {
	srv  *httptest.Server
	hits chan hookHit
	mu   sync.Mutex
	fail int // answer 500 to this many more requests
}

type hookHit struct {
	header http.Header
	body   []byte
	status int
}

func newHookReceiver(t *testing.T, failFirst int) *hookReceiver {
	r := &hookReceiver{hits: make(chan hookHit, 64), fail: failFirst}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		status := http.StatusNoContent
		if r.fail > 0 {
			r.fail--
			status = http.StatusInternalServerError
		}
		r.mu.Unlock()
		w.WriteHeader(status)
		r.hits <- hookHit{req.Header.Clone(), b, status}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *hookReceiver) next(t *testing.T) hookHit {
	t.Helper()
	select {
	case h := <-r.hits:
		return h
	case <-time.After(20 * time.Second):
		t.Fatal("no webhook delivery in 20 s")
		return hookHit{}
	}
}

func ipAnalysis(ip string, risk float64, level string) map[string]any {
	return map[string]any{
		"ipAddress": ip,
		"result": map[string]any{"riskScore": risk, "isProxy": false, "isVPN": true, "isTor": false, "isDatacenter": true, "isBot": false,
			"country": "Netherlands", "countryCode": "NL", "city": "Amsterdam", "region": "North Holland", "latitude": 52.37, "longitude": 4.9,
			"timezone": "Europe/Amsterdam", "isp": "M247", "organization": "NordVPN", "asn": 9009, "threatLevel": level},
		"metadata": map[string]any{"processingTime": 35.5, "modelVersion": "ipintel-2.4.1", "confidence": 0.9},
	}
}

// with returns a deep copy of m with path (dot-separated) set to v, or deleted when v is nil.
func with(m map[string]any, path string, v any) map[string]any {
	b, _ := json.Marshal(m)
	var c map[string]any
	_ = json.Unmarshal(b, &c)
	cur := c
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		cur = cur[p].(map[string]any)
	}
	if v == nil {
		delete(cur, parts[len(parts)-1])
	} else {
		cur[parts[len(parts)-1]] = v
	}
	return c
}

// The "Done": an engine posting an ipintel analysis with its key makes it the chat's
// context on the next turn and fires analysis.created and threshold.exceeded, signed; invalid
// analyses are 400 naming the field; a read-only key and another tool's key get 403.
func TestToolAPIEndToEnd(t *testing.T) {
	t.Setenv("MAULA_WEBHOOK_ALLOW_PRIVATE", "1")
	up := newUpstream(t)
	s := startToolsServer(t, t.TempDir(), up)
	token, keys := s.registerKeys(t, "engine@example.com")
	rcv := newHookReceiver(t, 0)

	code, _, out := s.do(t, "POST", "/api/ipintel/webhooks", token, map[string]any{"url": rcv.srv.URL + "/maula",
		"events": []string{"analysis.created", "threshold.exceeded"}, "threshold": 80, "headers": map[string]string{"X-Receiver-Token": "r1"}})
	if code != http.StatusCreated {
		t.Fatalf("create webhook: %d %v", code, out)
	}
	secret := out["secret"].(string)

	analysis := ipAnalysis("185.220.101.34", 92, "critical")
	code, hdr, out := s.do(t, "POST", "/api/ipintel/analyses", keys["ipintel"], analysis)
	if code != http.StatusCreated {
		t.Fatalf("post analysis: %d %v", code, out)
	}
	if hdr.Get("X-RateLimit-Limit") == "" {
		t.Fatal("an API-key answer without X-RateLimit-Limit")
	}
	a := out["analysis"].(map[string]any)
	id := a["id"].(string)
	created, _ := time.Parse(time.RFC3339Nano, a["createdAt"].(string))
	expires, _ := time.Parse(time.RFC3339Nano, a["expiresAt"].(string))
	if d := expires.Sub(created); d != 7*24*time.Hour {
		t.Fatalf("expiresAt is %v after createdAt, want the free plan's 7 days", d)
	}

	// Both events arrive, signed with the secret shown once.
	events := map[string]bool{}
	for range 2 {
		h := rcv.next(t)
		ts, _ := strconv.ParseInt(h.header.Get(webhooks.TimestampHeader), 10, 64)
		if err := webhooks.Verify(secret, h.header.Get(webhooks.SignatureHeader), h.body, time.Unix(ts, 0), 0); err != nil {
			t.Fatalf("signature: %v", err)
		}
		if err := webhooks.Verify(secret, h.header.Get(webhooks.SignatureHeader), h.body, time.Now(), 0); err != nil {
			t.Fatalf("signature against the receiver's clock: %v", err)
		}
		if h.header.Get("X-Receiver-Token") != "r1" {
			t.Fatal("custom header missing")
		}
		var env webhooks.Envelope
		if err := json.Unmarshal(h.body, &env); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(h.body), id) {
			t.Fatalf("%s does not carry analysis %s", h.body, id)
		}
		events[env.Event] = true
	}
	if !events["analysis.created"] || !events["threshold.exceeded"] {
		t.Fatalf("events %v", events)
	}

	// The next chat turn has the analysis as context.
	d := dialAt(t, s.base, token)
	defer d.Close()
	if err := d.WriteJSON(protocol.ClientFrame{Type: protocol.TypeChatSend, ID: "q1", Tool: "ipintel", Provider: "claude", Message: "Is this IP risky?"}); err != nil {
		t.Fatal(err)
	}
	select {
	case body := <-up.bodies:
		if !strings.Contains(string(body), "185.220.101.34") || !strings.Contains(string(body), id) {
			t.Fatalf("the provider request has no analysis context: %.600s", body)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no provider request in 20 s")
	}
	if _, end := readUntilEnd(t, d, "q1"); end["type"] != protocol.TypeChatDone {
		t.Fatalf("turn ended with %v", end)
	}

	// Reading it back: by id, list with a filter, lookup (cached at write).
	if code, _, out := s.do(t, "GET", "/api/ipintel/analyses/"+id, keys["ipintel"], nil); code != 200 || out["analysis"].(map[string]any)["ipAddress"] != "185.220.101.34" {
		t.Fatalf("get: %d %v", code, out)
	}
	code, _, _ = s.do(t, "POST", "/api/ipintel/analyses", keys["ipintel"], ipAnalysis("73.162.88.21", 8, "low"))
	if code != 201 {
		t.Fatalf("second analysis: %d", code)
	}
	rcv.next(t) // its analysis.created
	code, _, out = s.do(t, "GET", "/api/ipintel/analyses?minRiskScore=50", token, nil)
	if list := out["analyses"].([]any); code != 200 || len(list) != 1 || list[0].(map[string]any)["id"] != id {
		t.Fatalf("minRiskScore list: %d %v", code, out)
	}
	code, _, out = s.do(t, "GET", "/api/ipintel/analyses?limit=1", token, nil)
	if list := out["analyses"].([]any); code != 200 || len(list) != 1 || list[0].(map[string]any)["ipAddress"] != "73.162.88.21" || out["nextCursor"] == nil {
		t.Fatalf("page 1: %d %v", code, out)
	}
	code, _, out = s.do(t, "GET", "/api/ipintel/analyses?limit=1&cursor="+out["nextCursor"].(string), token, nil)
	if list := out["analyses"].([]any); code != 200 || len(list) != 1 || list[0].(map[string]any)["id"] != id || out["nextCursor"] != nil {
		t.Fatalf("page 2: %d %v", code, out)
	}
	code, hdr, out = s.do(t, "GET", "/api/ipintel/lookup/185.220.101.34", keys["ipintel"], nil)
	if code != 200 || hdr.Get("X-Cache") != "HIT" || out["analysis"].(map[string]any)["id"] != id {
		t.Fatalf("lookup: %d %s %v", code, hdr.Get("X-Cache"), out)
	}
	if code, _, _ := s.do(t, "GET", "/api/ipintel/lookup/9.9.9.9", keys["ipintel"], nil); code != 404 {
		t.Fatalf("lookup of an unknown IP: %d", code)
	}
	// Another user sees none of it.
	token2, keys2 := s.registerKeys(t, "other@example.com")
	if code, _, _ := s.do(t, "GET", "/api/ipintel/analyses/"+id, token2, nil); code != 404 {
		t.Fatalf("another user's analysis: %d", code)
	}
	if code, _, _ := s.do(t, "GET", "/api/ipintel/lookup/185.220.101.34", keys2["ipintel"], nil); code != 404 {
		t.Fatalf("another user's lookup: %d", code)
	}

	// 400 naming the failing field.
	bad := []struct {
		name, tool, field string
		body              map[string]any
	}{
		{"riskScore over 100", "ipintel", "result.riskScore", with(analysis, "result.riskScore", 101)},
		{"riskScore missing", "ipintel", "result.riskScore", with(analysis, "result.riskScore", nil)},
		{"riskScore a string", "ipintel", "result.riskScore", with(analysis, "result.riskScore", "high")},
		{"threatLevel unknown", "ipintel", "result.threatLevel", with(analysis, "result.threatLevel", "severe")},
		{"flag missing", "ipintel", "result.isTor", with(analysis, "result.isTor", nil)},
		{"flag not a boolean", "ipintel", "result.isVPN", with(analysis, "result.isVPN", "yes")},
		{"latitude", "ipintel", "result.latitude", with(analysis, "result.latitude", 91)},
		{"countryCode", "ipintel", "result.countryCode", with(analysis, "result.countryCode", "Netherlands")},
		{"asn fraction", "ipintel", "result.asn", with(analysis, "result.asn", 9009.5)},
		{"unknown result field", "ipintel", "result.score", with(analysis, "result.score", 3)},
		{"no ipAddress", "ipintel", "ipAddress", with(analysis, "ipAddress", nil)},
		{"bad ipAddress", "ipintel", "ipAddress", with(analysis, "ipAddress", "999.1.1.1")},
		{"confidence", "ipintel", "metadata.confidence", with(analysis, "metadata.confidence", 1.5)},
		{"no metadata", "ipintel", "metadata", with(analysis, "metadata", nil)},
		{"other tool: no threatLevel", "fraudguard", "result.threatLevel", map[string]any{"result": map[string]any{"riskScore": 3}, "metadata": analysis["metadata"]}},
		{"other tool: $ field", "fraudguard", "result.$where", map[string]any{"result": map[string]any{"riskScore": 3, "threatLevel": "low", "$where": 1}, "metadata": analysis["metadata"]}},
	}
	for _, tc := range bad {
		t.Run("invalid/"+tc.name, func(t *testing.T) {
			code, _, out := s.do(t, "POST", "/api/"+tc.tool+"/analyses", keys[tc.tool], tc.body)
			e, _ := out["error"].(map[string]any)
			if code != 400 || e["field"] != tc.field || !strings.Contains(e["message"].(string), tc.field) {
				t.Fatalf("%d %v, want 400 naming %s", code, out, tc.field)
			}
		})
	}
	// Other tools keep their own fields.
	code, _, out = s.do(t, "POST", "/api/fraudguard/analyses", keys["fraudguard"], map[string]any{
		"result":   map[string]any{"riskScore": 88, "threatLevel": "critical", "transactionId": "txn_1", "signals": []string{"card_testing"}, "amount": 12.5},
		"metadata": analysis["metadata"]})
	if code != 201 || out["analysis"].(map[string]any)["result"].(map[string]any)["transactionId"] != "txn_1" {
		t.Fatalf("fraudguard analysis: %d %v", code, out)
	}

	// 403: a key without write, another tool's key.
	code, _, out = s.do(t, "POST", "/auth/api-keys", token, map[string]any{"toolName": "ipintel", "name": "read only", "permissions": []string{"read"}})
	if code != 201 {
		t.Fatalf("create read-only key: %d %v", code, out)
	}
	readOnly := out["apiKey"].(map[string]any)["key"].(string)
	forbidden := []struct {
		name, method, path, key, code string
	}{
		{"read-only key posts", "POST", "/api/ipintel/analyses", readOnly, "insufficient_permission"},
		{"read-only key creates a webhook", "POST", "/api/ipintel/webhooks", readOnly, "insufficient_permission"},
		{"fraudguard key posts to ipintel", "POST", "/api/ipintel/analyses", keys["fraudguard"], "wrong_tool"},
		{"fraudguard key reads ipintel", "GET", "/api/ipintel/analyses", keys["fraudguard"], "wrong_tool"},
		{"fraudguard key looks up", "GET", "/api/ipintel/lookup/185.220.101.34", keys["fraudguard"], "wrong_tool"},
		{"fraudguard key lists ipintel webhooks", "GET", "/api/ipintel/webhooks", keys["fraudguard"], "wrong_tool"},
	}
	for _, tc := range forbidden {
		t.Run("forbidden/"+tc.name, func(t *testing.T) {
			var body any
			if tc.method == "POST" {
				body = analysis
			}
			code, _, out := s.do(t, tc.method, tc.path, tc.key, body)
			if code != 403 || out["error"].(map[string]any)["code"] != tc.code {
				t.Fatalf("%d %v, want 403 %s", code, out, tc.code)
			}
		})
	}
	if code, _, _ := s.do(t, "GET", "/api/ipintel/analyses", readOnly, nil); code != 200 {
		t.Fatalf("a read-only key may read: %d", code)
	}
}

// A delivery whose first attempt failed is retried by the next server started on the same
// data after a restart.
func TestWebhookRetrySurvivesRestart(t *testing.T) {
	t.Setenv("MAULA_WEBHOOK_ALLOW_PRIVATE", "1")
	t.Setenv("MAULA_WEBHOOK_RETRY_BASE", "300ms")
	up := newUpstream(t)
	dir := t.TempDir()
	s := startToolsServer(t, dir, up)
	token, keys := s.registerKeys(t, "restart@example.com")
	rcv := newHookReceiver(t, 1)
	code, _, out := s.do(t, "POST", "/api/ipintel/webhooks", token, map[string]any{"url": rcv.srv.URL,
		"events": []string{"analysis.created"}, "retryPolicy": map[string]any{"maxRetries": 3, "backoff": "linear"}})
	if code != 201 {
		t.Fatalf("webhook: %d %v", code, out)
	}
	if code, _, out := s.do(t, "POST", "/api/ipintel/analyses", keys["ipintel"], ipAnalysis("45.83.91.140", 71, "high")); code != 201 {
		t.Fatalf("analysis: %d %v", code, out)
	}
	first := rcv.next(t)
	if first.status != 500 {
		t.Fatalf("first attempt answered %d", first.status)
	}
	s.stop()
	// Nothing arrives while no server runs (the retry is in the queue collection).
	s2 := startToolsServer(t, dir, up)
	second := rcv.next(t)
	if second.status != 204 || second.header.Get(webhooks.DeliveryHeader) != first.header.Get(webhooks.DeliveryHeader) {
		t.Fatalf("retry after restart: %d, delivery %s vs %s", second.status, second.header.Get(webhooks.DeliveryHeader), first.header.Get(webhooks.DeliveryHeader))
	}
	// Halting waits for the worker's pass, so the attempt is recorded.
	s2.halt()
	var d webhooks.Delivery
	if err := s2.st.mongo.DB("maula-auth-db").Collection(webhooks.CollDeliveryLog).FindOne(context.Background(), bson.D{}).Decode(&d); err != nil {
		t.Fatal(err)
	}
	if d.Status != webhooks.StatusDelivered || d.Attempts != 2 {
		t.Fatalf("delivery %+v", d)
	}
	var h model.Webhook
	_ = s2.st.mongo.DB("ipintel-db").Collection(model.CollWebhooks).FindOne(context.Background(), bson.D{}).Decode(&h)
	if h.Stats.TotalSent != 2 || h.Stats.SuccessCount != 1 || h.Stats.FailureCount != 1 {
		t.Fatalf("stats %+v", h.Stats)
	}
}

// BenchmarkAnalysesWithKey measures POST /api/ipintel/analyses over HTTP with an API key,
// through the whole server: key authentication, rate limit, validation, insert, cache,
// analytics, webhook lookup, api_logs. Run with -cpu to set the concurrent posters.
func BenchmarkAnalysesWithKey(b *testing.B) {
	b.Setenv("MAULA_PLANS", writePlans(b))
	up := newUpstream(b)
	s := startToolsServer(b, b.TempDir(), up)
	code, _, out := s.do(b, "POST", "/auth/register", "", map[string]string{"email": "bench@example.com", "password": "correct horse battery"})
	if code != http.StatusCreated {
		b.Fatalf("register: %d %v", code, out)
	}
	var key string
	for _, k := range out["apiKeys"].([]any) {
		if m := k.(map[string]any); m["toolName"] == "ipintel" {
			key = m["key"].(string)
		}
	}
	body, _ := json.Marshal(ipAnalysis("185.220.101.34", 92, "critical"))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("POST", s.base+"/api/ipintel/analyses", bytes.NewReader(body))
			req.Header.Set("X-API-Key", key)
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "analyses/s")
}

// writePlans writes a plan table whose free plan allows a benchmark's request rate.
func writePlans(b *testing.B) string {
	p := b.TempDir() + "/plans.json"
	data := `{"plans":[{"name":"free","aiCredits":100,"maxAPIRequests":100000000,"maxTools":50,"supportLevel":"basic",
"chatMessagesPerMinute":10,"apiKeyRequestsPerMinute":10000000,"apiKeyRequestsPerDay":100000000,"analysisRetentionDays":7,
"price":0,"currency":"USD","interval":"monthly"}]}`
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		b.Fatal(err)
	}
	return p
}

// demo-data records its samples through the validation for a registered user.
func TestDemoData(t *testing.T) {
	up := newUpstream(t)
	s := startToolsServer(t, t.TempDir(), up)
	token, _ := s.registerKeys(t, "demo@example.com")
	n, err := writeDemoData(context.Background(), s.st, "demo@example.com", time.Now(), nil)
	if err != nil || n != len(demoSamples()) {
		t.Fatalf("writeDemoData = %d, %v", n, err)
	}
	code, _, out := s.do(t, "GET", "/api/ipintel/analyses", token, nil)
	if list := out["analyses"].([]any); code != 200 || len(list) != 6 || list[0].(map[string]any)["ipAddress"] != "193.32.249.136" {
		t.Fatalf("ipintel analyses: %d %v", code, out)
	}
	if _, err := writeDemoData(context.Background(), s.st, "nobody@example.com", time.Now(), nil); err == nil {
		t.Fatal("an unknown email was accepted")
	}
}
