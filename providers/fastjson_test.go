package providers

import (
	"encoding/json"
	"testing"
)

// FuzzFastTextDelta: whenever the fast path accepts an event, it must
// agree with encoding/json.
func FuzzFastTextDelta(f *testing.F) {
	for _, s := range []string{
		`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}`,
		`{"type":"content_block_delta","index":12,"delta":{"type":"text_delta","text":"a \"q\" \u00e9 \ud83d\ude00 \\ \n"}}` + "\n",
		`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{"}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"},"extra":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, ok := fastTextDelta(data)
		if !ok {
			return
		}
		var d claudeTextDelta
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("fast path accepted invalid JSON %q: %v", data, err)
		}
		if d.Delta.Type != "text_delta" || d.Delta.Text != got {
			t.Fatalf("fast %q, json %q (%s) for %q", got, d.Delta.Text, d.Delta.Type, data)
		}
	})
}
