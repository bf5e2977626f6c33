package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/maula-ai/maula-chat/httpx"
	"github.com/maula-ai/maula-chat/kv"
	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/plans"
	"github.com/maula-ai/maula-chat/store"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"golang.org/x/crypto/bcrypt"
)

// Password bounds: bcrypt reads at most 72 bytes, so longer passwords would be silently cut.
const (
	minPasswordChars = 10
	maxPasswordBytes = 72
)

// NewUser is what registration (and `maula-chat admin create-user`) needs.
type NewUser struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	Name     string `json:"name"`
}

// normEmail validates and lower-cases an address; the unique index then makes it unique
// case-insensitively.
func normEmail(raw string) (string, error) {
	e := strings.ToLower(strings.TrimSpace(raw))
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || len(e) > 254 || !strings.Contains(e[strings.LastIndexByte(e, '@'):], ".") {
		return "", httpx.Errorf(http.StatusBadRequest, "invalid_email", "email must be an address like name@example.com")
	}
	return e, nil
}

func checkPassword(pw string) error {
	if utf8.RuneCountInString(pw) < minPasswordChars || len(pw) > maxPasswordBytes || !utf8.ValidString(pw) {
		return httpx.Errorf(http.StatusBadRequest, "invalid_password",
			"password must be at least %d characters and at most %d bytes", minPasswordChars, maxPasswordBytes)
	}
	return nil
}

// Registered is the outcome of creating a user: the documents written and the 50 default
// keys' texts, which exist nowhere else.
type Registered struct {
	User         *model.User
	Subscription *model.Subscription
	Keys         []CreatedKey
}

// CreateUser creates a user with a free subscription and one default API key per tool, as
// registration does (without a session). admin forces the admin role; otherwise the user is an
// admin when their email is in AdminEmails. There are no transactions, so on a failure after
// the user document the documents already written are removed again.
func (s *Service) CreateUser(ctx context.Context, in NewUser, admin bool) (*Registered, error) {
	email, err := normEmail(in.Email)
	if err != nil {
		return nil, err
	}
	if err := checkPassword(in.Password); err != nil {
		return nil, err
	}
	name := strings.TrimSpace(in.Name)
	if name == "" {
		name = email[:strings.IndexByte(email, '@')]
	}
	if len(name) > 100 || !utf8.ValidString(name) {
		return nil, httpx.Errorf(http.StatusBadRequest, "invalid_name", "name is limited to 100 bytes of UTF-8")
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(in.Password), s.o.BcryptCost)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	now := s.now().UTC()
	plan := s.plans.Lookup(plans.Free)
	role := RoleUser
	if admin || slices.Contains(s.o.AdminEmails, email) {
		role = RoleAdmin
	}
	u := &model.User{
		ID: bson.NewObjectID(), Email: email, Password: string(hash), Name: name,
		Subscription: model.UserSubscription{Plan: plan.Name, StartDate: now, Status: "active"},
		CreatedAt:    now, UpdatedAt: now,
		Preferences: model.Preferences{DefaultLLM: model.ProviderClaude, Theme: "dark", Notifications: true},
		Role:        role,
	}
	if _, err := s.users.InsertOne(ctx, u); err != nil {
		if store.IsDuplicateKey(err) {
			return nil, httpx.Errorf(http.StatusConflict, "email_taken", "an account with this email already exists")
		}
		return nil, fmt.Errorf("insert user: %w", err)
	}
	reg, err := s.provision(ctx, u, plan, now)
	if err != nil {
		s.undoUser(u.ID)
		return nil, err
	}
	return reg, nil
}

// provision writes the user's subscription and default keys (one InsertMany of 50).
func (s *Service) provision(ctx context.Context, u *model.User, plan plans.Plan, now time.Time) (*Registered, error) {
	sub := &model.Subscription{
		ID: bson.NewObjectID(), UserID: u.ID, Plan: plan.Name,
		Billing: model.SubscriptionBilling{Amount: plan.Price, Currency: plan.Currency, Interval: plan.Interval,
			NextBillingDate: plan.NextBillingDate(now)},
		Features: model.Features{MaxAPIRequests: plan.MaxAPIRequests, MaxTools: plan.MaxTools,
			AICredits: plan.AICredits, SupportLevel: plan.SupportLevel},
		Status: "active", CreatedAt: now, UpdatedAt: now,
	}
	if _, err := s.subs.InsertOne(ctx, sub); err != nil {
		return nil, fmt.Errorf("insert subscription: %w", err)
	}
	docs, keys, err := s.defaultKeys(u.ID, plan, now)
	if err != nil {
		return nil, err
	}
	batch := make([]any, len(docs))
	for i := range docs {
		batch[i] = docs[i]
	}
	if _, err := s.keys.InsertMany(ctx, batch); err != nil {
		return nil, fmt.Errorf("insert default API keys: %w", err)
	}
	return &Registered{User: u, Subscription: sub, Keys: keys}, nil
}

