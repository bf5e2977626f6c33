package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/maula-ai/maula-chat/analyses"
	"github.com/maula-ai/maula-chat/config"
	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/plans"
	"github.com/maula-ai/maula-chat/store"
	"github.com/maula-ai/maula-chat/tools"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// runDemoData is `maula-chat demo-data --email E [serve flags]`: it records realistic sample
// analyses for that user in ipintel, fraudguard, botshield and emaildefender (spread over the
// last two days, so the chat has context and the analytics have a shape), through the same
// validation and storage as POST /api/{tool}/analyses. Webhooks are not fired. With the
// embedded database, run it while the server is stopped.
func runDemoData(ctx context.Context, args []string) error {
	email, rest, err := demoArgs(args)
	if err != nil {
		return usageErr(err)
	}
	cfg, err := config.Load(rest, os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg.LogFormat, cfg.LogLevel, os.Stderr)
	st, err := openStores(ctx, cfg, log, false)
	if err != nil {
		return err
	}
	defer st.close()
	n, err := writeDemoData(ctx, st, email, time.Now(), log)
	if err != nil {
		return runErr(err)
	}
	fmt.Fprintf(os.Stderr, "demo-data: recorded %d analyses for %s\n", n, email)
	return nil
}

// demoArgs takes --email (or -email, --email=E) out of args and returns the rest for config.
func demoArgs(args []string) (string, []string, error) {
	var email string
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--email" || a == "-email":
			if i+1 >= len(args) {
				return "", nil, errors.New("--email needs a value")
			}
			email = args[i+1]
			i++
		case strings.HasPrefix(a, "--email=") || strings.HasPrefix(a, "-email="):
			_, email, _ = strings.Cut(a, "=")
		case a == "-h" || a == "--help":
			return "", nil, errors.New("usage: maula-chat demo-data --email E [serve flags]")
		default:
			rest = append(rest, a)
		}
	}
	email = strings.ToLower(strings.TrimSpace(email))
	if email == "" {
		return "", nil, errors.New("usage: maula-chat demo-data --email E [serve flags]")
	}
	return email, rest, nil
}

// demoAnalysis is one sample: a tool, an age, and the body an engine would post.
type demoAnalysis struct {
	tool string
	age  time.Duration
	body string
}

func ipDemo(ip string, risk float64, proxy, vpn, tor, dc, bot bool, country, cc, city, region string, lat, lon float64, tz, isp, org string, asn int64, level string, ms float64, conf float64) string {
	b, _ := json.Marshal(map[string]any{
		"ipAddress": ip,
		"result": map[string]any{"riskScore": risk, "isProxy": proxy, "isVPN": vpn, "isTor": tor, "isDatacenter": dc, "isBot": bot,
			"country": country, "countryCode": cc, "city": city, "region": region, "latitude": lat, "longitude": lon,
			"timezone": tz, "isp": isp, "organization": org, "asn": asn, "threatLevel": level},
		"metadata": map[string]any{"processingTime": ms, "modelVersion": "ipintel-2.4.1", "confidence": conf},
	})
	return string(b)
}

