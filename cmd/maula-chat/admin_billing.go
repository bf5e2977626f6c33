package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/maula-ai/maula-chat/billing"
	"github.com/maula-ai/maula-chat/config"
	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/plans"
	"github.com/maula-ai/maula-chat/providers"
	"github.com/maula-ai/maula-chat/tools"
)

// billingPlans adapts the plan table to billing.PlanSource (and billing.PlanPricer).
type billingPlans struct{ t *plans.Table }

// Credits returns the plan's aiCredits per period.
func (p billingPlans) Credits(name string) (int64, bool) {
	pl, ok := p.t.Get(name)
	return pl.AICredits, ok
}

// Period returns the plan's billing period: a year for yearly plans, otherwise 30 days.
func (p billingPlans) Period(name string) time.Duration {
	if pl, ok := p.t.Get(name); ok && pl.Interval == plans.Yearly {
		return 365 * 24 * time.Hour
	}
	return 30 * 24 * time.Hour
}

// Price returns the plan's price for the billing record of a plan change.
func (p billingPlans) Price(name string) (float64, string) {
	pl, _ := p.t.Get(name)
	return pl.Price, pl.Currency
}

// newBillingService opens billing over the configured stores, as serve does.
func newBillingService(ctx context.Context, cfg *config.Config, st *stores) (*billing.Service, error) {
	table, err := plans.FromEnv(os.Getenv)
	if err != nil {
		return nil, err
	}
	prices, err := providers.LoadPricesFile(os.Getenv("MAULA_PRICES"))
	if err != nil {
		return nil, err
	}
	return billing.New(ctx, billing.Options{Mongo: st.mongo, KV: st.kv, Prices: prices, Plans: billingPlans{table},
		Policy: cfg.CreditPolicy, MicrosPerCredit: cfg.MicrosPerCredit, Log: newLogger(cfg.LogFormat, "warn", os.Stderr),
		Locking: lockMode(st)})
}

// billingUserFlag resolves --user (24 hex characters) or --email to a user id.
func billingUserFlag(ctx context.Context, st *stores, id, email string) (bson.ObjectID, error) {
	if id != "" {
		oid, err := bson.ObjectIDFromHex(id)
		if err != nil {
			return oid, usageErr(fmt.Errorf("--user must be 24 hex characters: %w", err))
		}
		return oid, nil
	}
	var u struct {
		ID bson.ObjectID `bson:"_id"`
	}
	err := st.mongo.DB(model.AuthDB).Collection(model.CollUsers).FindOne(ctx, bson.D{{Key: "email", Value: strings.ToLower(email)}}).Decode(&u)
	if err != nil {
		return u.ID, runErr(fmt.Errorf("no user with email %q: %w", email, err))
	}
	return u.ID, nil
}

// runAdminGrantCredits: maula-chat admin grant-credits (--user ID | --email E) --credits N --reason R [--key K]
func runAdminGrantCredits(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("admin grant-credits", flag.ContinueOnError)
	user := fs.String("user", "", "user id (24 hex characters)")
	email := fs.String("email", "", "or the user's email")
	credits := fs.Int64("credits", 0, "credits to add (negative takes back, never below zero)")
	reason := fs.String("reason", "", "why (kept in the ledger; required)")
	key := fs.String("key", "", "idempotency key: running again with the same key grants once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*user == "") == (*email == "") || *credits == 0 || *reason == "" {
		fs.Usage()
		return usageErr(errors.New("one of --user or --email, a non-zero --credits and --reason are required"))
	}
	svc, uid, release, err := openBillingFor(ctx, *user, *email)
	if err != nil {
		return err
	}
	defer release()
	k := "grant:" + bson.NewObjectID().Hex()
	if *key != "" {
		k = "grant:" + uid.Hex() + ":" + *key
	}
	bal, err := svc.GrantOnce(ctx, uid, *credits, *reason, k)
	if err != nil {
		return runErr(err)
	}
	fmt.Printf("granted %d credits to %s: balance %d (ledger %s)\n", *credits, uid.Hex(), bal, k)
	return nil
}

