package providers

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/maula-ai/maula-chat/providers/mockllm"
)

// TestRequestShape checks what each adapter sends: the stable prefix first
// (with cache_control on Anthropic), usage requested where the API needs it.
func TestRequestShape(t *testing.T) {
	env := newMockEnv(t)
	temp := 0.3
	cases := []struct {
		provider string
		check    func(t *testing.T, body map[string]any)
	}{
		{"claude", func(t *testing.T, b map[string]any) {
			sys := b["system"].([]any)
			if len(sys) != 2 {
				t.Fatalf("system blocks = %v", sys)
			}
			last := sys[1].(map[string]any)
			if cc, _ := last["cache_control"].(map[string]any); cc["type"] != "ephemeral" {
				t.Errorf("no cache_control on the context block: %v", last)
			}
			if b["temperature"] != 0.3 || b["max_tokens"] != 256.0 || b["stream"] != true {
				t.Errorf("params = %v", b)
			}
		}},
		{"gpt", func(t *testing.T, b map[string]any) {
			if so, _ := b["stream_options"].(map[string]any); so["include_usage"] != true {
				t.Errorf("include_usage missing: %v", b)
			}
			if b["max_completion_tokens"] != 256.0 {
				t.Errorf("max_completion_tokens = %v", b["max_completion_tokens"])
			}
			msgs := b["messages"].([]any)
			if msgs[0].(map[string]any)["role"] != "system" {
				t.Errorf("first message not system: %v", msgs[0])
			}
		}},
		{"mistral", func(t *testing.T, b map[string]any) {
			if _, ok := b["stream_options"]; ok {
				t.Errorf("stream_options sent to mistral")
			}
			if b["max_tokens"] != 256.0 {
				t.Errorf("max_tokens = %v", b["max_tokens"])
			}
		}},
		{"gemini", func(t *testing.T, b map[string]any) {
			si, _ := b["systemInstruction"].(map[string]any)
			if parts, _ := si["parts"].([]any); len(parts) != 2 {
				t.Errorf("systemInstruction = %v", b["systemInstruction"])
			}
			gc, _ := b["generationConfig"].(map[string]any)
			if gc["maxOutputTokens"] != 256.0 {
				t.Errorf("generationConfig = %v", gc)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.provider, func(t *testing.T) {
			o := mockllm.DefaultOptions
			o.ID = "shape-" + tc.provider
			req := testRequest()
			req.Temperature = &temp
			p, _ := env.reg.Provider(tc.provider)
			s, err := p.Stream(withMock(context.Background(), o), req)
			if err != nil {
				t.Fatal(err)
			}
			collect(t, s)
			s.Close()
			info, err := env.mock.Wait(context.Background(), o.ID)
			if err != nil {
				t.Fatal(err)
			}
			var body map[string]any
			if err := json.Unmarshal(info.Body, &body); err != nil {
				t.Fatal(err)
			}
			tc.check(t, body)
		})
	}
}
