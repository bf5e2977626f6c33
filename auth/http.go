package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/maula-ai/maula-chat/httpx"
	"github.com/maula-ai/maula-chat/model"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// CookieName is the browser session cookie: the same JWT as the bearer token.
const CookieName = "maula_session"

// ToolHeader names the tool a request acts on, for API-key requests to routes that have no
// {tool} in their path; the "tool" query parameter does the same.
const ToolHeader = "X-Maula-Tool"

// Routes mounts every /auth/* route on mux.
func (s *Service) Routes(mux *http.ServeMux) {
	mux.Handle("POST /auth/register", s.handle(s.register))
	mux.Handle("POST /auth/login", s.handle(s.loginHandler))
	mux.Handle("GET /auth/verify", s.handle(s.verifyHandler))
	mux.Handle("GET /auth/me", s.RequireUser(s.handle(s.me)))
	mux.Handle("POST /auth/logout", s.requireSession(s.handle(s.logout)))
	mux.Handle("POST /auth/2fa/setup", s.requireSession(s.handle(s.totpSetupHandler)))
	mux.Handle("POST /auth/2fa/enable", s.requireSession(s.handle(s.totpSwitchHandler(true))))
	mux.Handle("POST /auth/2fa/disable", s.requireSession(s.handle(s.totpSwitchHandler(false))))
	mux.Handle("GET /auth/api-keys", s.requireSession(s.handle(s.listKeysHandler)))
	mux.Handle("POST /auth/api-keys", s.requireSession(s.handle(s.createKeyHandler)))
	mux.Handle("POST /auth/api-keys/{id}/rotate", s.requireSession(s.handle(s.rotateKeyHandler)))
	mux.Handle("DELETE /auth/api-keys/{id}", s.requireSession(s.handle(s.deleteKeyHandler)))
	mux.Handle("GET /auth/sessions", s.requireSession(s.handle(s.listSessionsHandler)))
	mux.Handle("DELETE /auth/sessions/{id}", s.requireSession(s.handle(s.deleteSessionHandler)))
}

// handle adapts a handler that returns an error; errors are written by Fail.
func (s *Service) handle(f func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := f(w, r); err != nil {
			Fail(w, r, err)
		}
	})
}

