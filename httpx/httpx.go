// Package httpx holds the HTTP conventions every handler shares: the one JSON error shape
// {"error":{"code","message"}}, strict JSON decoding with a body limit, request ids, and the
// access-log and panic-recovery middleware.
package httpx

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
)

// MaxBody is the default limit on a JSON request body.
const MaxBody = 64 << 10

// Error is the body of every error answer.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ErrorBody wraps Error as the API sends it.
type ErrorBody struct {
	Error Error `json:"error"`
}

// WriteJSON sends v with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError sends {"error":{"code","message"}} with status.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	WriteJSON(w, status, ErrorBody{Error{Code: code, Message: message}})
}

// APIError is an error that knows its HTTP answer. Handlers return it; Fail writes it.
type APIError struct {
	Status  int
	Code    string
	Message string
	Err     error // the cause, for logs only
}

func (e *APIError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *APIError) Unwrap() error { return e.Err }

// Errorf builds an APIError.
func Errorf(status int, code, format string, args ...any) *APIError {
	return &APIError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Fail writes err: an *APIError as itself, anything else as a 500 whose detail goes to the log
// only.
func Fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *APIError
	if errors.As(err, &ae) {
		if ae.Status >= 500 {
			Logger(r.Context()).Error("request failed", "code", ae.Code, "err", err)
		}
		WriteError(w, ae.Status, ae.Code, ae.Message)
		return
	}
	Logger(r.Context()).Error("request failed", "err", err)
	WriteError(w, http.StatusInternalServerError, "internal", "internal error; the request id is "+RequestID(r.Context()))
}

// Decode reads a JSON body into v: at most limit bytes (MaxBody when 0), no unknown fields, one
// value. Its errors are *APIError 400 or 413 naming the problem.
func Decode(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	if limit <= 0 {
		limit = MaxBody
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err, limit)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Errorf(http.StatusBadRequest, "bad_request", "body must be a single JSON value")
	}
	return nil
}

func decodeError(err error, limit int64) error {
	var (
		tooBig *http.MaxBytesError
		syn    *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooBig):
		return &APIError{Status: http.StatusRequestEntityTooLarge, Code: "too_large", Message: fmt.Sprintf("body over %d bytes", limit), Err: err}
	case errors.As(err, &syn):
		return &APIError{Status: http.StatusBadRequest, Code: "bad_json", Message: fmt.Sprintf("malformed JSON at byte %d", syn.Offset), Err: err}
	case errors.As(err, &typ):
		return &APIError{Status: http.StatusBadRequest, Code: "bad_request", Message: fmt.Sprintf("field %q must be %s", typ.Field, typ.Type), Err: err}
	case errors.Is(err, io.EOF):
		return &APIError{Status: http.StatusBadRequest, Code: "bad_request", Message: "empty body", Err: err}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &APIError{Status: http.StatusBadRequest, Code: "bad_json", Message: "truncated JSON", Err: err}
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return &APIError{Status: http.StatusBadRequest, Code: "unknown_field", Message: strings.TrimPrefix(err.Error(), "json: "), Err: err}
	default:
		return &APIError{Status: http.StatusBadRequest, Code: "bad_request", Message: "invalid body", Err: err}
	}
}

type ctxKey int

const (
	keyRequestID ctxKey = iota
	keyLogger
)

// RequestID returns the request's id, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(keyRequestID).(string)
	return id
}

// Logger returns the request's logger (with its request id), or slog.Default().
func Logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(keyLogger).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}

// WithLogger returns ctx carrying l.
func WithLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, keyLogger, l)
}

// NewID returns 16 random hex characters.
func NewID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and Hijack (WebSocket upgrades).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Middleware gives every request an id (X-Request-Id, kept when the client sent a sane one), a
// logger carrying it, panic recovery as a 500 JSON error, and one access-log line.
func Middleware(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if len(id) == 0 || len(id) > 64 || strings.ContainsAny(id, " \t\r\n\"") {
			id = NewID()
		}
		l := log.With("requestId", id)
		ctx := context.WithValue(WithLogger(r.Context(), l), keyRequestID, id)
		w.Header().Set("X-Request-Id", id)
		sw := &statusWriter{ResponseWriter: w}
		start := time.Now()
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				l.Error("panic in handler", "panic", p, "path", r.URL.Path)
				if sw.status == 0 {
					WriteError(sw, http.StatusInternalServerError, "internal", "internal error; the request id is "+id)
				}
			}
			l.Debug("http", "method", r.Method, "path", r.URL.Path, "status", sw.status,
				"bytes", sw.bytes, "dur", time.Since(start))
		}()
		next.ServeHTTP(sw, r.WithContext(ctx))
	})
}

// Hijack lets WebSocket upgrades through the wrapper (gorilla/websocket asserts
// http.Hijacker directly).
func (s *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if s.status == 0 {
		s.status = http.StatusSwitchingProtocols
	}
	return http.NewResponseController(s.ResponseWriter).Hijack()
}
