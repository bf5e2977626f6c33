package providers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	openai "github.com/sashabaranov/go-openai"
)

// Public endpoints of the OpenAI-compatible providers.
const (
	openAIBaseURL  = "https://api.openai.com/v1"
	xAIBaseURL     = "https://api.x.ai/v1"
	mistralBaseURL = "https://api.mistral.ai/v1"
)

// openAIProvider streams chat completions from OpenAI or an OpenAI-compatible
// API (xAI for grok, Mistral).
type openAIProvider struct {
	name         string
	client       *openai.Client
	defaultModel string
	// includeUsage sends stream_options.include_usage. Mistral always puts
	// usage on its last chunk and does not document stream_options, so it is
	// not sent there.
	includeUsage bool
	// maxCompletion sends max_completion_tokens (OpenAI's current field,
	// required by reasoning models) instead of the legacy max_tokens.
	maxCompletion bool
}

func newOpenAICompatible(name string, pc ProviderConfig, hc *http.Client) *openAIProvider {
	base := map[string]string{"gpt": openAIBaseURL, "grok": xAIBaseURL, "mistral": mistralBaseURL}[name]
	if pc.BaseURL != "" {
		base = strings.TrimRight(pc.BaseURL, "/")
	}
	cc := openai.DefaultConfig(pc.APIKey)
	cc.BaseURL = base
	cc.HTTPClient = hc
	return &openAIProvider{
		name: name, client: openai.NewClientWithConfig(cc), defaultModel: pc.DefaultModel,
		includeUsage: name != "mistral", maxCompletion: name == "gpt",
	}
}

// Name returns the provider name.
func (p *openAIProvider) Name() string { return p.name }

// DefaultModel returns the configured default model.
func (p *openAIProvider) DefaultModel() string { return p.defaultModel }

// Stream starts a chat-completions stream.
func (p *openAIProvider) Stream(ctx context.Context, req *Request) (Stream, error) {
	model := req.Model
	if model == "" {
		model = p.defaultModel
	}
	ccr := p.params(model, req)
	ctx, ri := withRespInfo(ctx)
	st, err := p.client.CreateChatCompletionStream(ctx, ccr)
	if err != nil {
		var ue *url.Error
		var ae *openai.APIError
		var re *openai.RequestError
		if !errors.As(err, &ue) && !errors.As(err, &ae) && !errors.As(err, &re) && ctx.Err() == nil {
			// go-openai refused the request before sending it (parameter
			// validation): retrying cannot help.
			return nil, &Error{Provider: p.name, Code: CodeInvalidRequest, Status: 400,
				Message: p.name + ": the request is not valid for model " + model, Err: err}
		}
		return nil, openAIError(p.name, err, ri)
	}
	s := &openAIStream{name: p.name, st: st, ri: ri}
	s.core = newCore(ctx, p.name, model, req, st.Close)
	return s, nil
}

func (p *openAIProvider) params(model string, req *Request) openai.ChatCompletionRequest {
	ccr := openai.ChatCompletionRequest{Model: model, Stream: true, Stop: req.Stop}
	if p.includeUsage {
		ccr.StreamOptions = &openai.StreamOptions{IncludeUsage: true}
	}
	if req.MaxTokens > 0 {
		if p.maxCompletion {
			ccr.MaxCompletionTokens = req.MaxTokens
		} else {
			ccr.MaxTokens = req.MaxTokens
		}
	}
	if req.Temperature != nil && !fixedTemperature(model) {
		ccr.Temperature = float32(*req.Temperature)
	}
	// One system message with the stable prefix first: OpenAI-style APIs cache
	// identical prompt prefixes automatically, CacheHint needs no marker.
	sys := req.System
	if req.Context != "" {
		if sys != "" {
			sys += "\n\n"
		}
		sys += req.Context
	}
	if sys != "" {
		ccr.Messages = append(ccr.Messages, openai.ChatCompletionMessage{Role: openai.ChatMessageRoleSystem, Content: sys})
	}
	for _, m := range req.Messages {
		role := openai.ChatMessageRoleUser
		switch m.Role {
		case RoleSystem:
			role = openai.ChatMessageRoleSystem
		case RoleAssistant:
			role = openai.ChatMessageRoleAssistant
		}
		ccr.Messages = append(ccr.Messages, openai.ChatCompletionMessage{Role: role, Content: m.Content})
	}
	return ccr
}