// undoUser removes what a failed registration wrote, with its own deadline: the request's
// context may be the reason it failed.
func (s *Service) undoUser(uid bson.ObjectID) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := bson.D{{Key: "userId", Value: uid}}
	_, e1 := s.keys.DeleteMany(ctx, f)
	_, e2 := s.subs.DeleteMany(ctx, f)
	_, e3 := s.users.DeleteOne(ctx, bson.D{{Key: "_id", Value: uid}})
	if err := errors.Join(e1, e2, e3); err != nil {
		s.log.Error("cleanup after failed registration incomplete", "userId", uid.Hex(), "err", err)
	}
}

// errBadCredentials is the one answer for an unknown email and a wrong password.
func errBadCredentials() *httpx.APIError {
	return errUnauthorized("invalid_credentials", "email or password is wrong")
}

// loginInput is the body of POST /auth/login.
type loginInput struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	Code     string `json:"code"`
}

// login checks credentials (and the TOTP code when enabled) and returns the user. Unknown
// emails are compared against a dummy hash so both failures cost one bcrypt comparison.
func (s *Service) login(ctx context.Context, in loginInput, ip string) (*model.User, error) {
	email := strings.ToLower(strings.TrimSpace(in.Email))
	if email == "" || in.Password == "" || len(email) > 254 || len(in.Password) > 1024 {
		return nil, httpx.Errorf(http.StatusBadRequest, "bad_request", "email and password are required")
	}
	d, err := s.o.KV.Allow(ctx, "login:"+email+"|"+ip, s.o.LoginAttempts, s.o.LoginWindow)
	if err != nil {
		return nil, fmt.Errorf("login rate limit: %w", err)
	}
	if !d.Allowed {
		return nil, errRateLimited("login", d)
	}
	var u model.User
	err = s.users.FindOne(ctx, bson.D{{Key: "email", Value: email}}).Decode(&u)
	if errors.Is(err, mongo.ErrNoDocuments) {
		_ = bcrypt.CompareHashAndPassword(s.dummy, []byte(in.Password))
		return nil, errBadCredentials()
	}
	if err != nil {
		return nil, fmt.Errorf("find user: %w", err)
	}
	if bcrypt.CompareHashAndPassword([]byte(u.Password), []byte(in.Password)) != nil {
		return nil, errBadCredentials()
	}
	if u.TwoFactorEnabled {
		if in.Code == "" {
			return nil, errUnauthorized("totp_required", "two-factor authentication is on: send the 6-digit code as \"code\"")
		}
		if err := s.checkTOTP(ctx, &u, in.Code); err != nil {
			return nil, err
		}
	}
	return &u, nil
}

// totpOpts are the parameters every authenticator app assumes.
var totpOpts = totp.ValidateOpts{Period: 30, Skew: 1, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// checkTOTP accepts a current code once: a code seen in the last 90 s (the skew window) for
// this user is refused, so an observed code cannot be replayed.
func (s *Service) checkTOTP(ctx context.Context, u *model.User, code string) error {
	bad := errUnauthorized("invalid_code", "the two-factor code is wrong")
	if u.TwoFactorSecret == "" || len(code) != 6 {
		return bad
	}
	ok, err := totp.ValidateCustom(code, u.TwoFactorSecret, s.now(), totpOpts)
	if err != nil || !ok {
		return bad
	}
	d, err := s.o.KV.Allow(ctx, "totp:"+u.ID.Hex()+":"+code, 1, 90*time.Second)
	if err != nil {
		return fmt.Errorf("totp replay guard: %w", err)
	}
	if !d.Allowed {
		return errUnauthorized("invalid_code", "this two-factor code was already used; wait for the next one")
	}
	return nil
}

// totpSetup stores a new, not yet enabled, TOTP secret and returns it with its otpauth URI.
func (s *Service) totpSetup(ctx context.Context, p *Principal) (secret, uri string, err error) {
	u, err := s.userByID(ctx, p.UserID)
	if err != nil {
		return "", "", err
	}
	if u.TwoFactorEnabled {
		return "", "", httpx.Errorf(http.StatusConflict, "totp_enabled", "two-factor authentication is already on; disable it first")
	}
	key, err := totp.Generate(totp.GenerateOpts{Issuer: "MAULA.AI", AccountName: u.Email, Period: 30,
		Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return "", "", fmt.Errorf("generate TOTP secret: %w", err)
	}
	if _, err := s.users.UpdateOne(ctx, bson.D{{Key: "_id", Value: u.ID}, {Key: "twoFactorEnabled", Value: false}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "twoFactorSecret", Value: key.Secret()}, {Key: "updatedAt", Value: s.now().UTC()}}}}); err != nil {
		return "", "", fmt.Errorf("store TOTP secret: %w", err)
	}
	return key.Secret(), key.URL(), nil
}

