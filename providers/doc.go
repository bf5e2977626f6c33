// Package providers turns a chat request into a stream of typed events from
// one of the upstream LLM providers (claude, gpt, grok, mistral, gemini) or the
// offline echo provider.
//
// The package knows nothing of users, tools, storage or money beyond token
// counts and prices: the hub calls [Registry.Stream], relays [EventDelta]
// text, and bills the [Usage] of the terminal event with [PriceBook.Cost].
//
// Usage is normalised across providers so that cost never double counts:
// Usage.Input is the uncached input (billed at the input price), CacheRead and
// CacheWrite are billed at their own prices, and Output includes the
// Reasoning tokens (Reasoning is an informational subset, not billed again).
package providers
