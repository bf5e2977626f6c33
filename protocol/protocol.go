// Package protocol defines maula-chat's WebSocket protocol v1 (subprotocol "maula.v1"): the
// frame types, error codes and close codes shared by the server and the SDKs. It is the only
// package the SDK shares with the server. docs/protocol.md is its human-readable form.
package protocol

// Subprotocol is the WebSocket subprotocol name of this version.
const Subprotocol = "maula.v1"

// Client → server frame types.
const (
	TypeAuth         = "auth"
	TypeChatSend     = "chat.send"
	TypeChatCancel   = "chat.cancel"
	TypeChatResume   = "chat.resume"
	TypeHistoryGet   = "history.get"
	TypeSessionsList = "sessions.list"
	TypePing         = "ping"
)

// Server → client frame types.
const (
	TypeChatStarted   = "chat.started"
	TypeChatDelta     = "chat.delta"
	TypeChatUsage     = "chat.usage"
	TypeChatDone      = "chat.done"
	TypeChatCancelled = "chat.cancelled"
	TypeChatError     = "chat.error"
	TypeHistory       = "history"
	TypeSessions      = "sessions"
	TypePong          = "pong"
	TypeAuthOK        = "auth.ok"
)

// ClientFrame is any frame a client sends; Type says which fields apply.
type ClientFrame struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
	// auth
	Token string `json:"token,omitempty"`
	// chat.send
	Tool               string   `json:"tool,omitempty"`
	SessionID          string   `json:"sessionId,omitempty"`
	Provider           string   `json:"provider,omitempty"`
	Model              string   `json:"model,omitempty"`
	Message            string   `json:"message,omitempty"`
	AnalysisID         string   `json:"analysisId,omitempty"`
	MaxTokens          int      `json:"maxTokens,omitempty"`
	Temperature        *float64 `json:"temperature,omitempty"`
	CancelOnDisconnect bool     `json:"cancelOnDisconnect,omitempty"`
	// chat.resume
	AfterSeq uint64 `json:"afterSeq,omitempty"`
	// history.get, sessions.list
	Before string `json:"before,omitempty"`
	Limit  int    `json:"limit,omitempty"`
}

// Usage is a reply's token usage.
type Usage struct {
	Input      int64 `json:"input"`
	Output     int64 `json:"output"`
	CacheRead  int64 `json:"cacheRead"`
	CacheWrite int64 `json:"cacheWrite"`
	Reasoning  int64 `json:"reasoning"`
	Estimated  bool  `json:"estimated,omitempty"`
}

// Started is chat.started.
type Started struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	SessionID string `json:"sessionId"`
	MessageID string `json:"messageId"`
	Provider  string `json:"provider"`
	Model     string `json:"model"`
}

// Delta is chat.delta: seq starts at 1 and rises by one per delta produced. When frames are
// coalesced for a slow reader, one frame carries several deltas' text and the seq of the last.
type Delta struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Seq  uint64 `json:"seq"`
	Text string `json:"text"`
}

// UsageFrame is chat.usage: running figures, at most once a second while a reply streams.
type UsageFrame struct {
	Type        string  `json:"type"`
	ID          string  `json:"id"`
	Usage       Usage   `json:"usage"`
	CostUSD     float64 `json:"costUsd"`
	CreditsLeft int64   `json:"creditsLeft"`
}

// Done is chat.done: the reply is complete and stored.
type Done struct {
	Type         string  `json:"type"`
	ID           string  `json:"id"`
	Seq          uint64  `json:"seq"`
	FinishReason string  `json:"finishReason"`
	Usage        Usage   `json:"usage"`
	CostUSD      float64 `json:"costUsd"`
	CostMicros   int64   `json:"costMicros"`
	CreditsLeft  int64   `json:"creditsLeft"`
}

// Cancelled is chat.cancelled: the reply was cancelled; what was produced is stored and billed.
type Cancelled struct {
	Type        string  `json:"type"`
	ID          string  `json:"id"`
	Seq         uint64  `json:"seq"`
	Usage       Usage   `json:"usage"`
	CostUSD     float64 `json:"costUsd"`
	CostMicros  int64   `json:"costMicros"`
	CreditsLeft int64   `json:"creditsLeft"`
}