// Fail writes an error as httpx.Fail does, adding the rate-limit headers of a 429 and
// WWW-Authenticate on a 401.
func Fail(w http.ResponseWriter, r *http.Request, err error) {
	var rl *RateLimitError
	if errors.As(err, &rl) {
		SetRateHeaders(w, rl.Decision)
	}
	var ae *httpx.APIError
	if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="maula-chat"`)
	}
	httpx.Fail(w, r, err)
}

// requestTool is the tool a request names: a {tool} path value, the X-Maula-Tool header or
// the tool query parameter ("" when none).
func requestTool(r *http.Request) string {
	if t := r.PathValue("tool"); t != "" {
		return t
	}
	if t := r.Header.Get(ToolHeader); t != "" {
		return t
	}
	return r.URL.Query().Get("tool")
}

// Authenticate identifies the caller of r: Authorization: Bearer <JWT>, Authorization: Bearer
// mk_..., X-API-Key: mk_..., or the session cookie, in that order. An API key must belong to
// the tool the request names, if it names one. Errors are *httpx.APIError: 401, 403 (wrong
// tool, cross-site cookie use) or 429 (a key's rate limit; the cause is a *RateLimitError).
func (s *Service) Authenticate(r *http.Request) (*Principal, error) {
	ctx := r.Context()
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		tok = strings.TrimSpace(tok)
		if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
			return nil, errUnauthorized("invalid_authorization", "Authorization must be \"Bearer <token>\"")
		}
		if strings.HasPrefix(tok, KeyPrefix) {
			return s.validateKey(ctx, tok, requestTool(r))
		}
		return s.validateSession(ctx, tok)
	}
	if k := r.Header.Get("X-API-Key"); k != "" {
		return s.validateKey(ctx, strings.TrimSpace(k), requestTool(r))
	}
	if c, err := r.Cookie(CookieName); err == nil && c.Value != "" {
		p, err := s.validateSession(ctx, c.Value)
		if err != nil {
			return nil, err
		}
		if err := s.checkOrigin(r); err != nil {
			return nil, err
		}
		p.viaCookie = true
		return p, nil
	}
	return nil, errUnauthorized("unauthorized", "authentication required: a session token, an API key or the session cookie")
}

func readOnlyMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// checkOrigin refuses cookie-authenticated state changes sent from another site: SameSite=Lax
// already keeps the cookie off cross-site POSTs in modern browsers; this covers the rest.
func (s *Service) checkOrigin(r *http.Request) error {
	if readOnlyMethod(r.Method) {
		return nil
	}
	forbidden := httpx.Errorf(http.StatusForbidden, "bad_origin", "cross-site request refused")
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil {
			return forbidden
		}
		if u.Host == r.Host || slices.Contains(s.o.AllowedOrigins, o) {
			return nil
		}
		return forbidden
	}
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return forbidden
	}
	return nil
}

// AuthenticateToken validates the token of a WebSocket's first frame: a session JWT or an
// mk_ key (any tool: the hub checks the tool per message with CanUseTool).
func (s *Service) AuthenticateToken(ctx context.Context, token string) (*Principal, error) {
	token = strings.TrimSpace(token)
	if token == "" {
		return nil, errUnauthorized("unauthorized", "a token is required")
	}
	if strings.HasPrefix(token, KeyPrefix) {
		return s.validateKey(ctx, token, "")
	}
	return s.validateSession(ctx, token)
}

// statusRecorder remembers the status an inner handler wrote, for the API log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and Hijack (WebSocket upgrades).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// RequireUser authenticates the request and puts the *Principal in its context; it answers
// 401/403/429 itself. API-key requests get X-RateLimit-* headers and an api_logs entry.
func (s *Service) RequireUser(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.Authenticate(r)
		if err != nil {
			Fail(w, r, err)
			return
		}
		r = r.WithContext(WithPrincipal(r.Context(), p))
		if !p.ViaAPIKey() {
			next.ServeHTTP(w, r)
			return
		}
		if p.rate != nil {
			SetRateHeaders(w, *p.rate)
		}
		if !p.Can(PermWrite) && !readOnlyMethod(r.Method) {
			Fail(w, r, httpx.Errorf(http.StatusForbidden, "insufficient_permission", "this API key is read-only"))
			return
		}
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		s.LogAPIRequest(p, r, rec.status, time.Since(start))
	})
}

// RequireAdmin is RequireUser that also answers 403 to non-admins.
func (s *Service) RequireAdmin(next http.Handler) http.Handler {
	return s.RequireUser(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !PrincipalFrom(r.Context()).IsAdmin() {
			httpx.WriteError(w, http.StatusForbidden, "forbidden", "admins only")
			return
		}
		next.ServeHTTP(w, r)
	}))
}

// requireSession is RequireUser for account management: API keys may not manage keys,
// sessions or two-factor settings.
func (s *Service) requireSession(next http.Handler) http.Handler {
	return s.RequireUser(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if PrincipalFrom(r.Context()).SessionID == "" {
			httpx.WriteError(w, http.StatusForbidden, "session_required", "this route needs a login session, not an API key")
			return
		}
		next.ServeHTTP(w, r)
	}))
}

func (s *Service) setSessionCookie(w http.ResponseWriter, r *http.Request, tok string, exp time.Time) {
	path := s.o.BasePath
	if path == "" {
		path = "/"
	}
	c := &http.Cookie{
		Name: CookieName, Value: tok, Path: path, HttpOnly: true, SameSite: http.SameSiteLaxMode,
		Secure: r.TLS != nil || strings.HasPrefix(s.o.PublicURL, "https://"),
	}
	if tok == "" {
		c.MaxAge = -1
	} else {
		c.Expires = exp
		c.MaxAge = int(exp.Sub(s.now()).Seconds())
	}
	http.SetCookie(w, c)
}

// sessionAnswer is the body of a successful register or login.
type sessionAnswer struct {
	User      *model.User         `json:"user"`
	Token     string              `json:"token"`
	ExpiresAt time.Time           `json:"expiresAt"`
	APIKeys   []CreatedKey        `json:"apiKeys,omitempty"`
	Sub       *model.Subscription `json:"subscription,omitempty"`
}

func (s *Service) register(w http.ResponseWriter, r *http.Request) error {
	var in NewUser
	if err := httpx.Decode(w, r, &in, 0); err != nil {
		return err
	}
	reg, err := s.CreateUser(r.Context(), in, false)
	if err != nil {
		return err
	}
	s.sendVerification(reg.User, r)
	tok, exp, err := s.createSession(r.Context(), reg.User, r)
	if err != nil {
		return err
	}
	s.setSessionCookie(w, r, tok, exp)
	httpx.WriteJSON(w, http.StatusCreated, sessionAnswer{User: reg.User, Token: tok, ExpiresAt: exp, APIKeys: reg.Keys, Sub: reg.Subscription})
	return nil
}

func (s *Service) loginHandler(w http.ResponseWriter, r *http.Request) error {
	var in loginInput
	if err := httpx.Decode(w, r, &in, 0); err != nil {
		return err
	}
	u, err := s.login(r.Context(), in, clientIP(r))
	if err != nil {
		return err
	}
	tok, exp, err := s.createSession(r.Context(), u, r)
	if err != nil {
		return err
	}
	s.setSessionCookie(w, r, tok, exp)
	httpx.WriteJSON(w, http.StatusOK, sessionAnswer{User: u, Token: tok, ExpiresAt: exp})
	return nil
}

func (s *Service) verifyHandler(w http.ResponseWriter, r *http.Request) error {
	if err := s.verifyEmail(r.Context(), r.URL.Query().Get("token")); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]bool{"emailVerified": true})
	return nil
}

// meAnswer is the body of GET /auth/me.
type meAnswer struct {
	User         *model.User         `json:"user"`
	Subscription *model.Subscription `json:"subscription,omitempty"`
	Auth         authInfo            `json:"auth"`
}

type authInfo struct {
	Method      string   `json:"method"` // session | cookie | api_key
	SessionID   string   `json:"sessionId,omitempty"`
	APIKeyID    string   `json:"apiKeyId,omitempty"`
	Tool        string   `json:"tool,omitempty"`
	Permissions []string `json:"permissions"`
}

func (s *Service) me(w http.ResponseWriter, r *http.Request) error {
	p := PrincipalFrom(r.Context())
	u, err := s.userByID(r.Context(), p.UserID)
	if err != nil {
		return err
	}
	if s.balances != nil {
		if err := s.balances(r.Context()); err != nil {
			return fmt.Errorf("wait for billing: %w", err)
		}
	}
	var sub model.Subscription
	var subp *model.Subscription
	err = s.subs.FindOne(r.Context(), bson.D{{Key: "userId", Value: p.UserID}}).Decode(&sub)
	switch {
	case err == nil:
		subp = &sub
	case !errors.Is(err, mongo.ErrNoDocuments):
		return fmt.Errorf("find subscription: %w", err)
	}
	info := authInfo{Method: "session", SessionID: p.SessionID, Tool: p.Tool, Permissions: p.Permissions}
	switch {
	case p.ViaAPIKey():
		info.Method, info.APIKeyID = "api_key", p.APIKeyID.Hex()
	case p.viaCookie:
		info.Method = "cookie"
	}
	httpx.WriteJSON(w, http.StatusOK, meAnswer{User: u, Subscription: subp, Auth: info})
	return nil
}

func (s *Service) logout(w http.ResponseWriter, r *http.Request) error {
	p := PrincipalFrom(r.Context())
	if err := s.RevokeSession(r.Context(), p.UserID, p.SessionID); err != nil {
		return err
	}
	s.setSessionCookie(w, r, "", time.Time{})
	httpx.WriteJSON(w, http.StatusOK, map[string]bool{"loggedOut": true})
	return nil
}

func (s *Service) totpSetupHandler(w http.ResponseWriter, r *http.Request) error {
	secret, uri, err := s.totpSetup(r.Context(), PrincipalFrom(r.Context()))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"secret": secret, "otpauthUri": uri})
	return nil
}

func (s *Service) totpSwitchHandler(on bool) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		var in struct {
			Code string `json:"code"`
		}
		if err := httpx.Decode(w, r, &in, 0); err != nil {
			return err
		}
		if err := s.totpSwitch(r.Context(), PrincipalFrom(r.Context()), in.Code, on); err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]bool{"twoFactorEnabled": on})
		return nil
	}
}

func (s *Service) listKeysHandler(w http.ResponseWriter, r *http.Request) error {
	keys, err := s.listKeys(r.Context(), PrincipalFrom(r.Context()).UserID)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"apiKeys": keys})
	return nil
}

func (s *Service) createKeyHandler(w http.ResponseWriter, r *http.Request) error {
	var in createKeyInput
	if err := httpx.Decode(w, r, &in, 0); err != nil {
		return err
	}
	k, err := s.createKey(r.Context(), PrincipalFrom(r.Context()), in)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusCreated, map[string]any{"apiKey": k})
	return nil
}

func (s *Service) rotateKeyHandler(w http.ResponseWriter, r *http.Request) error {
	k, err := s.rotateKey(r.Context(), PrincipalFrom(r.Context()).UserID, r.PathValue("id"))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"apiKey": k})
	return nil
}

func (s *Service) deleteKeyHandler(w http.ResponseWriter, r *http.Request) error {
	if err := s.deleteKey(r.Context(), PrincipalFrom(r.Context()).UserID, r.PathValue("id")); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]bool{"deleted": true})
	return nil
}

func (s *Service) listSessionsHandler(w http.ResponseWriter, r *http.Request) error {
	list, err := s.listSessions(r.Context(), PrincipalFrom(r.Context()))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"sessions": list})
	return nil
}

func (s *Service) deleteSessionHandler(w http.ResponseWriter, r *http.Request) error {
	p := PrincipalFrom(r.Context())
	id := r.PathValue("id")
	if err := s.RevokeSession(r.Context(), p.UserID, id); err != nil {
		return err
	}
	if id == p.SessionID {
		s.setSessionCookie(w, r, "", time.Time{})
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]bool{"revoked": true})
	return nil
}
