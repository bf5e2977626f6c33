package providers

import (
	"context"
	"errors"
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
	st := p.client.Messages.NewStreaming(ctx, params, extra...)
	s := &claudeStream{st: st, ri: ri}
	s.core = newCore(ctx, "claude", model, req, st.Close)
	if err := st.Err(); err != nil {
		_ = s.core.close()
		return nil, claudeError(err, ri)
	}
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
	st         *ssestream.Stream[anthropic.MessageStreamEventUnion]
	ri         *respInfo
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
	for s.st.Next() {
		ev := s.st.Current()
		switch ev.Type {
		case "message_start":
			s.usage(ev.Message.Usage.InputTokens, ev.Message.Usage.CacheReadInputTokens,
				ev.Message.Usage.CacheCreationInputTokens, ev.Message.Usage.OutputTokens,
				ev.Message.Usage.OutputTokensDetails.ThinkingTokens,
				ev.Message.Usage.JSON.InputTokens.Valid(), ev.Message.Usage.JSON.CacheReadInputTokens.Valid(),
				ev.Message.Usage.JSON.CacheCreationInputTokens.Valid(), ev.Message.Usage.JSON.OutputTokens.Valid(),
				ev.Message.Usage.OutputTokensDetails.JSON.ThinkingTokens.Valid())
		case "content_block_delta":
			if ev.Delta.Type == "text_delta" && ev.Delta.Text != "" {
				return c.delta(ev.Delta.Text), nil
			}
		case "message_delta":
			u := ev.Usage
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
			return c.finish(claudeFinishReason(s.stopReason)), nil
		}
	}
	if err := s.st.Err(); err != nil {
		return c.fail(claudeError(err, s.ri)), nil
	}
	if s.sawStop {
		return c.finish(claudeFinishReason(s.stopReason)), nil
	}
	return c.fail(incompleteError("claude")), nil
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