// totpSwitch turns two-factor on (after setup) or off, each time proving possession of the
// authenticator with a valid code.
func (s *Service) totpSwitch(ctx context.Context, p *Principal, code string, on bool) error {
	u, err := s.userByID(ctx, p.UserID)
	if err != nil {
		return err
	}
	switch {
	case on && u.TwoFactorEnabled:
		return httpx.Errorf(http.StatusConflict, "totp_enabled", "two-factor authentication is already on")
	case on && u.TwoFactorSecret == "":
		return httpx.Errorf(http.StatusConflict, "totp_setup_required", "call POST /auth/2fa/setup first")
	case !on && !u.TwoFactorEnabled:
		return httpx.Errorf(http.StatusConflict, "totp_disabled", "two-factor authentication is not on")
	}
	if err := s.checkTOTP(ctx, u, code); err != nil {
		// The caller is authenticated: a wrong code here is a bad request, not a lost session.
		var ae *httpx.APIError
		if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
			ae.Status = http.StatusBadRequest
		}
		return err
	}
	upd := bson.D{{Key: "$set", Value: bson.D{{Key: "twoFactorEnabled", Value: on}, {Key: "updatedAt", Value: s.now().UTC()}}}}
	if !on {
		upd = append(upd, bson.E{Key: "$unset", Value: bson.D{{Key: "twoFactorSecret", Value: ""}}})
	}
	if _, err := s.users.UpdateOne(ctx, bson.D{{Key: "_id", Value: u.ID}}, upd); err != nil {
		return fmt.Errorf("switch two-factor: %w", err)
	}
	return nil
}

// AllowChat counts one chat message of p against their plan's per-minute limit, shared by
// every instance.
func (s *Service) AllowChat(ctx context.Context, p *Principal) (kv.Decision, error) {
	plan := s.plans.Lookup(p.Plan)
	d, err := s.o.KV.Allow(ctx, "chat:"+p.UserID.Hex(), plan.ChatMessagesPerMinute, time.Minute)
	if err != nil {
		return d, fmt.Errorf("chat rate limit: %w", err)
	}
	return d, nil
}

// InvalidateUser drops every cached session and key entry of a user on every instance, e.g.
// after a role or plan change, so the next request reads the database.
func (s *Service) InvalidateUser(ctx context.Context, uid bson.ObjectID) error {
	id := uid.Hex()
	s.sessCache.RemoveIf(func(e sessionEntry) bool { return e.UserID == id })
	s.keyCache.RemoveIf(func(e keyEntry) bool { return e.UserID == id })
	var errs []error
	if cur, err := s.sessions.Find(ctx, bson.D{{Key: "userId", Value: uid}}); err == nil {
		var docs []model.Session
		if err := cur.All(ctx, &docs); err != nil {
			errs = append(errs, err)
		}
		for _, d := range docs {
			errs = append(errs, s.o.KV.Delete(ctx, sessionCacheKey(d.ID.Hex())))
		}
	} else {
		errs = append(errs, err)
	}
	if keys, err := s.listKeys(ctx, uid); err == nil {
		for _, k := range keys {
			errs = append(errs, s.o.KV.Delete(ctx, keyCacheKey(k.Key)))
		}
	} else {
		errs = append(errs, err)
	}
	errs = append(errs, s.publishInvalidation(ctx, "user", id))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalidate user %s: %w", id, err)
	}
	return nil
}
