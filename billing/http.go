package billing

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/maula-ai/maula-chat/httpx"
	"github.com/maula-ai/maula-chat/providers"
)

// Routes mounts the billing endpoints. The middleware and the caller's identity come from the
// auth package through these parameters, so billing does not import it:
//
//	GET  /admin/costs?from=YYYY-MM-DD&to=YYYY-MM-DD&groupBy=a[,b][&format=csv][&limit=n][&fresh=1]   (admin)
//	GET  /admin/users/{id}/usage?from&to                                                 (admin)
//	POST /admin/users/{id}/credits {"credits":n,"reason":"...","idempotencyKey":"..."}   (admin)
//	POST /admin/users/{id}/plan    {"plan":"pro"}                                        (admin)
//	GET  /auth/subscription                                                              (user)
func (s *Service) Routes(mux *http.ServeMux, requireUser, requireAdmin func(http.Handler) http.Handler, userID func(ctx context.Context) (bson.ObjectID, bool)) {
	mux.Handle("GET /admin/costs", requireAdmin(http.HandlerFunc(s.handleCosts)))
	mux.Handle("GET /admin/users/{id}/usage", requireAdmin(http.HandlerFunc(s.handleUserUsage)))
	mux.Handle("POST /admin/users/{id}/credits", requireAdmin(http.HandlerFunc(s.handleGrant)))
	mux.Handle("POST /admin/users/{id}/plan", requireAdmin(http.HandlerFunc(s.handleSetPlan)))
	mux.Handle("GET /auth/subscription", requireUser(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := userID(r.Context())
		if !ok {
			httpx.WriteError(w, http.StatusUnauthorized, "unauthorized", "sign in first")
			return
		}
		s.handleSubscription(w, r, id)
	})))
}

// parseRange reads from/to (YYYY-MM-DD, inclusive); the default is the last 30 days.
func (s *Service) parseRange(r *http.Request) (from, to time.Time, err error) {
	to = s.now().UTC()
	from = to.AddDate(0, 0, -29)
	if v := r.URL.Query().Get("from"); v != "" {
		if from, err = time.Parse(time.DateOnly, v); err != nil {
			return from, to, httpx.Errorf(http.StatusBadRequest, "bad_request", "from must be YYYY-MM-DD")
		}
	}
	if v := r.URL.Query().Get("to"); v != "" {
		if to, err = time.Parse(time.DateOnly, v); err != nil {
			return from, to, httpx.Errorf(http.StatusBadRequest, "bad_request", "to must be YYYY-MM-DD")
		}
	}
	if to.Before(from) {
		return from, to, httpx.Errorf(http.StatusBadRequest, "bad_request", "to is before from")
	}
	if to.Sub(from) > 366*24*time.Hour {
		return from, to, httpx.Errorf(http.StatusBadRequest, "bad_request", "at most 366 days per report")
	}
	return from, to, nil
}

// apiError maps billing errors to HTTP answers.
func apiError(err error) error {
	switch {
	case errors.Is(err, ErrBadRequest):
		return &httpx.APIError{Status: http.StatusBadRequest, Code: "bad_request", Message: err.Error(), Err: err}
	case errors.Is(err, ErrUnknownPlan):
		return &httpx.APIError{Status: http.StatusBadRequest, Code: "unknown_plan", Message: err.Error(), Err: err}
	case errors.Is(err, ErrNoSubscription):
		return &httpx.APIError{Status: http.StatusNotFound, Code: "no_subscription", Message: "the user has no subscription", Err: err}
	case errors.Is(err, ErrInsufficientCredits):
		return &httpx.APIError{Status: http.StatusConflict, Code: "insufficient_credits", Message: "the balance cannot go below zero", Err: err}
	}
	return err
}

