package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/smtp"
	"net/url"
	"strings"
	"time"

	"github.com/maula-ai/maula-chat/httpx"
	"github.com/maula-ai/maula-chat/model"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// Mailer sends one plain-text mail. Registration uses it for the verification link.
type Mailer interface {
	Send(ctx context.Context, to, subject, body string) error
}

// logMailer writes the mail to the log instead of sending it (no SMTP configured): the
// operator can pass the link on, and development needs no mail server.
type logMailer struct{ log *slog.Logger }

func (m logMailer) Send(_ context.Context, to, subject, body string) error {
	m.log.Info("mail not sent (MAULA_SMTP_URL unset)", "to", to, "subject", subject, "body", body)
	return nil
}

// smtpMailer sends through net/smtp to the server of an smtp://user:pass@host:port URL.
// net/smtp refuses PLAIN auth without TLS except to localhost, which is the safe default.
type smtpMailer struct {
	addr string
	auth smtp.Auth
	from string
}

func newMailer(rawURL string, log *slog.Logger) (Mailer, error) {
	if rawURL == "" {
		return logMailer{log}, nil
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "smtp" || u.Host == "" {
		return nil, errors.New("auth: MAULA_SMTP_URL must look like smtp://user:pass@host:port")
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		host, port = u.Host, "25"
	}
	m := &smtpMailer{addr: net.JoinHostPort(host, port), from: u.Query().Get("from")}
	if m.from == "" {
		m.from = "no-reply@" + host
	}
	if u.User != nil {
		pw, _ := u.User.Password()
		m.auth = smtp.PlainAuth("", u.User.Username(), pw, host)
	}
	return m, nil
}

func (m *smtpMailer) Send(_ context.Context, to, subject, body string) error {
	if strings.ContainsAny(to+subject, "\r\n") {
		return errors.New("mail header contains a line break")
	}
	msg := "From: " + m.from + "\r\nTo: " + to + "\r\nSubject: " + subject +
		"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n"
	if err := smtp.SendMail(m.addr, m.auth, m.from, []string{to}, []byte(msg)); err != nil {
		return fmt.Errorf("send mail: %w", err)
	}
	return nil
}

// verifyTTL is how long an email verification link works.
const verifyTTL = 72 * time.Hour

// verificationToken signs (user id, expiry) with HMAC-SHA256: nothing to store, nothing to
// clean up, and it cannot be forged without the JWT secret.
func (s *Service) verificationToken(uid bson.ObjectID, exp time.Time) string {
	payload := make([]byte, 12+8)
	copy(payload, uid[:])
	binary.BigEndian.PutUint64(payload[12:], uint64(exp.Unix()))
	m := hmac.New(sha256.New, s.verify)
	m.Write(payload)
	enc := base64.RawURLEncoding
	return enc.EncodeToString(payload) + "." + enc.EncodeToString(m.Sum(nil)[:20])
}

func (s *Service) checkVerificationToken(tok string) (bson.ObjectID, error) {
	bad := httpx.Errorf(http.StatusBadRequest, "invalid_token", "the verification link is not valid")
	p, sig, ok := strings.Cut(tok, ".")
	if !ok || len(tok) > 200 {
		return bson.ObjectID{}, bad
	}
	enc := base64.RawURLEncoding
	payload, err1 := enc.DecodeString(p)
	mac, err2 := enc.DecodeString(sig)
	if err1 != nil || err2 != nil || len(payload) != 20 {
		return bson.ObjectID{}, bad
	}
	m := hmac.New(sha256.New, s.verify)
	m.Write(payload)
	if !hmac.Equal(mac, m.Sum(nil)[:20]) {
		return bson.ObjectID{}, bad
	}
	if s.now().Unix() > int64(binary.BigEndian.Uint64(payload[12:])) {
		return bson.ObjectID{}, httpx.Errorf(http.StatusBadRequest, "token_expired", "the verification link has expired")
	}
	var uid bson.ObjectID
	copy(uid[:], payload[:12])
	return uid, nil
}

// publicRoot is the external URL of the server root, for links in mail.
func (s *Service) publicRoot(r *http.Request) string {
	if s.o.PublicURL != "" {
		return strings.TrimRight(s.o.PublicURL, "/")
	}
	if r == nil {
		return "http://localhost" + s.o.BasePath
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + s.o.BasePath
}

// sendVerification mails u the verification link, off the request path: a slow mail server
// must not slow registration down. Close waits for it.
func (s *Service) sendVerification(u *model.User, r *http.Request) {
	link := s.publicRoot(r) + "/auth/verify?token=" + s.verificationToken(u.ID, s.now().Add(verifyTTL))
	body := "Welcome to MAULA.AI.\n\nConfirm your email address by opening this link within 3 days:\n\n" + link + "\n"
	select {
	case <-s.stopped():
		return
	default:
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.mailer.Send(ctx, u.Email, "Confirm your MAULA.AI email address", body); err != nil {
			s.log.Warn("verification mail failed", "userId", u.ID.Hex(), "err", err)
		}
	}()
}

// verifyEmail marks the token's user verified.
func (s *Service) verifyEmail(ctx context.Context, tok string) error {
	uid, err := s.checkVerificationToken(tok)
	if err != nil {
		return err
	}
	res, err := s.users.UpdateOne(ctx, bson.D{{Key: "_id", Value: uid}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "emailVerified", Value: true}, {Key: "updatedAt", Value: s.now().UTC()}}}})
	if err != nil {
		return fmt.Errorf("verify email: %w", err)
	}
	if res.MatchedCount == 0 {
		return httpx.Errorf(http.StatusBadRequest, "invalid_token", "the verification link is not valid")
	}
	return nil
}
