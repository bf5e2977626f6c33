package providers

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// Text deltas are most of a stream, and encoding/json spends a few µs and
// several allocations on each. fastTextDelta reads the exact layout the
// Messages API sends, {"type":"content_block_delta","index":N,"delta":
// {"type":"text_delta","text":"..."}}, and reports ok=false for anything
// else, which then goes through encoding/json. Fuzzed against it.
var (
	claudeDeltaPrefix = []byte(`{"type":"content_block_delta","index":`)
	claudeTextMarker  = []byte(`,"delta":{"type":"text_delta","text":"`)
	claudeDeltaTail   = []byte(`"}}`)
)

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
	start := n + len(claudeTextMarker) // first byte of the string's content
	escaped := false
	j := start
	for ; j < len(rest); j++ {
		c := rest[j]
		if c == '\\' {
			escaped = true
			j++
			continue
		}
		if c == '"' {
			break
		}
		if c < 0x20 {
			return "", false
		}
	}
	if j >= len(rest) || !bytes.Equal(bytes.TrimRight(rest[j:], " \r\n"), claudeDeltaTail) {
		return "", false
	}
	raw := rest[start:j]
	if !escaped {
		if !utf8.Valid(raw) {
			return "", false // encoding/json's replacement rules apply
		}
		return string(raw), true
	}
	var s string
	if err := json.Unmarshal(rest[start-1:j+1], &s); err != nil {
		return "", false
	}
	return s, true
}