// runAdminSetPlan: maula-chat admin set-plan (--user ID | --email E) --plan P
func runAdminSetPlan(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("admin set-plan", flag.ContinueOnError)
	user := fs.String("user", "", "user id (24 hex characters)")
	email := fs.String("email", "", "or the user's email")
	plan := fs.String("plan", "", "free, pro or enterprise (or a plan of MAULA_PLANS)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*user == "") == (*email == "") || *plan == "" {
		fs.Usage()
		return usageErr(errors.New("one of --user or --email, and --plan are required"))
	}
	svc, uid, release, err := openBillingFor(ctx, *user, *email)
	if err != nil {
		return err
	}
	defer release()
	if err := svc.SetPlan(ctx, uid, *plan); err != nil {
		if errors.Is(err, billing.ErrUnknownPlan) {
			return usageErr(err)
		}
		return runErr(err)
	}
	v, err := svc.Subscription(ctx, uid)
	if err != nil {
		return runErr(err)
	}
	fmt.Printf("%s is on %s: balance %d, period ends %s\n", uid.Hex(), v.Plan, v.Balance, v.PeriodEnd.Format(time.RFC3339))
	return nil
}

// runAdminReconcile: maula-chat admin reconcile [--from YYYY-MM-DD] [--to YYYY-MM-DD]
// Prints every difference and exits 1 when there is any.
func runAdminReconcile(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("admin reconcile", flag.ContinueOnError)
	today := time.Now().UTC().Format(time.DateOnly)
	from := fs.String("from", time.Now().UTC().AddDate(0, 0, -29).Format(time.DateOnly), "first day (UTC)")
	to := fs.String("to", today, "last day (UTC), inclusive")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err1 := time.Parse(time.DateOnly, *from)
	t, err2 := time.Parse(time.DateOnly, *to)
	if err := errors.Join(err1, err2); err != nil || t.Before(f) {
		return usageErr(fmt.Errorf("--from and --to must be YYYY-MM-DD, from ≤ to: %v", err))
	}
	cfg, st, release, err := openAdminStores(ctx)
	if err != nil {
		return err
	}
	defer release()
	prices, err := providers.LoadPricesFile(os.Getenv("MAULA_PRICES"))
	if err != nil {
		return runErr(err)
	}
	// Opening billing replays its journal: rollups a stopped server still carried are written
	// before they are compared.
	if _, err := newBillingService(ctx, cfg, st); err != nil {
		return runErr(err)
	}
	start := time.Now()
	diffs, err := billing.Reconcile(ctx, st.mongo, prices, toolDBs(tools.Default()), f, t)
	if err != nil {
		return runErr(err)
	}
	for _, d := range diffs {
		fmt.Println(d)
	}
	fmt.Fprintf(os.Stderr, "reconcile %s..%s: %d differences (%s)\n", *from, *to, len(diffs), time.Since(start).Round(time.Millisecond))
	if len(diffs) > 0 {
		return runErr(fmt.Errorf("%d differences", len(diffs)))
	}
	return nil
}

// openBillingFor opens the stores and billing for an admin command and resolves its user from
// --user or --email; release closes the stores.
func openBillingFor(ctx context.Context, user, email string) (*billing.Service, bson.ObjectID, func(), error) {
	cfg, st, release, err := openAdminStores(ctx)
	if err != nil {
		return nil, bson.ObjectID{}, nil, err
	}
	svc, err := newBillingService(ctx, cfg, st)
	if err != nil {
		release()
		return nil, bson.ObjectID{}, nil, runErr(err)
	}
	uid, err := billingUserFlag(ctx, st, user, email)
	if err != nil {
		release()
		return nil, bson.ObjectID{}, nil, err
	}
	return svc, uid, release, nil
}
