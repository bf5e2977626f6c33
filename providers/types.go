package providers

import (
	"context"
	"time"
)

// Role is the author of a chat message.
type Role string

// Message roles understood by every provider.
const (
	RoleSystem    Role = "system"
	RoleUser      Role = "user"
	RoleAssistant Role = "assistant"
)

// Message is one turn of the conversation.
type Message struct {
	Role    Role
	Content string
}

// Request is a provider-neutral chat request.
type Request struct {
	Model       string // "" = provider's default model
	System      string // tool system prompt
	Context     string // stable tool context (analyses), sent after the system prompt; cacheable
	Messages    []Message
	MaxTokens   int // 0 = provider default (DefaultMaxTokens where the API requires a value)
	Temperature *float64
	Stop        []string
	CacheHint   bool // mark system+context as the stable prefix (Anthropic cache_control; others cache automatically)
}

// DefaultMaxTokens is sent when Request.MaxTokens is 0 and the provider
// requires an explicit limit (Anthropic does).
const DefaultMaxTokens = 4096

// Usage counts tokens of one call. Input excludes cached input (CacheRead and
// CacheWrite are separate so each is billed once at its own price); Output
// includes Reasoning. Estimated is set when the upstream never reported usage
// and the counts come from EstimateTokens.
type Usage struct {
	Input, Output, CacheRead, CacheWrite, Reasoning int64
	Estimated                                       bool
}

// EventType tells which fields of an Event are meaningful.
type EventType uint8

// Event types. Exactly one terminal event (EventFinish or EventError) ends a stream.
const (
	EventDelta EventType = iota + 1
	EventFinish
	EventError
)

// String names the event type for logs and test failures.
func (t EventType) String() string {
	switch t {
	case EventDelta:
		return "delta"
	case EventFinish:
		return "finish"
	case EventError:
		return "error"
	}
	return "unknown"
}

// Finish reasons, normalised across providers.
const (
	FinishStop          = "stop"
	FinishLength        = "length"
	FinishStopSequence  = "stop_sequence"
	FinishContentFilter = "content_filter"
	FinishToolUse       = "tool_use"
	FinishCancelled     = "cancelled"
)

// Event is one item of a Stream.
type Event struct {
	Type         EventType
	Text         string // EventDelta
	FinishReason string // EventFinish: normalised reason (FinishStop, FinishLength, ...)
	Usage        Usage  // EventFinish and EventError: usage known so far (partial on error/cancel)
	Err          *Error // EventError
	// Provider and Model name who actually served the call (set on terminal
	// events); they differ from the request after a fallback, and billing
	// must price what was served.
	Provider string
	Model    string
}

// Stream yields events; exactly one terminal event (Finish or Error) ends it.
// Cancelling the context ends it with Finish{FinishReason: "cancelled", Usage:
// known or estimated}. Recv returns io.EOF after the terminal event. Recv is
// not safe for concurrent use; Close may be called at any time, more than once.
type Stream interface {
	Recv() (Event, error)
	Close() error
}

// Provider is one upstream adapter.
type Provider interface {
	Name() string
	DefaultModel() string
	// Stream starts the call. An error here means nothing was streamed.
	Stream(ctx context.Context, req *Request) (Stream, error)
}

// ProviderInfo describes a registered provider for listings.
type ProviderInfo struct {
	Name         string
	Available    bool // false when no API key (or echo switched off)
	DefaultModel string
	Models       []ModelInfo
}

// ModelInfo describes one priced model.
type ModelInfo struct {
	ID            string
	ContextWindow int64
	MaxOutput     int64
}

// nowFunc is replaced in tests that need a fixed clock.
var nowFunc = time.Now
