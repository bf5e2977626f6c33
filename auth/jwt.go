package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// issuer is the iss claim of every session token; tokens of other issuers are refused.
const issuer = "maula-chat"

// secretFile is where a generated JWT secret is kept, inside the data dir.
const secretFile = "jwt-secret"

// keyring holds the signing secret and the secrets of earlier rotations, by kid. The kid is a
// fingerprint of the secret (not the secret), so rotating is: move the old secret to
// JWTPreviousSecrets, set a new one; old tokens keep verifying until they expire.
type keyring struct {
	current string // kid of the signing secret
	secrets map[string][]byte
	parser  *jwt.Parser
}

func kidOf(secret []byte) string {
	sum := sha256.Sum256(append([]byte("maula-kid:"), secret...))
	return hex.EncodeToString(sum[:6])
}

func newKeyring(current string, previous []string) (*keyring, error) {
	if len(current) < 32 {
		return nil, errors.New("auth: JWT secret must be at least 32 bytes")
	}
	k := &keyring{secrets: map[string][]byte{}}
	k.current = kidOf([]byte(current))
	k.secrets[k.current] = []byte(current)
	for _, p := range previous {
		if len(p) < 32 {
			return nil, errors.New("auth: previous JWT secrets must be at least 32 bytes")
		}
		k.secrets[kidOf([]byte(p))] = []byte(p)
	}
	return k, nil
}

// sessionClaims are a session token's claims: jti is the sessions document's _id, sub the user.
type sessionClaims = jwt.RegisteredClaims

func (k *keyring) sign(sessionID, userID string, issued, expires time.Time) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, sessionClaims{
		Issuer: issuer, Subject: userID, ID: sessionID,
		IssuedAt: jwt.NewNumericDate(issued), ExpiresAt: jwt.NewNumericDate(expires),
	})
	t.Header["kid"] = k.current
	s, err := t.SignedString(k.secrets[k.current])
	if err != nil {
		return "", fmt.Errorf("sign session token: %w", err)
	}
	return s, nil
}

// errUnknownKid is returned for a token whose kid names no secret of the ring.
var errUnknownKid = errors.New("unknown kid")

// parse verifies a token: HS256 only (alg is pinned, so "none" and every other algorithm are
// refused before any key is used), a kid of the ring, the issuer, and expiry against now.
func (k *keyring) parse(token string, now func() time.Time) (*sessionClaims, error) {
	p := jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(),
		jwt.WithIssuer(issuer), jwt.WithTimeFunc(now))
	var c sessionClaims
	_, err := p.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		if t.Method != jwt.SigningMethodHS256 {
			return nil, fmt.Errorf("alg %v", t.Header["alg"])
		}
		kid, _ := t.Header["kid"].(string)
		sec, ok := k.secrets[kid]
		if !ok {
			return nil, errUnknownKid
		}
		return sec, nil
	})
	if err != nil {
		return nil, err
	}
	if c.ID == "" || c.Subject == "" {
		return nil, errors.New("token lacks jti or sub")
	}
	return &c, nil
}

// loadOrCreateSecret returns the secret kept in dir, creating it once (0600) when absent.
// O_EXCL makes two instances starting together on one data dir agree on one secret.
func loadOrCreateSecret(dir string) (string, error) {
	if dir == "" {
		return "", errors.New("auth: no JWT secret and no data dir to keep a generated one")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("auth: data dir: %w", err)
	}
	path := filepath.Join(dir, secretFile)
	for range 3 {
		b, err := os.ReadFile(path)
		if err == nil {
			s := strings.TrimSpace(string(b))
			if len(s) < 32 {
				// A concurrent creator may be between create and write: read again.
				continue
			}
			return s, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("auth: read JWT secret: %w", err)
		}
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return "", fmt.Errorf("auth: generate JWT secret: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("auth: create JWT secret: %w", err)
		}
		s := hex.EncodeToString(raw)
		_, werr := f.WriteString(s + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return "", fmt.Errorf("auth: write JWT secret: %w", werr)
		}
		return s, nil
	}
	return "", fmt.Errorf("auth: %s exists but holds no usable secret (at least 32 bytes)", path)
}

// deriveKey derives an independent key for another purpose from the JWT secret.
func deriveKey(secret, purpose string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(purpose))
	return m.Sum(nil)
}

// hashToken is the SHA-256 (hex) under which bearer secrets are stored: session tokens in
// sessions.token, API keys in api_keys.key.
func hashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}
