// Package mockllm is a fake LLM upstream that speaks the Anthropic Messages
// stream, the OpenAI chat-completions stream (used by GPT, Grok and
// Mistral) and Gemini's streamGenerateContent, with failure injection.
// Tests, the benchmark and demos point the real SDKs at it.
//
// The streamed text is deterministic: chunk i is bytes [i*size, (i+1)*size)
// of an endless repetition of Pattern, so Text(opts) is exactly what a
// client must receive. Reported usage is derived from the options too
// (see Options).
package mockllm

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Pattern is repeated to build the streamed text (ASCII, no JSON escapes).
const Pattern = "The quick brown fox jumps over the lazy dog while maula streams tokens. "

// Options shape one response. Every field can be overridden per request
// with the X-Mock header (URL query syntax, e.g. "chunks=5&status=429") or
// with the same keys in the URL query. Keys are given in brackets.
type Options struct {
	Chunks          int           // [chunks] text chunks to stream
	ChunkSize       int           // [size] bytes per chunk
	Delay           time.Duration // [delay] pause between chunks
	FirstChunkDelay time.Duration // [ttfc] pause before the first chunk (time to first token)

	Status     int           // [status] answer with this HTTP error status instead of a stream (429, 500, 529, ...)
	RetryAfter time.Duration // [retry_after] sent as Retry-After (whole seconds, rounded up) and retry-after-ms
	ErrorAfter int           // [error_after] send a provider error event after this many chunks (-1 = never)
	ErrorType  string        // [error_type] error type of that event (default overloaded)
	ResetAfter int           // [reset_after] reset the TCP connection after this many chunks (-1 = never)
	NoUsage    bool          // [no_usage] send no usage at all
	NoFinish   bool          // [no_finish] end the body after the last chunk with no finish/stop event

	InputTokens      int // [input] uncached input tokens reported
	CacheReadTokens  int // [cache_read] cached input tokens reported
	CacheWriteTokens int // [cache_write] cache-creation tokens (Anthropic only)
	ReasoningTokens  int // [reasoning] reasoning/thinking tokens, added to the output count

	ID string // [id] request id under which the server records the request (see Server.Wait)
}

// DefaultOptions are used for zero Options passed to New.
var DefaultOptions = Options{Chunks: 16, ChunkSize: 8, ErrorAfter: -1, ResetAfter: -1, InputTokens: 25}

// OutputTokens is the output count the server reports: one token per chunk
// plus the reasoning tokens.
func (o Options) OutputTokens() int { return o.Chunks + o.ReasoningTokens }

// Text is the exact text the server streams for o (when no failure cuts it).
func Text(o Options) string {
	return textOf(o.Chunks * o.ChunkSize)
}

// ChunkText is the text of chunk i.
func ChunkText(o Options, i int) string {
	t := textOf((i + 1) * o.ChunkSize)
	return t[i*o.ChunkSize:]
}

// Header returns the X-Mock header value that sets o on a request.
func (o Options) Header() string {
	v := url.Values{}
	v.Set("chunks", strconv.Itoa(o.Chunks))
	v.Set("size", strconv.Itoa(o.ChunkSize))
	v.Set("delay", o.Delay.String())
	v.Set("ttfc", o.FirstChunkDelay.String())
	if o.Status != 0 {
		v.Set("status", strconv.Itoa(o.Status))
	}
	if o.RetryAfter != 0 {
		v.Set("retry_after", o.RetryAfter.String())
	}
	v.Set("error_after", strconv.Itoa(o.ErrorAfter))
	if o.ErrorType != "" {
		v.Set("error_type", o.ErrorType)
	}
	v.Set("reset_after", strconv.Itoa(o.ResetAfter))
	if o.NoUsage {
		v.Set("no_usage", "1")
	}
	if o.NoFinish {
		v.Set("no_finish", "1")
	}
	v.Set("input", strconv.Itoa(o.InputTokens))
	v.Set("cache_read", strconv.Itoa(o.CacheReadTokens))
	v.Set("cache_write", strconv.Itoa(o.CacheWriteTokens))
	v.Set("reasoning", strconv.Itoa(o.ReasoningTokens))
	if o.ID != "" {
		v.Set("id", o.ID)
	}
	return v.Encode()
}

// HeaderName is the request header carrying per-request options.
const HeaderName = "X-Mock"

// apply overrides o with the values in v.
func (o *Options) apply(v url.Values) error {
	for k, vs := range v {
		if len(vs) == 0 {
			continue
		}
		s := vs[len(vs)-1]
		var err error
		switch k {
		case "chunks":
			o.Chunks, err = strconv.Atoi(s)
		case "size":
			o.ChunkSize, err = strconv.Atoi(s)
		case "delay":
			o.Delay, err = time.ParseDuration(s)
		case "ttfc":
			o.FirstChunkDelay, err = time.ParseDuration(s)
		case "status":
			o.Status, err = strconv.Atoi(s)
		case "retry_after":
			o.RetryAfter, err = time.ParseDuration(s)
		case "error_after":
			o.ErrorAfter, err = strconv.Atoi(s)
		case "error_type":
			o.ErrorType = s
		case "reset_after":
			o.ResetAfter, err = strconv.Atoi(s)
		case "no_usage":
			o.NoUsage, err = strconv.ParseBool(s)
		case "no_finish":
			o.NoFinish, err = strconv.ParseBool(s)
		case "input":
			o.InputTokens, err = strconv.Atoi(s)
		case "cache_read":
			o.CacheReadTokens, err = strconv.Atoi(s)
		case "cache_write":
			o.CacheWriteTokens, err = strconv.Atoi(s)
		case "reasoning":
			o.ReasoningTokens, err = strconv.Atoi(s)
		case "id":
			o.ID = s
		case "alt", "key": // Gemini's own query parameters
		default:
			continue
		}
		if err != nil {
			return fmt.Errorf("mock option %s=%q: %w", k, s, err)
		}
	}
	if o.Chunks < 0 || o.ChunkSize < 0 {
		return fmt.Errorf("mock options: negative chunks or size")
	}
	return nil
}

// requestOptions merges the server defaults with the request's overrides.
func requestOptions(def Options, r *http.Request) (Options, error) {
	o := def
	if h := r.Header.Get(HeaderName); h != "" {
		v, err := url.ParseQuery(h)
		if err != nil {
			return o, fmt.Errorf("%s header: %w", HeaderName, err)
		}
		if err := o.apply(v); err != nil {
			return o, err
		}
	}
	if r.URL.RawQuery != "" {
		if err := o.apply(r.URL.Query()); err != nil {
			return o, err
		}
	}
	return o, nil
}

// pattern64k is Pattern repeated to at least 64 KiB, sliced without
// allocating for all common sizes.
var pattern64k = strings.Repeat(Pattern, 65536/len(Pattern)+1)

func textOf(n int) string {
	if n <= len(pattern64k) {
		return pattern64k[:n]
	}
	return strings.Repeat(Pattern, n/len(Pattern)+1)[:n]
}
