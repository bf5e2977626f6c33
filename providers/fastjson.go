package providers

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// Text deltas are most of a stream, and encoding/json spends a few µs and
// several allocations on each one. The fast paths below read the exact
// layouts the providers send for a plain text delta and report ok=false
// for anything else, which then goes through encoding/json and the SDK
// types. Fuzz targets check that they agree with encoding/json whenever
// they accept an input.

// jsonString reads the JSON string whose content starts at b[start] (just
// after the opening quote). It returns the index of the closing quote and
// the decoded text.
func jsonString(b []byte, start int) (end int, text string, ok bool) {
	escaped := false
	j := start
	for ; j < len(b); j++ {
		c := b[j]
		if c == '\\' {
			escaped = true
			j++
			continue
		}
		if c == '"' {
			break
		}
		if c < 0x20 {
			return 0, "", false
		}
	}
	if j >= len(b) {
		return 0, "", false
	}
	raw := b[start:j]
	if !escaped {
		if !utf8.Valid(raw) {
			return 0, "", false // encoding/json's replacement rules apply
		}
		return j, string(raw), true
	}
	var s string
	if err := json.Unmarshal(b[start-1:j+1], &s); err != nil {
		return 0, "", false
	}
	return j, s, true
}

var (
	claudeDeltaPrefix = []byte(`{"type":"content_block_delta","index":`)
	claudeTextMarker  = []byte(`,"delta":{"type":"text_delta","text":"`)
	claudeDeltaTail   = []byte(`"}}`)
)

// fastTextDelta reads {"type":"content_block_delta","index":N,"delta":
// {"type":"text_delta","text":"..."}}.
func fastTextDelta(data []byte) (text string, ok bool) {
	if !bytes.HasPrefix(data, claudeDeltaPrefix) {
		return "", false
	}
	rest := data[len(claudeDeltaPrefix):]
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if n == 0 || !bytes.HasPrefix(rest[n:], claudeTextMarker) {
		return "", false
	}
	j, text, ok := jsonString(rest, n+len(claudeTextMarker))
	if !ok || !bytes.Equal(bytes.TrimRight(rest[j:], " \r\n"), claudeDeltaTail) {
		return "", false
	}
	return text, true
}

var (
	openAIDeltaMarker = []byte(`"choices":[{"index":0,"delta":{"content":"`)
	// what may follow the content string of a plain delta chunk (OpenAI,
	// xAI and Mistral layouts)
	openAIDeltaTails = [][]byte{
		[]byte(`"},"logprobs":null,"finish_reason":null}],"usage":null}`),
		[]byte(`"},"logprobs":null,"finish_reason":null}]}`),
		[]byte(`"},"finish_reason":null}],"usage":null}`),
		[]byte(`"},"finish_reason":null}]}`),
	}
)

// fastOpenAIDelta reads a chat.completion.chunk whose only choice is a
// content delta with no finish reason and no usage.
func fastOpenAIDelta(data []byte) (text string, ok bool) {
	i := bytes.Index(data, openAIDeltaMarker)
	if i < 0 {
		return "", false
	}
	// The fields before "choices" (id, object, created, model, ...) do not
	// matter, as long as they cannot hide a second choices or a usage.
	prefix := data[:i]
	if len(prefix) == 0 || prefix[0] != '{' || bytes.IndexByte(prefix, '\\') >= 0 ||
		bytes.Contains(prefix, []byte(`"choices"`)) || bytes.Contains(prefix, []byte(`"usage"`)) {
		return "", false
	}
	j, text, ok := jsonString(data, i+len(openAIDeltaMarker))
	if !ok {
		return "", false
	}
	tail := bytes.TrimRight(data[j:], " \r\n")
	for _, t := range openAIDeltaTails {
		if bytes.Equal(tail, t) {
			if !json.Valid(data) {
				return "", false
			}
			return text, true
		}
	}
	return "", false
}
