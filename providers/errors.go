package providers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Error is the one error type of the package. Message is short and safe to
// show to clients; Err carries the detail for logs (never an API key: the
// SDK errors we wrap hold URLs and response bodies, not request headers).
type Error struct {
	Provider   string
	Status     int    // HTTP status, or 0 when none (network, stream cut, cancelled)
	Code       string // stable machine code: "rate_limited", "overloaded", "incomplete", ...
	Retryable  bool
	RetryAfter time.Duration // from Retry-After / retry-after-ms, 0 when absent
	Message    string        // short, safe for clients
	Err        error
}

// Error codes used in Error.Code.
const (
	CodeInvalidRequest  = "invalid_request"
	CodeAuth            = "authentication"
	CodePermission      = "permission"
	CodeNotFound        = "not_found"
	CodeTimeout         = "timeout"
	CodeConflict        = "conflict"
	CodeTooLarge        = "request_too_large"
	CodeRateLimited     = "rate_limited"
	CodeServer          = "server_error"
	CodeBadGateway      = "bad_gateway"
	CodeUnavailable     = "unavailable"
	CodeOverloaded      = "overloaded"
	CodeNetwork         = "network"
	CodeIncomplete      = "incomplete" // stream ended without a finish event
	CodeCancelled       = "cancelled"
	CodeUnknownModel    = "unknown_model"
	CodeUnavailableProv = "provider_unavailable"
	CodeUpstream        = "upstream_error"
)

// Error formats the error for logs: provider, status, code and the cause.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Provider)
	b.WriteString(": ")
	b.WriteString(e.Code)
	if e.Status != 0 {
		b.WriteString(" (")
		b.WriteString(strconv.Itoa(e.Status))
		b.WriteString(")")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	} else if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// statusClass maps an HTTP status to code, retryability and a safe message.
func statusClass(status int) (code string, retryable bool, msg string) {
	switch status {
	case 400, 422:
		return CodeInvalidRequest, false, "the provider rejected the request"
	case 401:
		return CodeAuth, false, "the provider rejected our credentials"
	case 403:
		return CodePermission, false, "the provider refused access"
	case 404:
		return CodeNotFound, false, "model or endpoint not found at the provider"
	case 408:
		return CodeTimeout, true, "the provider timed out"
	case 409:
		return CodeConflict, true, "the provider reported a conflict, retry later"
	case 413:
		return CodeTooLarge, false, "the request is too large for the provider"
	case 429:
		return CodeRateLimited, true, "the provider is rate limiting us, retry later"
	case 500:
		return CodeServer, true, "the provider had an internal error"
	case 502:
		return CodeBadGateway, true, "the provider's gateway failed"
	case 503:
		return CodeUnavailable, true, "the provider is unavailable"
	case 504:
		return CodeTimeout, true, "the provider timed out"
	case 529:
		return CodeOverloaded, true, "the provider is overloaded, retry later"
	}
	switch {
	case status >= 500:
		return CodeServer, true, "the provider had an internal error"
	case status >= 400:
		return CodeInvalidRequest, false, "the provider rejected the request"
	}
	return CodeUpstream, true, "the provider failed"
}

// errorTypeStatus maps provider error type strings (found in mid-stream
// error events, which arrive on a 200 response) to the HTTP status they
// stand for, so they classify like the equivalent HTTP failure.
func errorTypeStatus(typ string) int {
	switch strings.ToLower(typ) {
	case "invalid_request_error", "invalid_argument", "failed_precondition", "invalid_request":
		return 400
	case "authentication_error", "unauthenticated", "invalid_api_key":
		return 401
	case "permission_error", "permission_denied":
		return 403
	case "not_found_error", "not_found":
		return 404
	case "request_too_large":
		return 413
	case "rate_limit_error", "rate_limit_exceeded", "resource_exhausted", "insufficient_quota":
		return 429
	case "api_error", "server_error", "internal", "internal_error":
		return 500
	case "unavailable", "service_unavailable":
		return 503
	case "timeout_error", "deadline_exceeded":
		return 504
	case "overloaded_error", "overloaded":
		return 529
	}
	return 0
}

// newHTTPError builds an Error for an HTTP status (or a mid-stream error
// type mapped to one).
func newHTTPError(provider string, status int, retryAfter time.Duration, cause error) *Error {
	code, retry, msg := statusClass(status)
	return &Error{Provider: provider, Status: status, Code: code, Retryable: retry,
		RetryAfter: retryAfter, Message: provider + ": " + msg, Err: cause}
}

// transportError classifies an error that is not an HTTP status: a
// cancelled context, a network failure or a cut stream.
func transportError(provider string, err error) *Error {
	switch {
	case errors.Is(err, context.Canceled):
		return &Error{Provider: provider, Code: CodeCancelled, Message: provider + ": cancelled", Err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Provider: provider, Code: CodeTimeout, Retryable: true, Message: provider + ": the provider timed out", Err: err}
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) {
		return &Error{Provider: provider, Code: CodeNetwork, Retryable: true,
			Message: provider + ": connection to the provider failed", Err: err}
	}
	return &Error{Provider: provider, Code: CodeUpstream, Retryable: true,
		Message: provider + ": the provider failed", Err: err}
}

// incompleteError reports a stream that ended without a finish event.
func incompleteError(provider string) *Error {
	return &Error{Provider: provider, Code: CodeIncomplete, Retryable: true,
		Message: provider + ": the reply was cut off",
		Err:     fmt.Errorf("%s: stream ended without a finish event: %w", provider, io.ErrUnexpectedEOF)}
}

// parseRetryAfter reads retry-after-ms (sent by OpenAI and Anthropic) or the
// standard Retry-After (seconds or an HTTP date).
func parseRetryAfter(h http.Header, now time.Time) time.Duration {
	if h == nil {
		return 0
	}
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// AsError returns err as *Error, wrapping foreign errors as upstream errors.
func AsError(provider string, err error) *Error {
	if err == nil {
		return nil
	}
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	return transportError(provider, err)
}
