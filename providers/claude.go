package providers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/anthropics/anthropic-sdk-go/v2/packages/ssestream"
)

// claudeProvider streams from the Anthropic Messages API.
type claudeProvider struct {
	client       anthropic.Client
	defaultModel string
}

func newClaude(pc ProviderConfig, hc *http.Client) *claudeProvider {
	opts := []option.RequestOption{
		option.WithoutEnvironmentDefaults(), // config comes from Config, not the SDK's own env lookup
		option.WithAPIKey(pc.APIKey),
		option.WithHTTPClient(hc),
		option.WithMaxRetries(0), // the Registry retries, and only before the first token
	}
	if pc.BaseURL != "" {
		opts = append(opts, option.WithBaseURL(pc.BaseURL))
	}
	return &claudeProvider{client: anthropic.NewClient(opts...), defaultModel: pc.DefaultModel}
}

// Name returns "claude".
func (p *claudeProvider) Name() string { return "claude" }

// DefaultModel returns the configured default model.
func (p *claudeProvider) DefaultModel() string { return p.defaultModel }

// Stream starts a Messages stream. The HTTP call happens here, so HTTP
// errors are returned directly.
func (p *claudeProvider) Stream(ctx context.Context, req *Request) (Stream, error) {
	model := req.Model
	if model == "" {
		model = p.defaultModel
	}
	params := claudeParams(model, req)
	var extra []option.RequestOption
	if req.Temperature != nil {
		// The v2 SDK no longer models temperature; the API still accepts it.
		extra = append(extra, option.WithJSONSet("temperature", *req.Temperature))
	}
	ctx, ri := withRespInfo(ctx)
	// The SDK builds, sends and (on HTTP errors) decodes the call. The event
	// stream is read with the SDK's SSE decoder, but text deltas, the hot
	// path, are decoded into a small struct: the SDK's reflective decoding
	// of every event cost about 10 µs and 26 allocations per chunk.
	var raw *http.Response
	st := p.client.Messages.NewStreaming(ctx, params, append(extra, option.WithResponseInto(&raw))...)
	if err := st.Err(); err != nil {
		_ = st.Close()
		return nil, claudeError(err, ri)
	}
	s := &claudeStream{resp: raw, dec: ssestream.NewDecoder(raw), ri: ri}
	s.core = newCore(ctx, "claude", model, req, st.Close)
	return s, nil
}

// claudeParams maps a Request to Messages parameters. The system prompt and
// the tool context are separate system blocks; with CacheHint the last one
// carries cache_control so the whole stable prefix is cached by Anthropic.
func claudeParams(model string, req *Request) anthropic.MessageNewParams {
	p := anthropic.MessageNewParams{Model: model, MaxTokens: int64(req.MaxTokens), StopSequences: req.Stop}
	if p.MaxTokens <= 0 {
		p.MaxTokens = DefaultMaxTokens
	}
	for _, s := range []string{req.System, req.Context} {
		if s != "" {
			p.System = append(p.System, anthropic.TextBlockParam{Text: s})
		}
	}
	for _, m := range req.Messages {
		switch m.Role {
		case RoleSystem:
			p.System = append(p.System, anthropic.TextBlockParam{Text: m.Content})
		case RoleAssistant:
			p.Messages = append(p.Messages, anthropic.NewAssistantMessage(anthropic.NewTextBlock(m.Content)))
		default:
			p.Messages = append(p.Messages, anthropic.NewUserMessage(anthropic.NewTextBlock(m.Content)))
		}
	}
	if req.CacheHint && len(p.System) > 0 {
		p.System[len(p.System)-1].CacheControl = anthropic.NewCacheControlEphemeralParam()
	}
	return p
}

// claudeStream adapts the SDK's event stream. Usage arrives in two parts:
// message_start carries input and cache counts, message_delta the
// cumulative output (and, in newer API versions, cumulative input too).
type claudeStream struct {
	core       *streamCore
	resp       *http.Response
	dec        ssestream.Decoder
	ri         *respInfo
	d          claudeTextDelta // reused: decoding into it does not allocate per chunk
	stopReason string
	sawStop    bool // message_delta with a stop_reason or message_stop seen
}

