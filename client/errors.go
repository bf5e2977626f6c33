package client

import (
	"errors"
	"fmt"
	"time"

	"github.com/maula-ai/maula-chat/protocol"
)

// Sentinel errors. Match them with errors.Is: the errors the SDK returns wrap them together
// with the server's message.
var (
	// ErrInsufficientCredits: the plan has no AI credits left (chat.error insufficient_credits).
	ErrInsufficientCredits = errors.New("maula: insufficient credits")
	// ErrUnauthorized: the credentials were refused (HTTP 401 at dial, close 4401, or the
	// unauthorized error code). Reconnecting with the same credentials will not help.
	ErrUnauthorized = errors.New("maula: unauthorized")
	// ErrForbidden: authenticated but not allowed, e.g. an API key of another tool (HTTP 403,
	// close 4403, or the forbidden error code).
	ErrForbidden = errors.New("maula: forbidden")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("maula: client closed")
	// ErrConnectionLost: the connection dropped and could not be re-established within the
	// reconnect budget (Options.MaxReconnectAttempts), or dropped with a close code that
	// invites no reconnect.
	ErrConnectionLost = errors.New("maula: connection lost")
)

// RateLimitError is chat.error rate_limited: the plan's message rate was reached.
type RateLimitError struct {
	RetryAfter time.Duration // when a new message will be accepted
	Message    string
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("maula: rate limited (retry after %s): %s", e.RetryAfter, e.Message)
}

// ProviderError is chat.error provider_error (the upstream failed) or provider_unavailable
// (the provider is not configured or the model is unknown).
type ProviderError struct {
	Code       string        // protocol.CodeProviderError or protocol.CodeProviderUnavailable
	Message    string        // a short, safe message from the server
	Retryable  bool          // whether the same request may succeed later
	RetryAfter time.Duration // how long to wait first, when the upstream said
}

func (e *ProviderError) Error() string {
	return fmt.Sprintf("maula: %s: %s", e.Code, e.Message)
}

// ProtocolError is any other chat.error (bad_request, not_found, duplicate_id,
// too_many_requests, shutting_down, internal, ...) and also carries the codes that have a
// sentinel (errors.Is(err, ErrInsufficientCredits) holds for code insufficient_credits).
type ProtocolError struct {
	Code       string // one of the protocol.Code* constants
	Message    string
	Retryable  bool
	RetryAfter time.Duration
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("maula: %s: %s", e.Code, e.Message)
}

// Is maps codes with a sentinel to it.
func (e *ProtocolError) Is(target error) bool {
	switch target {
	case ErrInsufficientCredits:
		return e.Code == protocol.CodeInsufficientCredits
	case ErrUnauthorized:
		return e.Code == protocol.CodeUnauthorized
	case ErrForbidden:
		return e.Code == protocol.CodeForbidden
	}
	return false
}

// CloseError is the server's close frame when it ended the connection for good.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("maula: connection closed by the server: %d %s", e.Code, e.Reason)
}

// Is maps the "give up" close codes to their sentinels.
func (e *CloseError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Code == protocol.CloseAuthFailed
	case ErrForbidden:
		return e.Code == protocol.CloseForbidden || e.Code == protocol.ClosePolicy
	case ErrConnectionLost:
		return true
	}
	return false
}

// errorFromFrame turns a chat.error frame into the typed error callers match.
func errorFromFrame(f *frame) error {
	after := time.Duration(f.RetryAfterMs) * time.Millisecond
	switch f.Code {
	case protocol.CodeRateLimited:
		return &RateLimitError{RetryAfter: after, Message: f.Message}
	case protocol.CodeProviderError, protocol.CodeProviderUnavailable:
		return &ProviderError{Code: f.Code, Message: f.Message, Retryable: f.Retryable, RetryAfter: after}
	}
	return &ProtocolError{Code: f.Code, Message: f.Message, Retryable: f.Retryable, RetryAfter: after}
}