func demoSamples() []demoAnalysis {
	h := time.Hour
	return []demoAnalysis{
		{"ipintel", 47 * h, ipDemo("185.220.101.34", 92, false, false, true, true, false, "Germany", "DE", "Frankfurt am Main", "Hesse", 50.1109, 8.6821, "Europe/Berlin", "Zwiebelfreunde e.V.", "Tor exit relay", 208294, "critical", 41.2, 0.97)},
		{"ipintel", 40 * h, ipDemo("73.162.88.21", 8, false, false, false, false, false, "United States", "US", "San Jose", "California", 37.3382, -121.8863, "America/Los_Angeles", "Comcast Cable", "Comcast Cable Communications", 7922, "low", 18.7, 0.93)},
		{"ipintel", 31 * h, ipDemo("45.83.91.140", 71, false, true, false, true, false, "Netherlands", "NL", "Amsterdam", "North Holland", 52.3676, 4.9041, "Europe/Amsterdam", "M247 Europe", "NordVPN", 9009, "high", 35.0, 0.88)},
		{"ipintel", 22 * h, ipDemo("103.152.220.17", 64, true, false, false, true, true, "Singapore", "SG", "Singapore", "Central Singapore", 1.3521, 103.8198, "Asia/Singapore", "DigitalOcean", "DigitalOcean, LLC", 14061, "medium", 29.9, 0.81)},
		{"ipintel", 9 * h, ipDemo("81.2.69.142", 15, false, false, false, false, false, "United Kingdom", "GB", "London", "England", 51.5072, -0.1276, "Europe/London", "BT", "British Telecommunications PLC", 2856, "low", 16.4, 0.95)},
		{"ipintel", 2 * h, ipDemo("193.32.249.136", 85, false, true, false, true, true, "Sweden", "SE", "Stockholm", "Stockholm County", 59.3293, 18.0686, "Europe/Stockholm", "31173 Services AB", "Mullvad VPN", 39351, "high", 38.3, 0.9)},
		{"fraudguard", 30 * h, `{"result":{"riskScore":88,"threatLevel":"critical","transactionId":"txn_9f2c41","amount":1249.99,"currency":"USD","signals":["card_testing","velocity_spike","billing_shipping_mismatch"],"threats":["card_testing","velocity"],"countryCode":"BR","recommendation":"block"},"metadata":{"processingTime":62.5,"modelVersion":"fraudguard-5.2.0","confidence":0.91}}`},
		{"fraudguard", 6 * h, `{"result":{"riskScore":22,"threatLevel":"low","transactionId":"txn_a81e07","amount":42.0,"currency":"EUR","signals":[],"countryCode":"FR","recommendation":"approve"},"metadata":{"processingTime":48.1,"modelVersion":"fraudguard-5.2.0","confidence":0.96}}`},
		{"botshield", 20 * h, `{"ipAddress":"34.141.20.9","result":{"riskScore":95,"threatLevel":"critical","sessionId":"s_77c1","userAgent":"python-requests/2.31","requestsPerMinute":640,"headless":true,"threats":["scraper","credential_stuffing"],"verdict":"bot"},"metadata":{"processingTime":12.2,"modelVersion":"botshield-3.0.4","confidence":0.99}}`},
		{"botshield", 3 * h, `{"ipAddress":"86.12.140.77","result":{"riskScore":12,"threatLevel":"low","sessionId":"s_91ab","userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) Safari/605.1.15","requestsPerMinute":7,"headless":false,"verdict":"human"},"metadata":{"processingTime":9.8,"modelVersion":"botshield-3.0.4","confidence":0.94}}`},
		{"emaildefender", 12 * h, `{"result":{"riskScore":77,"threatLevel":"high","email":"j.doe+promo@tempmail.dev","disposable":true,"domainAgeDays":11,"mxValid":true,"breached":false,"threatType":"disposable_email"},"metadata":{"processingTime":21.0,"modelVersion":"emaildefender-1.8.2","confidence":0.87}}`},
	}
}

// writeDemoData records the samples for the user with email, each at now minus its age.
func writeDemoData(ctx context.Context, st *stores, email string, now time.Time, log *slog.Logger) (int, error) {
	var u model.User
	err := st.mongo.DB(store.AuthDB).Collection(model.CollUsers).FindOne(ctx, bson.D{{Key: "email", Value: email}}).Decode(&u)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return 0, fmt.Errorf("no user %s: register first (POST /auth/register or maula-chat admin create-user)", email)
	}
	if err != nil {
		return 0, fmt.Errorf("find user: %w", err)
	}
	table, err := plans.FromEnv(os.Getenv)
	if err != nil {
		return 0, usageErr(&config.SettingError{Setting: plans.EnvVar, Err: err})
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if log != nil {
		quiet = log
	}
	svc, err := analyses.New(ctx, analyses.Options{Mongo: st.mongo, KV: st.kv, Tools: tools.Default(), Log: quiet,
		Retention: func(plan string) time.Duration { return table.Lookup(plan).AnalysisRetention() },
		Identify:  func(context.Context) (analyses.Caller, bool) { return analyses.Caller{}, false }})
	if err != nil {
		return 0, err
	}
	caller := analyses.Caller{UserID: u.ID, Plan: u.Subscription.Plan}
	n := 0
	for _, d := range demoSamples() {
		var in analyses.Input
		if err := json.Unmarshal([]byte(d.body), &in); err != nil {
			return n, fmt.Errorf("sample %s: %w", d.tool, err)
		}
		if _, err := svc.Record(ctx, d.tool, caller, &in, now.Add(-d.age)); err != nil {
			return n, fmt.Errorf("sample %s: %w", d.tool, err)
		}
		n++
	}
	if err := svc.Analytics().Flush(ctx); err != nil {
		return n, fmt.Errorf("analytics: %w", err)
	}
	return n, nil
}