// Recv returns the next event.
func (s *claudeStream) Recv() (Event, error) {
	c := s.core
	if c.done {
		return Event{}, io.EOF
	}
	if c.cancelled() {
		return c.finish(FinishCancelled), nil
	}
	for s.dec.Next() {
		e := s.dec.Event()
		switch e.Type {
		case "content_block_delta":
			if t, ok := fastTextDelta(e.Data); ok {
				if t != "" {
					return c.delta(t), nil
				}
				continue
			}
			s.d = claudeTextDelta{}
			if err := json.Unmarshal(e.Data, &s.d); err != nil {
				return c.fail(transportError("claude", fmt.Errorf("decoding content_block_delta: %w", err))), nil
			}
			if s.d.Delta.Type == "text_delta" && s.d.Delta.Text != "" {
				return c.delta(s.d.Delta.Text), nil
			}
		case "message_start", "message_delta", "message_stop":
			var ev anthropic.MessageStreamEventUnion
			if err := json.Unmarshal(e.Data, &ev); err != nil {
				return c.fail(transportError("claude", fmt.Errorf("decoding %s: %w", e.Type, err))), nil
			}
			if done := s.event(&ev); done {
				return c.finish(claudeFinishReason(s.stopReason)), nil
			}
		case "error":
			ae := &anthropic.Error{StatusCode: s.resp.StatusCode, Request: s.resp.Request, Response: s.resp}
			_ = ae.UnmarshalJSON(bytes.TrimSpace(e.Data))
			return c.fail(claudeError(ae, s.ri)), nil
		}
		// ping and content_block_start/stop carry nothing we relay.
	}
	if err := s.dec.Err(); err != nil {
		return c.fail(claudeError(err, s.ri)), nil
	}
	if s.sawStop {
		return c.finish(claudeFinishReason(s.stopReason)), nil
	}
	return c.fail(incompleteError("claude")), nil
}

// claudeTextDelta is the part of a content_block_delta event we use.
type claudeTextDelta struct {
	Delta struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"delta"`
}

// event handles message_start, message_delta and message_stop; it reports
// whether the message is complete.
func (s *claudeStream) event(ev *anthropic.MessageStreamEventUnion) bool {
	c := s.core
	switch ev.Type {
	case "message_start":
		u := &ev.Message.Usage
		s.usage(u.InputTokens, u.CacheReadInputTokens, u.CacheCreationInputTokens, u.OutputTokens,
			u.OutputTokensDetails.ThinkingTokens,
			u.JSON.InputTokens.Valid(), u.JSON.CacheReadInputTokens.Valid(),
			u.JSON.CacheCreationInputTokens.Valid(), u.JSON.OutputTokens.Valid(),
			u.OutputTokensDetails.JSON.ThinkingTokens.Valid())
	case "message_delta":
		u := &ev.Usage
		s.usage(u.InputTokens, u.CacheReadInputTokens, u.CacheCreationInputTokens, u.OutputTokens,
			u.OutputTokensDetails.ThinkingTokens,
			u.JSON.InputTokens.Valid(), u.JSON.CacheReadInputTokens.Valid(),
			u.JSON.CacheCreationInputTokens.Valid(), u.JSON.OutputTokens.Valid(),
			u.OutputTokensDetails.JSON.ThinkingTokens.Valid())
		if u.JSON.OutputTokens.Valid() {
			c.final = true
		}
		if ev.Delta.StopReason != "" {
			s.stopReason = string(ev.Delta.StopReason)
			s.sawStop = true
		}
	case "message_stop":
		s.sawStop = true
		return true
	}
	return false
}

// usage merges one usage report; fields absent from the JSON keep their
// earlier value, which is how message_start and message_delta combine.
func (s *claudeStream) usage(in, cacheRead, cacheWrite, out, thinking int64, inOK, crOK, cwOK, outOK, thOK bool) {
	u := &s.core.usage
	if inOK {
		u.Input = in
		s.core.haveInput = true
	}
	if crOK {
		u.CacheRead = cacheRead
	}
	if cwOK {
		u.CacheWrite = cacheWrite
	}
	if outOK {
		u.Output = out
	}
	if thOK {
		u.Reasoning = thinking
	}
}

// Close releases the HTTP response.
func (s *claudeStream) Close() error { return s.core.close() }

func claudeFinishReason(r string) string {
	switch r {
	case "end_turn", "":
		return FinishStop
	case "max_tokens", "model_context_window_exceeded":
		return FinishLength
	case "stop_sequence":
		return FinishStopSequence
	case "refusal":
		return FinishContentFilter
	case "tool_use":
		return FinishToolUse
	}
	return r
}

// claudeError maps SDK errors. A mid-stream "error" event arrives on a 200
// response, so its error type, not the HTTP status, decides the class.
func claudeError(err error, ri *respInfo) *Error {
	var ae *anthropic.Error
	if errors.As(err, &ae) {
		status := ae.StatusCode
		if t := errorTypeStatus(string(ae.Type())); t != 0 && (status < 400 || status == 0) {
			status = t
		}
		if status >= 400 {
			return newHTTPError("claude", status, ri.retryAfter(), err)
		}
	}
	if strings.Contains(err.Error(), "received error while streaming") {
		return newHTTPError("claude", 500, 0, err)
	}
	return transportError("claude", err)
}
