// Package model holds the Go types of the documents in the platform's databases, with the
// seed's field names in BSON (../shared/seed/database-architecture.md). Fields the seed does
// not name but the server needs (role, exact micro-dollar costs, ledger entries) are added with
// names in the same style and noted as such.
package model

import (
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Database and collection names, exactly as in the seed.
const (
	AuthDB = "maula-auth-db"

	CollUsers         = "users"
	CollSessions      = "sessions"
	CollAPIKeys       = "api_keys"
	CollSubscriptions = "subscriptions"
	CollBilling       = "billing"
	// CollLedger is not in the seed: the append-only credit ledger (money issue).
	CollLedger = "credit_ledger"
	// CollCostRollups is not in the seed: per-day cost rollups that /admin/costs reads.
	CollCostRollups = "cost_rollups"

	CollAnalyses    = "analyses"
	CollChatHistory = "chat_history"
	CollWebhooks    = "webhooks"
	CollAPILogs     = "api_logs"
	CollAnalytics   = "analytics"
)

// Providers named by the seed.
const (
	ProviderClaude  = "claude"
	ProviderGPT     = "gpt"
	ProviderGrok    = "grok"
	ProviderMistral = "mistral"
	ProviderGemini  = "gemini"
)

// UserSubscription is the summary of the plan embedded in a user document.
type UserSubscription struct {
	Plan      string     `bson:"plan" json:"plan"` // free | pro | enterprise
	StartDate time.Time  `bson:"startDate" json:"startDate"`
	EndDate   *time.Time `bson:"endDate,omitempty" json:"endDate,omitempty"`
	Status    string     `bson:"status" json:"status"` // active | cancelled | expired
}

// Preferences are the user's UI and model preferences.
type Preferences struct {
	DefaultLLM    string `bson:"defaultLLM" json:"defaultLLM"`
	Theme         string `bson:"theme" json:"theme"` // dark | light
	Notifications bool   `bson:"notifications" json:"notifications"`
}

// User is a document of maula-auth-db.users.
type User struct {
	ID               bson.ObjectID    `bson:"_id" json:"id"`
	Email            string           `bson:"email" json:"email"` // unique, stored lower-cased
	Password         string           `bson:"password" json:"-"`  // bcrypt hash, never served
	Name             string           `bson:"name" json:"name"`
	Avatar           string           `bson:"avatar,omitempty" json:"avatar,omitempty"`
	Subscription     UserSubscription `bson:"subscription" json:"subscription"`
	CreatedAt        time.Time        `bson:"createdAt" json:"createdAt"`
	UpdatedAt        time.Time        `bson:"updatedAt" json:"updatedAt"`
	EmailVerified    bool             `bson:"emailVerified" json:"emailVerified"`
	TwoFactorEnabled bool             `bson:"twoFactorEnabled" json:"twoFactorEnabled"`
	Preferences      Preferences      `bson:"preferences" json:"preferences"`
	// Not in the seed: role (user | admin) and the TOTP secret.
	Role            string `bson:"role" json:"role"`
	TwoFactorSecret string `bson:"twoFactorSecret,omitempty" json:"-"`
}

// Device describes where a session was opened.
type Device struct {
	UserAgent string `bson:"userAgent" json:"userAgent"`
	IP        string `bson:"ip" json:"ip"`
	Platform  string `bson:"platform" json:"platform"`
}

// Session is a document of maula-auth-db.sessions.
type Session struct {
	ID     bson.ObjectID `bson:"_id" json:"id"`
	UserID bson.ObjectID `bson:"userId" json:"userId"`
	// Token holds the SHA-256 of the JWT (the seed says "JWT token"; we never store bearer
	// secrets in clear).
	Token        string     `bson:"token" json:"-"`
	Device       Device     `bson:"device" json:"device"`
	CreatedAt    time.Time  `bson:"createdAt" json:"createdAt"`
	ExpiresAt    time.Time  `bson:"expiresAt" json:"expiresAt"`
	LastActiveAt time.Time  `bson:"lastActiveAt" json:"lastActiveAt"`
	RevokedAt    *time.Time `bson:"revokedAt,omitempty" json:"revokedAt,omitempty"` // not in the seed
}

// RateLimit is an API key's request budget.
type RateLimit struct {
	RequestsPerMinute int `bson:"requestsPerMinute" json:"requestsPerMinute"`
	RequestsPerDay    int `bson:"requestsPerDay" json:"requestsPerDay"`
}

// KeyUsage counts an API key's use.
type KeyUsage struct {
	TotalRequests int64      `bson:"totalRequests" json:"totalRequests"`
	LastRequest   *time.Time `bson:"lastRequest,omitempty" json:"lastRequest,omitempty"`
}

// APIKey is a document of maula-auth-db.api_keys.
type APIKey struct {
	ID          bson.ObjectID `bson:"_id" json:"id"`
	UserID      bson.ObjectID `bson:"userId" json:"userId"`
	ToolName    string        `bson:"toolName" json:"toolName"`
	Key         string        `bson:"key" json:"-"` // SHA-256 of the key text, hex
	Name        string        `bson:"name" json:"name"`
	Permissions []string      `bson:"permissions" json:"permissions"`
	RateLimit   RateLimit     `bson:"rateLimit" json:"rateLimit"`
	Usage       KeyUsage      `bson:"usage" json:"usage"`
	CreatedAt   time.Time     `bson:"createdAt" json:"createdAt"`
	ExpiresAt   *time.Time    `bson:"expiresAt,omitempty" json:"expiresAt,omitempty"`
	IsActive    bool          `bson:"isActive" json:"isActive"`
	Prefix      string        `bson:"prefix" json:"prefix"` // not in the seed: display prefix
}

// SubscriptionBilling is the billing part of a subscription.
type SubscriptionBilling struct {
	Amount          float64   `bson:"amount" json:"amount"`
	Currency        string    `bson:"currency" json:"currency"`
	Interval        string    `bson:"interval" json:"interval"` // monthly | yearly
	NextBillingDate time.Time `bson:"nextBillingDate" json:"nextBillingDate"`
}

// Features are a plan's limits; AICredits is the live balance of LLM credits.
type Features struct {
	MaxAPIRequests int    `bson:"maxAPIRequests" json:"maxAPIRequests"`
	MaxTools       int    `bson:"maxTools" json:"maxTools"`
	AICredits      int64  `bson:"aiCredits" json:"aiCredits"`
	SupportLevel   string `bson:"supportLevel" json:"supportLevel"`
}

// PaymentMethod is how a subscription is paid.
type PaymentMethod struct {
	Type  string `bson:"type" json:"type"`
	Last4 string `bson:"last4,omitempty" json:"last4,omitempty"`
}

// Subscription is a document of maula-auth-db.subscriptions.
type Subscription struct {
	ID            bson.ObjectID       `bson:"_id" json:"id"`
	UserID        bson.ObjectID       `bson:"userId" json:"userId"`
	Plan          string              `bson:"plan" json:"plan"`
	Billing       SubscriptionBilling `bson:"billing" json:"billing"`
	Features      Features            `bson:"features" json:"features"`
	PaymentMethod PaymentMethod       `bson:"paymentMethod" json:"paymentMethod"`
	Status        string              `bson:"status" json:"status"`
	CreatedAt     time.Time           `bson:"createdAt" json:"createdAt"`
	UpdatedAt     time.Time           `bson:"updatedAt" json:"updatedAt"`
}

// Invoice names a billing record's invoice.
type Invoice struct {
	Number string `bson:"number" json:"number"`
	PDFURL string `bson:"pdfUrl,omitempty" json:"pdfUrl,omitempty"`
}

// BillingRecord is a document of maula-auth-db.billing.
type BillingRecord struct {
	ID             bson.ObjectID `bson:"_id" json:"id"`
	UserID         bson.ObjectID `bson:"userId" json:"userId"`
	SubscriptionID bson.ObjectID `bson:"subscriptionId" json:"subscriptionId"`
	Amount         float64       `bson:"amount" json:"amount"`
	Currency       string        `bson:"currency" json:"currency"`
	Status         string        `bson:"status" json:"status"`
	Invoice        Invoice       `bson:"invoice" json:"invoice"`
	PaymentIntent  string        `bson:"paymentIntent" json:"paymentIntent"`
	CreatedAt      time.Time     `bson:"createdAt" json:"createdAt"`
	PaidAt         *time.Time    `bson:"paidAt,omitempty" json:"paidAt,omitempty"`
}

// IPResult is the result of an IPIntel analysis.
type IPResult struct {
	RiskScore    float64 `bson:"riskScore" json:"riskScore"`
	IsProxy      bool    `bson:"isProxy" json:"isProxy"`
	IsVPN        bool    `bson:"isVPN" json:"isVPN"`
	IsTor        bool    `bson:"isTor" json:"isTor"`
	IsDatacenter bool    `bson:"isDatacenter" json:"isDatacenter"`
	IsBot        bool    `bson:"isBot" json:"isBot"`
	Country      string  `bson:"country" json:"country"`
	CountryCode  string  `bson:"countryCode" json:"countryCode"`
	City         string  `bson:"city" json:"city"`
	Region       string  `bson:"region" json:"region"`
	Latitude     float64 `bson:"latitude" json:"latitude"`
	Longitude    float64 `bson:"longitude" json:"longitude"`
	Timezone     string  `bson:"timezone" json:"timezone"`
	ISP          string  `bson:"isp" json:"isp"`
	Organization string  `bson:"organization" json:"organization"`
	ASN          int64   `bson:"asn" json:"asn"`
	ThreatLevel  string  `bson:"threatLevel" json:"threatLevel"` // low | medium | high | critical
}

// AnalysisMetadata describes how an analysis was produced.
type AnalysisMetadata struct {
	ProcessingTime float64 `bson:"processingTime" json:"processingTime"` // milliseconds
	ModelVersion   string  `bson:"modelVersion" json:"modelVersion"`
	Confidence     float64 `bson:"confidence" json:"confidence"`
}

// Analysis is a document of <tool>-db.analyses. For ipintel Result has the IPResult fields;
// other tools share riskScore and threatLevel and keep their own fields beside them, so the
// result is kept as a document.
type Analysis struct {
	ID        bson.ObjectID    `bson:"_id" json:"id"`
	UserID    bson.ObjectID    `bson:"userId" json:"userId"`
	IPAddress string           `bson:"ipAddress,omitempty" json:"ipAddress,omitempty"`
	Result    bson.M           `bson:"result" json:"result"`
	Metadata  AnalysisMetadata `bson:"metadata" json:"metadata"`
	CreatedAt time.Time        `bson:"createdAt" json:"createdAt"`
	ExpiresAt time.Time        `bson:"expiresAt" json:"expiresAt"`
}

// ChatContext is what the assistant was shown with a message.
type ChatContext struct {
	ToolData        any    `bson:"toolData,omitempty" json:"toolData,omitempty"`
	PreviousResults []any  `bson:"previousResults,omitempty" json:"previousResults,omitempty"`
	UserIntent      string `bson:"userIntent,omitempty" json:"userIntent,omitempty"`
}

// ChatTokens is a message's usage and cost. Cost is USD as the seed says; the exact figures
// (micro-dollars and the other token kinds) are additions.
type ChatTokens struct {
	Input      int64   `bson:"input" json:"input"`
	Output     int64   `bson:"output" json:"output"`
	Cost       float64 `bson:"cost" json:"cost"`
	CacheRead  int64   `bson:"cacheRead,omitempty" json:"cacheRead,omitempty"`
	CacheWrite int64   `bson:"cacheWrite,omitempty" json:"cacheWrite,omitempty"`
	Reasoning  int64   `bson:"reasoning,omitempty" json:"reasoning,omitempty"`
	Estimated  bool    `bson:"estimated,omitempty" json:"estimated,omitempty"`
	CostMicros int64   `bson:"costMicros" json:"costMicros"`
	PriceID    string  `bson:"priceId,omitempty" json:"priceId,omitempty"`
}

// ChatMessage is a document of <tool>-db.chat_history.
type ChatMessage struct {
	ID        bson.ObjectID `bson:"_id" json:"id"`
	UserID    bson.ObjectID `bson:"userId" json:"userId"`
	SessionID string        `bson:"sessionId" json:"sessionId"`
	Provider  string        `bson:"provider" json:"provider"`
	Role      string        `bson:"role" json:"role"` // user | assistant | system
	Message   string        `bson:"message" json:"message"`
	Context   ChatContext   `bson:"context" json:"context"`
	Tokens    ChatTokens    `bson:"tokens" json:"tokens"`
	Timestamp time.Time     `bson:"timestamp" json:"timestamp"`
	// Not in the seed: the model, the request that produced it, and how the reply ended.
	Model        string `bson:"model,omitempty" json:"model,omitempty"`
	RequestID    string `bson:"requestId,omitempty" json:"requestId,omitempty"`
	FinishReason string `bson:"finishReason,omitempty" json:"finishReason,omitempty"`
}

// RetryPolicy says how a webhook delivery is retried.
type RetryPolicy struct {
	MaxRetries int    `bson:"maxRetries" json:"maxRetries"`
	Backoff    string `bson:"backoff" json:"backoff"` // linear | exponential
}

// WebhookStats counts a webhook's deliveries.
type WebhookStats struct {
	TotalSent    int64      `bson:"totalSent" json:"totalSent"`
	SuccessCount int64      `bson:"successCount" json:"successCount"`
	FailureCount int64      `bson:"failureCount" json:"failureCount"`
	LastSent     *time.Time `bson:"lastSent,omitempty" json:"lastSent,omitempty"`
}

// Webhook is a document of <tool>-db.webhooks.
type Webhook struct {
	ID          bson.ObjectID     `bson:"_id" json:"id"`
	UserID      bson.ObjectID     `bson:"userId" json:"userId"`
	URL         string            `bson:"url" json:"url"`
	Events      []string          `bson:"events" json:"events"`
	IsActive    bool              `bson:"isActive" json:"isActive"`
	Secret      string            `bson:"secret" json:"-"`
	Headers     map[string]string `bson:"headers" json:"headers"`
	RetryPolicy RetryPolicy       `bson:"retryPolicy" json:"retryPolicy"`
	Stats       WebhookStats      `bson:"stats" json:"stats"`
	CreatedAt   time.Time         `bson:"createdAt" json:"createdAt"`
	// Not in the seed: the riskScore at or above which threshold.exceeded fires, the run of
	// failed attempts that disables the webhook, and why and when it was disabled.
	Threshold           float64    `bson:"threshold" json:"threshold"`
	ConsecutiveFailures int        `bson:"consecutiveFailures" json:"consecutiveFailures"`
	DisabledAt          *time.Time `bson:"disabledAt,omitempty" json:"disabledAt,omitempty"`
	DisabledReason      string     `bson:"disabledReason,omitempty" json:"disabledReason,omitempty"`
	UpdatedAt           *time.Time `bson:"updatedAt,omitempty" json:"updatedAt,omitempty"`
}

// APILogRequest is the logged request, sensitive headers redacted.
type APILogRequest struct {
	Headers map[string]string `bson:"headers" json:"headers"`
	Body    any               `bson:"body,omitempty" json:"body,omitempty"`
	Params  map[string]string `bson:"params,omitempty" json:"params,omitempty"`
}

// APILogResponse is the logged response.
type APILogResponse struct {
	StatusCode     int     `bson:"statusCode" json:"statusCode"`
	Body           any     `bson:"body,omitempty" json:"body,omitempty"`
	ProcessingTime float64 `bson:"processingTime" json:"processingTime"`
}

// APILog is a document of <tool>-db.api_logs.
type APILog struct {
	ID        bson.ObjectID  `bson:"_id" json:"id"`
	UserID    bson.ObjectID  `bson:"userId" json:"userId"`
	APIKeyID  bson.ObjectID  `bson:"apiKeyId" json:"apiKeyId"`
	Endpoint  string         `bson:"endpoint" json:"endpoint"`
	Method    string         `bson:"method" json:"method"`
	Request   APILogRequest  `bson:"request" json:"request"`
	Response  APILogResponse `bson:"response" json:"response"`
	IPAddress string         `bson:"ipAddress" json:"ipAddress"`
	UserAgent string         `bson:"userAgent" json:"userAgent"`
	Timestamp time.Time      `bson:"timestamp" json:"timestamp"`
}

// CountItem is one row of a top-N list.
type CountItem struct {
	Country string `bson:"country,omitempty" json:"country,omitempty"`
	Type    string `bson:"type,omitempty" json:"type,omitempty"`
	Count   int64  `bson:"count" json:"count"`
}

// AnalyticsMetrics are a day's request metrics.
type AnalyticsMetrics struct {
	TotalRequests         int64       `bson:"totalRequests" json:"totalRequests"`
	SuccessfulRequests    int64       `bson:"successfulRequests" json:"successfulRequests"`
	FailedRequests        int64       `bson:"failedRequests" json:"failedRequests"`
	AverageProcessingTime float64     `bson:"averageProcessingTime" json:"averageProcessingTime"`
	HighRiskDetections    int64       `bson:"highRiskDetections" json:"highRiskDetections"`
	UniqueIPs             int64       `bson:"uniqueIPs" json:"uniqueIPs"`
	TopCountries          []CountItem `bson:"topCountries" json:"topCountries"`
	TopThreats            []CountItem `bson:"topThreats" json:"topThreats"`
	// Not in the seed: the counts topCountries and topThreats are ranked from, and the sums
	// averageProcessingTime is computed from (analyses only).
	CountryCounts       map[string]int64 `bson:"countryCounts,omitempty" json:"-"`
	ThreatCounts        map[string]int64 `bson:"threatCounts,omitempty" json:"-"`
	ProcessingTimeTotal float64          `bson:"processingTimeTotal,omitempty" json:"-"`
	ProcessingSamples   int64            `bson:"processingSamples,omitempty" json:"-"`
}

// AIUsage is a day's AI chat usage.
type AIUsage struct {
	TotalMessages     int64            `bson:"totalMessages" json:"totalMessages"`
	TotalTokens       int64            `bson:"totalTokens" json:"totalTokens"`
	TotalCost         float64          `bson:"totalCost" json:"totalCost"`
	ProviderBreakdown map[string]int64 `bson:"providerBreakdown" json:"providerBreakdown"`
	// Not in the seed: the exact cost.
	TotalCostMicros int64 `bson:"totalCostMicros" json:"totalCostMicros"`
}

// Analytics is a document of <tool>-db.analytics: one per user per day.
type Analytics struct {
	ID      bson.ObjectID    `bson:"_id" json:"id"`
	UserID  bson.ObjectID    `bson:"userId" json:"userId"`
	Date    time.Time        `bson:"date" json:"date"` // midnight UTC
	Metrics AnalyticsMetrics `bson:"metrics" json:"metrics"`
	AIUsage AIUsage          `bson:"aiUsage" json:"aiUsage"`
}
