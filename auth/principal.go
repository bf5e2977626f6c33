package auth

import (
	"context"
	"slices"

	"github.com/maula-ai/maula-chat/kv"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// Roles of users.role.
const (
	RoleUser  = "user"
	RoleAdmin = "admin"
)

// Permissions an API key may carry.
const (
	PermRead  = "read"
	PermWrite = "write"
)

// Principal is who made a request: a user through a session (JWT or cookie) or through one of
// their tool API keys.
type Principal struct {
	UserID    bson.ObjectID
	Email     string
	Role      string // "user" | "admin"
	Plan      string
	SessionID string        // set when authenticated by session JWT or cookie
	APIKeyID  bson.ObjectID // set when authenticated by API key (IsZero otherwise)
	Tool      string        // API key's tool scope ("" for sessions: all tools)
	// Permissions are the key's (read, write); sessions have both.
	Permissions []string

	// rate is the per-minute decision of the API key request that authenticated this
	// principal, for the X-RateLimit-* headers; nil for sessions.
	rate *kv.Decision
	// viaCookie is true when the session came from the cookie (CSRF checks apply).
	viaCookie bool
}

// CanUseTool reports whether the principal may act on tool: sessions may use every tool, an
// API key only its own.
func (p *Principal) CanUseTool(tool string) bool {
	if p == nil || tool == "" {
		return false
	}
	return p.Tool == "" || p.Tool == tool
}

// IsAdmin reports whether the principal is an admin.
func (p *Principal) IsAdmin() bool { return p != nil && p.Role == RoleAdmin }

// ViaAPIKey reports whether an API key authenticated the principal.
func (p *Principal) ViaAPIKey() bool { return p != nil && !p.APIKeyID.IsZero() }

// Can reports whether the principal holds permission perm.
func (p *Principal) Can(perm string) bool { return p != nil && slices.Contains(p.Permissions, perm) }

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal RequireUser put in ctx, or nil.
func PrincipalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}