// Error is chat.error. ID is empty for errors not tied to a request.
type Error struct {
	Type         string `json:"type"`
	ID           string `json:"id,omitempty"`
	Code         string `json:"code"`
	Message      string `json:"message"`
	Retryable    bool   `json:"retryable"`
	RetryAfterMs int64  `json:"retryAfterMs,omitempty"`
	// Seq, on errors that end a streaming reply, is the last delta's seq.
	Seq uint64 `json:"seq,omitempty"`
}

// Error codes of chat.error.
const (
	CodeBadRequest          = "bad_request"          // malformed or invalid frame; fix the frame
	CodeUnauthorized        = "unauthorized"         // not authenticated
	CodeForbidden           = "forbidden"            // not allowed (e.g. an API key of another tool)
	CodeNotFound            = "not_found"            // no such tool, conversation, analysis or request
	CodeDuplicateID         = "duplicate_id"         // a request with that id is already running
	CodeTooManyRequests     = "too_many_requests"    // too many turns at once; retry when one ends
	CodeRateLimited         = "rate_limited"         // plan's message rate; retry after retryAfterMs
	CodeInsufficientCredits = "insufficient_credits" // no credits left
	CodeProviderUnavailable = "provider_unavailable" // provider not configured or model unknown
	CodeProviderError       = "provider_error"       // the upstream failed; retryable says whether to retry
	CodeShuttingDown        = "shutting_down"        // the server is stopping; retry on another connection
	CodeInternal            = "internal"             // our fault; retryable
)

// Close codes. "Reconnect" codes mean a new connection may succeed; "give up" codes mean it
// will fail the same way until the client changes something.
const (
	CloseNormal       = 1000 // client or server said goodbye
	CloseGoingAway    = 1001 // server shutting down: reconnect (to another instance)
	ClosePolicy       = 1008 // origin not allowed: give up
	CloseTooBig       = 1009 // frame over the read limit: give up on that frame, reconnect
	CloseInternal     = 1011 // server error: reconnect with backoff
	CloseSlowConsumer = 4008 // the client did not read fast enough: reconnect and resume
	CloseAuthFailed   = 4401 // authentication failed or timed out: give up until new credentials
	CloseForbidden    = 4403 // credentials valid but not allowed: give up
)

// Reconnectable reports whether a close code invites a reconnect.
func Reconnectable(code int) bool {
	switch code {
	case CloseGoingAway, CloseTooBig, CloseInternal, CloseSlowConsumer, 1006:
		return true
	}
	return false
}

// ChatMessage is one stored message in a history frame.
type ChatMessage struct {
	ID           string `json:"id"`
	Role         string `json:"role"`
	Message      string `json:"message"`
	Provider     string `json:"provider,omitempty"`
	Model        string `json:"model,omitempty"`
	RequestID    string `json:"requestId,omitempty"`
	FinishReason string `json:"finishReason,omitempty"`
	Usage        *Usage `json:"usage,omitempty"`
	CostMicros   int64  `json:"costMicros,omitempty"`
	Timestamp    string `json:"timestamp"`
}

// History is the answer to history.get, newest message last.
type History struct {
	Type      string        `json:"type"`
	ID        string        `json:"id,omitempty"`
	Tool      string        `json:"tool"`
	SessionID string        `json:"sessionId"`
	Messages  []ChatMessage `json:"messages"`
	HasMore   bool          `json:"hasMore"`
}

// SessionInfo summarises one conversation.
type SessionInfo struct {
	SessionID     string `json:"sessionId"`
	LastMessageAt string `json:"lastMessageAt"`
	Messages      int64  `json:"messages"`
	Preview       string `json:"preview"`
}

// Sessions is the answer to sessions.list, newest first.
type Sessions struct {
	Type     string        `json:"type"`
	ID       string        `json:"id,omitempty"`
	Tool     string        `json:"tool"`
	Sessions []SessionInfo `json:"sessions"`
	HasMore  bool          `json:"hasMore"`
}

// Pong answers ping.
type Pong struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
}
