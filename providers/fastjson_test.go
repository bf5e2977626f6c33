package providers

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	openai "github.com/sashabaranov/go-openai"
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

// FuzzFastOpenAIDelta: whenever the fast path accepts a chunk, it must
// agree with go-openai's own decoding.
func FuzzFastOpenAIDelta(f *testing.F) {
	for _, s := range []string{
		`{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}],"usage":null}`,
		`{"id":"c","model":"mistral","choices":[{"index":0,"delta":{"content":"a\"\u00e9"},"finish_reason":null}]}`,
		`{"id":"c","choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}`,
		`{"id":"c","usage":{"prompt_tokens":1},"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, ok := fastOpenAIDelta(data)
		if !ok {
			return
		}
		var c openai.ChatCompletionStreamResponse
		if err := json.Unmarshal(data, &c); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) && te.Field != "choices" && !strings.HasPrefix(te.Field, "choices.") && te.Field != "usage" {
				return // an odd type in a field we ignore: being lenient there is fine
			}
			t.Fatalf("fast path accepted %q that does not decode: %v", data, err)
		}
		if len(c.Choices) != 1 || c.Choices[0].Index != 0 || c.Choices[0].Delta.Content != got ||
			c.Choices[0].FinishReason != "" || c.Usage != nil {
			t.Fatalf("fast %q, SDK %+v for %q", got, c, data)
		}
	})
}
