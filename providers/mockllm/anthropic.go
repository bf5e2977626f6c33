package mockllm

import (
	"encoding/json"
	"strconv"
)

// anthropicFlavor writes the Messages API stream: message_start (input and
// cache usage), content_block_start, ping, content_block_delta...,
// content_block_stop, message_delta (stop_reason, cumulative output
// usage), message_stop.
type anthropicFlavor struct {
	o     Options
	model []byte // JSON-quoted
}

func newAnthropic(o Options, model string) *anthropicFlavor {
	q, _ := json.Marshal(model)
	return &anthropicFlavor{o: o, model: q}
}

func (a *anthropicFlavor) usage(b []byte, output int) []byte {
	b = append(b, `{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(a.o.InputTokens), 10)
	b = append(b, `,"cache_creation_input_tokens":`...)
	b = strconv.AppendInt(b, int64(a.o.CacheWriteTokens), 10)
	b = append(b, `,"cache_read_input_tokens":`...)
	b = strconv.AppendInt(b, int64(a.o.CacheReadTokens), 10)
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, int64(output), 10)
	b = append(b, `,"service_tier":"standard"}`...)
	return b
}

func (a *anthropicFlavor) start(b []byte) []byte {
	b = append(b, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_mock01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":"...)
	b = append(b, a.model...)
	b = append(b, `,"content":[],"stop_reason":null,"stop_sequence":null,"usage":`...)
	if a.o.NoUsage {
		b = append(b, `{}`...)
	} else {
		b = a.usage(b, 1)
	}
	b = append(b, "}}\n\n"...)
	b = append(b, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"...)
	b = append(b, "event: ping\ndata: {\"type\": \"ping\"}\n\n"...)
	return b
}

func (a *anthropicFlavor) chunk(b []byte, _ int, text string) []byte {
	b = append(b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\""...)
	b = append(b, text...)
	return append(b, "\"}}\n\n"...)
}

func (a *anthropicFlavor) errorEvent(b []byte) []byte {
	typ, msg := "overloaded_error", "Overloaded"
	switch a.o.ErrorType {
	case "rate_limit":
		typ, msg = "rate_limit_error", "Rate limited"
	case "server":
		typ, msg = "api_error", "Internal server error"
	}
	b = append(b, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\""...)
	b = append(b, typ...)
	b = append(b, `","message":"`...)
	b = append(b, msg...)
	return append(b, "\"}}\n\n"...)
}

func (a *anthropicFlavor) finish(b []byte) []byte {
	b = append(b, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"...)
	b = append(b, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}"...)
	if !a.o.NoUsage {
		// Only the cumulative output count: the input part came in message_start.
		b = append(b, `,"usage":{"output_tokens":`...)
		b = strconv.AppendInt(b, int64(a.o.OutputTokens()), 10)
		if a.o.ReasoningTokens > 0 {
			b = append(b, `,"output_tokens_details":{"thinking_tokens":`...)
			b = strconv.AppendInt(b, int64(a.o.ReasoningTokens), 10)
			b = append(b, '}')
		}
		b = append(b, '}')
	}
	b = append(b, "}\n\n"...)
	return append(b, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"...)
}

func (a *anthropicFlavor) httpError(status int) []byte {
	typ := map[int]string{400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
		404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}[status]
	if typ == "" {
		typ = "api_error"
	}
	b, _ := json.Marshal(map[string]any{"type": "error", "request_id": "req_mock01",
		"error": map[string]string{"type": typ, "message": "mock failure " + strconv.Itoa(status)}})
	return b
}

func (a *anthropicFlavor) whole(text string) []byte {
	var u []byte
	if !a.o.NoUsage {
		u = a.usage(nil, a.o.OutputTokens())
	} else {
		u = []byte("{}")
	}
	b, _ := json.Marshal(map[string]any{"id": "msg_mock01", "type": "message", "role": "assistant",
		"model": json.RawMessage(a.model), "content": []map[string]string{{"type": "text", "text": text}},
		"stop_reason": "end_turn", "stop_sequence": nil, "usage": json.RawMessage(u)})
	return b
}
