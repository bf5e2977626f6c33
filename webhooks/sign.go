package webhooks

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Headers of every delivery. SignatureHeader carries "t=<unix seconds>,v1=<hex>", where the hex
// is HMAC-SHA256 keyed with the webhook's secret (the whole "whsec_..." text, as bytes) over
// "<t>.<body>": the timestamp, a dot, and the raw request body.
const (
	SignatureHeader = "X-Maula-Signature"
	TimestampHeader = "X-Maula-Timestamp"
	EventHeader     = "X-Maula-Event"
	DeliveryHeader  = "X-Maula-Delivery"
	WebhookHeader   = "X-Maula-Webhook-Id"
)

// SecretPrefix starts every webhook secret.
const SecretPrefix = "whsec_"

// DefaultTolerance is how far a signature's timestamp may be from the receiver's clock.
const DefaultTolerance = 5 * time.Minute

// Errors of Verify.
var (
	ErrBadSignatureHeader = errors.New("webhooks: malformed signature header")
	ErrSignatureMismatch  = errors.New("webhooks: signature does not match")
	ErrStaleTimestamp     = errors.New("webhooks: timestamp outside the tolerance")
)

// newSecret returns a fresh secret: the prefix and 32 random bytes, base64url.
func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("webhooks: secret: %w", err)
	}
	return SecretPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// Sign returns the hex HMAC-SHA256 of "<ts>.<body>" keyed with secret.
func Sign(secret string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// SignatureValue is the SignatureHeader value for body sent at ts.
func SignatureValue(secret string, ts int64, body []byte) string {
	return "t=" + strconv.FormatInt(ts, 10) + ",v1=" + Sign(secret, ts, body)
}

// Verify checks a SignatureHeader value against body as a receiver would: the v1 signature
// must match (compared in constant time) and t must be within tolerance of now (0: the
// default). Any of several v1 values may match, for secret rotations.
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	var ts int64 = -1
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrBadSignatureHeader
		}
		switch k {
		case "t":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrBadSignatureHeader, err)
			}
			ts = n
		case "v1":
			sigs = append(sigs, v)
		}
	}
	if ts < 0 || len(sigs) == 0 {
		return ErrBadSignatureHeader
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return ErrStaleTimestamp
	}
	want := []byte(Sign(secret, ts, body))
	for _, s := range sigs {
		if hmac.Equal([]byte(s), want) {
			return nil
		}
	}
	return ErrSignatureMismatch
}