func (s *Service) handleCosts(w http.ResponseWriter, r *http.Request) {
	from, to, err := s.parseRange(r)
	if err != nil {
		httpx.Fail(w, r, err)
		return
	}
	groupBy, err := ParseGroupBy(r.URL.Query().Get("groupBy"))
	if err != nil {
		httpx.Fail(w, r, apiError(err))
		return
	}
	format := r.URL.Query().Get("format")
	if format != "" && format != "json" && format != "csv" {
		// Before the report: it may take a scan to answer.
		httpx.Fail(w, r, httpx.Errorf(http.StatusBadRequest, "bad_request", "format is json or csv"))
		return
	}
	q := CostQuery{From: from, To: to, GroupBy: groupBy}
	if v := r.URL.Query().Get("fresh"); v != "" {
		if q.Fresh, err = strconv.ParseBool(v); err != nil {
			httpx.Fail(w, r, httpx.Errorf(http.StatusBadRequest, "bad_request", "fresh is 1 or 0"))
			return
		}
	}
	if v := r.URL.Query().Get("limit"); v != "" {
		if q.Limit, err = strconv.Atoi(v); err != nil || q.Limit < 0 {
			httpx.Fail(w, r, httpx.Errorf(http.StatusBadRequest, "bad_request", "limit must be a non-negative integer"))
			return
		}
	}
	rep, err := s.Costs(r.Context(), q)
	if err != nil {
		httpx.Fail(w, r, apiError(err))
		return
	}
	w.Header().Set("X-Cost-Read", rep.Read.String())
	if format == "csv" {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="costs-`+rep.From+`-`+rep.To+`.csv"`)
		_ = rep.WriteCSV(w) // the status is sent: a failed write is the client gone
		return
	}
	httpx.WriteJSON(w, http.StatusOK, rep)
}

func pathUser(r *http.Request) (bson.ObjectID, error) {
	id, err := bson.ObjectIDFromHex(r.PathValue("id"))
	if err != nil {
		return id, httpx.Errorf(http.StatusBadRequest, "bad_request", "user id must be 24 hex characters")
	}
	return id, nil
}

// UserUsage is the answer of GET /admin/users/{id}/usage.
type UserUsage struct {
	UserID  string      `json:"userId"`
	Balance *int64      `json:"balance,omitempty"`
	ByDay   *CostReport `json:"byDay"`
	ByModel *CostReport `json:"byModel"`
	ByTool  *CostReport `json:"byTool"`
}

func (s *Service) handleUserUsage(w http.ResponseWriter, r *http.Request) {
	u, err := pathUser(r)
	if err != nil {
		httpx.Fail(w, r, err)
		return
	}
	from, to, err := s.parseRange(r)
	if err != nil {
		httpx.Fail(w, r, err)
		return
	}
	out := UserUsage{UserID: u.Hex()}
	if b, err := s.Balance(r.Context(), u); err == nil {
		out.Balance = &b
	}
	reps, err := s.userReports(r.Context(), CostQuery{From: from, To: to, UserID: u},
		[][]string{{DimDay}, {DimProvider, DimModel}, {DimTool}})
	if err != nil {
		httpx.Fail(w, r, apiError(err))
		return
	}
	out.ByDay, out.ByModel, out.ByTool = reps[0], reps[1], reps[2]
	httpx.WriteJSON(w, http.StatusOK, out)
}

// GrantRequest is the body of POST /admin/users/{id}/credits.
type GrantRequest struct {
	Credits        int64  `json:"credits"`
	Reason         string `json:"reason"`
	IdempotencyKey string `json:"idempotencyKey,omitempty"`
}

func (s *Service) handleGrant(w http.ResponseWriter, r *http.Request) {
	u, err := pathUser(r)
	if err != nil {
		httpx.Fail(w, r, err)
		return
	}
	var body GrantRequest
	if err := httpx.Decode(w, r, &body, 0); err != nil {
		httpx.Fail(w, r, err)
		return
	}
	if body.Credits == 0 || body.Reason == "" {
		httpx.Fail(w, r, httpx.Errorf(http.StatusBadRequest, "bad_request", "credits (non-zero) and reason are required"))
		return
	}
	key := "grant:" + bson.NewObjectID().Hex()
	if body.IdempotencyKey != "" {
		key = "grant:" + u.Hex() + ":" + body.IdempotencyKey
	}
	bal, err := s.GrantOnce(r.Context(), u, body.Credits, body.Reason, key)
	if err != nil {
		httpx.Fail(w, r, apiError(err))
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"userId": u.Hex(), "balance": bal, "ledgerKey": key})
}

func (s *Service) handleSetPlan(w http.ResponseWriter, r *http.Request) {
	u, err := pathUser(r)
	if err != nil {
		httpx.Fail(w, r, err)
		return
	}
	var body struct {
		Plan string `json:"plan"`
	}
	if err := httpx.Decode(w, r, &body, 0); err != nil {
		httpx.Fail(w, r, err)
		return
	}
	if err := s.SetPlan(r.Context(), u, body.Plan); err != nil {
		httpx.Fail(w, r, apiError(err))
		return
	}
	s.handleSubscription(w, r, u)
}

// SubscriptionView is the answer of GET /auth/subscription.
type SubscriptionView struct {
	Plan             string    `json:"plan"`
	Status           string    `json:"status"`
	Balance          int64     `json:"balance"`
	CreditsPerPeriod int64     `json:"creditsPerPeriod"`
	Policy           string    `json:"policy"`
	MicrosPerCredit  int64     `json:"microsPerCredit,omitempty"`
	PeriodEnd        time.Time `json:"periodEnd"`
	Interval         string    `json:"interval"`
	Reserved         int64     `json:"reserved"` // held by turns in flight
}

// Subscription returns the user's plan, balance and period.
func (s *Service) Subscription(ctx context.Context, userID bson.ObjectID) (*SubscriptionView, error) {
	if err := s.WaitApplied(ctx); err != nil { // the turns answered so far are in it
		return nil, err
	}
	sub, err := s.readSub(ctx, userID)
	if err != nil {
		return nil, err
	}
	if sub == nil {
		return nil, ErrNoSubscription
	}
	v := &SubscriptionView{Plan: sub.Plan, Status: sub.Status, Balance: sub.Features.AICredits, Policy: s.o.Policy,
		PeriodEnd: sub.Billing.NextBillingDate, Interval: sub.Billing.Interval}
	if s.o.Policy == PolicyPerCost {
		v.MicrosPerCredit = s.o.MicrosPerCredit
	}
	if s.o.Plans != nil {
		v.CreditsPerPeriod, _ = s.o.Plans.Credits(sub.Plan)
	}
	for _, h := range sub.Holds {
		if h.Phase == PhaseReserve {
			v.Reserved += h.Credits
		}
	}
	return v, nil
}

func (s *Service) handleSubscription(w http.ResponseWriter, r *http.Request, u bson.ObjectID) {
	v, err := s.Subscription(r.Context(), u)
	if err != nil {
		httpx.Fail(w, r, apiError(err))
		return
	}
	httpx.WriteJSON(w, http.StatusOK, v)
}

// UsageOf converts a ledger usage to the providers' type (for RecoverDangling callbacks and
// reconciliation).
func (u *UsageDoc) UsageOf() providers.Usage {
	if u == nil {
		return providers.Usage{}
	}
	return providers.Usage{Input: u.Input, Output: u.Output, CacheRead: u.CacheRead, CacheWrite: u.CacheWrite, Reasoning: u.Reasoning, Estimated: u.Estimated}
}
