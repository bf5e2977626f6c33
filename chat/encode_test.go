package chat

import (
	"encoding/json"
	"testing"
)

// appendDelta must produce exactly what encoding/json would, for any text.
func FuzzAppendDelta(f *testing.F) {
	for _, s := range []string{"", "hello", "a\"b\\c", "line\nbreak\t<b>&", "\x00\x1f", "héllo 世界 🎉", "bad \xff utf8", "\u2028\u2029", string([]byte{0xe4, 0xb8})} {
		f.Add("req-1", uint64(7), s)
	}
	f.Fuzz(func(t *testing.T, id string, seq uint64, text string) {
		got := appendDelta(nil, id, seq, []byte(text))
		want, _ := json.Marshal(struct {
			Type string `json:"type"`
			ID   string `json:"id"`
			Seq  uint64 `json:"seq"`
			Text string `json:"text"`
		}{"chat.delta", id, seq, text})
		if string(got) != string(want) {
			t.Fatalf("appendDelta(%q, %d, %q)\n got %s\nwant %s", id, seq, text, got, want)
		}
	})
}
