package mockllm

import (
	"encoding/json"
	"strconv"
)

// geminiFlavor writes streamGenerateContent?alt=sse: one
// GenerateContentResponse per data: line. Text chunks carry no usage; the
// last chunk has finishReason STOP, an empty text part and the full
// usageMetadata (promptTokenCount includes cachedContentTokenCount;
// thoughtsTokenCount is separate from candidatesTokenCount).
type geminiFlavor struct {
	o     Options
	model []byte
}

func newGemini(o Options, model string) *geminiFlavor {
	q, _ := json.Marshal(model)
	return &geminiFlavor{o: o, model: q}
}

func (g *geminiFlavor) start(b []byte) []byte { return b }

func (g *geminiFlavor) chunk(b []byte, _ int, text string) []byte {
	b = append(b, `data: {"candidates":[{"content":{"parts":[{"text":"`...)
	b = append(b, text...)
	b = append(b, `"}],"role":"model"},"index":0}],"modelVersion":`...)
	b = append(b, g.model...)
	return append(b, `,"responseId":"mock01"}`+"\r\n\r\n"...)
}

func (g *geminiFlavor) usage(b []byte) []byte {
	o := g.o
	prompt := o.InputTokens + o.CacheReadTokens
	b = append(b, `{"promptTokenCount":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `,"candidatesTokenCount":`...)
	b = strconv.AppendInt(b, int64(o.Chunks), 10)
	if o.CacheReadTokens > 0 {
		b = append(b, `,"cachedContentTokenCount":`...)
		b = strconv.AppendInt(b, int64(o.CacheReadTokens), 10)
	}
	if o.ReasoningTokens > 0 {
		b = append(b, `,"thoughtsTokenCount":`...)
		b = strconv.AppendInt(b, int64(o.ReasoningTokens), 10)
	}
	b = append(b, `,"totalTokenCount":`...)
	b = strconv.AppendInt(b, int64(prompt+o.Chunks+o.ReasoningTokens), 10)
	return append(b, '}')
}

func (g *geminiFlavor) errorEvent(b []byte) []byte {
	code, status, msg := "503", "UNAVAILABLE", "The model is overloaded. Please try again later."
	switch g.o.ErrorType {
	case "rate_limit":
		code, status, msg = "429", "RESOURCE_EXHAUSTED", "Resource has been exhausted."
	case "server":
		code, status, msg = "500", "INTERNAL", "An internal error has occurred."
	}
	b = append(b, `data: {"error":{"code":`...)
	b = append(b, code...)
	b = append(b, `,"message":"`...)
	b = append(b, msg...)
	b = append(b, `","status":"`...)
	b = append(b, status...)
	return append(b, "\"}}\r\n\r\n"...)
}

func (g *geminiFlavor) finish(b []byte) []byte {
	b = append(b, `data: {"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},"finishReason":"STOP","index":0}]`...)
	if !g.o.NoUsage {
		b = append(b, `,"usageMetadata":`...)
		b = g.usage(b)
	}
	b = append(b, `,"modelVersion":`...)
	b = append(b, g.model...)
	return append(b, `,"responseId":"mock01"}`+"\r\n\r\n"...)
}

func (g *geminiFlavor) httpError(status int) []byte {
	st := map[int]string{400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
		429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}[status]
	if st == "" {
		st = "UNKNOWN"
	}
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": status, "message": "mock failure " + strconv.Itoa(status), "status": st}})
	return b
}

func (g *geminiFlavor) whole(text string) []byte {
	m := map[string]any{"candidates": []map[string]any{{"content": map[string]any{"parts": []map[string]string{{"text": text}}, "role": "model"},
		"finishReason": "STOP", "index": 0}}, "modelVersion": json.RawMessage(g.model), "responseId": "mock01"}
	if !g.o.NoUsage {
		m["usageMetadata"] = json.RawMessage(g.usage(nil))
	}
	b, _ := json.Marshal(m)
	return b
}