// openAIStream adapts go-openai's chunk stream. Usage comes in the last chunk
// (choices empty) when include_usage is on, or on the finish chunk (Mistral).
type openAIStream struct {
	name   string
	core   *streamCore
	st     *openai.ChatCompletionStream
	ri     *respInfo
	reason string // finish_reason seen
}

// Recv returns the next event.
func (s *openAIStream) Recv() (Event, error) {
	c := s.core
	if c.done {
		return Event{}, io.EOF
	}
	if c.cancelled() {
		return c.finish(FinishCancelled), nil
	}
	for {
		raw, err := s.st.RecvRaw()
		if err != nil {
			if errors.Is(err, io.EOF) {
				// go-openai reports [DONE] and a clean close alike; a
				// finish_reason tells a complete reply from a cut one.
				if s.reason != "" {
					return c.finish(openAIFinishReason(s.reason)), nil
				}
				return c.fail(incompleteError(s.name)), nil
			}
			return c.fail(openAIError(s.name, err, s.ri)), nil
		}
		if t, ok := fastOpenAIDelta(raw); ok {
			if t != "" {
				return c.delta(t), nil
			}
			continue
		}
		// Anything but a plain text delta: decode into the SDK's type, as
		// its Recv would.
		var chunk openai.ChatCompletionStreamResponse
		if err := json.Unmarshal(raw, &chunk); err != nil {
			return c.fail(transportError(s.name, fmt.Errorf("decoding chunk: %w", err))), nil
		}
		if u := chunk.Usage; u != nil {
			s.setUsage(u)
		}
		var text string
		for i := range chunk.Choices {
			ch := &chunk.Choices[i]
			if ch.Index != 0 {
				continue // we never ask for n > 1
			}
			text = ch.Delta.Content
			if ch.FinishReason != "" {
				s.reason = string(ch.FinishReason)
			}
		}
		if text != "" {
			return c.delta(text), nil
		}
	}
}

func (s *openAIStream) setUsage(u *openai.Usage) {
	c := s.core
	var cached, reasoning int64
	if u.PromptTokensDetails != nil {
		cached = int64(u.PromptTokensDetails.CachedTokens)
	}
	if u.CompletionTokensDetails != nil {
		reasoning = int64(u.CompletionTokensDetails.ReasoningTokens)
	}
	// prompt_tokens includes cached tokens; Usage.Input is the uncached part.
	c.usage = Usage{Input: int64(u.PromptTokens) - cached, CacheRead: cached,
		Output: int64(u.CompletionTokens), Reasoning: reasoning}
	if c.usage.Input < 0 {
		c.usage.Input = 0
	}
	c.haveInput = true
	c.final = true
}

// Close releases the HTTP response.
func (s *openAIStream) Close() error { return s.core.close() }

// fixedTemperature reports OpenAI reasoning models, which accept only the
// default temperature; the request's temperature is dropped for them rather
// than failing the call.
func fixedTemperature(model string) bool {
	for _, p := range []string{"o1", "o3", "o4", "gpt-5", "gpt-6"} {
		if strings.HasPrefix(model, p) {
			return true
		}
	}
	return false
}

func openAIFinishReason(r string) string {
	switch r {
	case "stop":
		return FinishStop
	case "length", "model_length":
		return FinishLength
	case "content_filter":
		return FinishContentFilter
	case "tool_calls", "function_call":
		return FinishToolUse
	}
	return r
}

// openAIError maps go-openai errors. Mid-stream error objects have no HTTP
// status; their type or code decides.
func openAIError(name string, err error, ri *respInfo) *Error {
	var ae *openai.APIError
	if errors.As(err, &ae) {
		status := ae.HTTPStatusCode
		if status < 400 {
			status = errorTypeStatus(ae.Type)
			if status == 0 {
				status = errorTypeStatus(fmt.Sprint(ae.Code))
			}
			if status == 0 {
				status = 500
			}
		}
		return newHTTPError(name, status, ri.retryAfter(), err)
	}
	var re *openai.RequestError
	if errors.As(err, &re) && re.HTTPStatusCode >= 400 {
		return newHTTPError(name, re.HTTPStatusCode, ri.retryAfter(), err)
	}
	return transportError(name, err)
}
