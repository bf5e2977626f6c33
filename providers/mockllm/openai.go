package mockllm

import (
	"encoding/json"
	"strconv"
)

// openAIFlavor writes chat.completion.chunk events: a role chunk, content
// chunks, a chunk with finish_reason, then (when the request set
// stream_options.include_usage) a usage chunk with empty choices, then
// data: [DONE]. Without include_usage the usage rides on the finish chunk,
// as Mistral sends it.
type openAIFlavor struct {
	o          Options
	head       []byte // chunk prefix up to "choices":
	usageChunk bool
}

const openAICreated = "1767225600"

func newOpenAI(o Options, model string, usageChunk bool) *openAIFlavor {
	q, _ := json.Marshal(model)
	head := append([]byte(`data: {"id":"chatcmpl-mock01","object":"chat.completion.chunk","created":`+openAICreated+`,"model":`), q...)
	head = append(head, `,"system_fingerprint":"fp_mock","choices":`...)
	return &openAIFlavor{o: o, head: head, usageChunk: usageChunk}
}

func (f *openAIFlavor) usage(b []byte) []byte {
	o := f.o
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(o.InputTokens+o.CacheReadTokens), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(o.OutputTokens()), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(o.InputTokens+o.CacheReadTokens+o.OutputTokens()), 10)
	b = append(b, `,"prompt_tokens_details":{"cached_tokens":`...)
	b = strconv.AppendInt(b, int64(o.CacheReadTokens), 10)
	b = append(b, `,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":`...)
	b = strconv.AppendInt(b, int64(o.ReasoningTokens), 10)
	return append(b, `,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}`...)
}

func (f *openAIFlavor) start(b []byte) []byte {
	b = append(b, f.head...)
	return append(b, `[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}`+"\n\n"...)
}

func (f *openAIFlavor) chunk(b []byte, _ int, text string) []byte {
	b = append(b, f.head...)
	b = append(b, `[{"index":0,"delta":{"content":"`...)
	b = append(b, text...)
	return append(b, `"},"logprobs":null,"finish_reason":null}],"usage":null}`+"\n\n"...)
}

func (f *openAIFlavor) errorEvent(b []byte) []byte {
	typ, code := "server_error", "server_is_overloaded"
	switch f.o.ErrorType {
	case "rate_limit":
		typ, code = "requests", "rate_limit_exceeded"
	case "server":
		typ, code = "server_error", "internal_error"
	}
	b = append(b, `data: {"error":{"message":"The server had an error while processing your request.","type":"`...)
	b = append(b, typ...)
	b = append(b, `","param":null,"code":"`...)
	b = append(b, code...)
	return append(b, "\"}}\n\n"...)
}

func (f *openAIFlavor) finish(b []byte) []byte {
	b = append(b, f.head...)
	b = append(b, `[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":`...)
	if !f.usageChunk && !f.o.NoUsage {
		b = f.usage(b)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, "}\n\n"...)
	if f.usageChunk && !f.o.NoUsage {
		b = append(b, f.head...)
		b = append(b, `[],"usage":`...)
		b = f.usage(b)
		b = append(b, "}\n\n"...)
	}
	return append(b, "data: [DONE]\n\n"...)
}

func (f *openAIFlavor) httpError(status int) []byte {
	typ, code := "invalid_request_error", "invalid_request"
	switch {
	case status == 401:
		typ, code = "invalid_request_error", "invalid_api_key"
	case status == 429:
		typ, code = "requests", "rate_limit_exceeded"
	case status >= 500:
		typ, code = "server_error", "server_error"
	}
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": "mock failure " + strconv.Itoa(status),
		"type": typ, "param": nil, "code": code}})
	return b
}

func (f *openAIFlavor) whole(text string) []byte {
	var u json.RawMessage = []byte("null")
	if !f.o.NoUsage {
		u = f.usage(nil)
	}
	b, _ := json.Marshal(map[string]any{"id": "chatcmpl-mock01", "object": "chat.completion", "created": 1767225600,
		"model": json.RawMessage(f.head[len(`data: {"id":"chatcmpl-mock01","object":"chat.completion.chunk","created":`+openAICreated+`,"model":`) : len(f.head)-len(`,"system_fingerprint":"fp_mock","choices":`)]),
		"choices": []map[string]any{{"index": 0, "message": map[string]any{"role": "assistant", "content": text},
			"logprobs": nil, "finish_reason": "stop"}}, "usage": u})
	return b
}
