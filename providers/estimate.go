package providers

import "unicode/utf8"

// EstimateTokens estimates the token count of text when the upstream never
// reported usage: one token per four characters, rounded up. It is
// deliberately simple and stable so estimated bills are reproducible.
func EstimateTokens(text string) int64 {
	return runesToTokens(int64(utf8.RuneCountInString(text)))
}

func runesToTokens(runes int64) int64 {
	return (runes + 3) / 4
}

// estimatePrompt estimates the input tokens of a request.
func estimatePrompt(req *Request) int64 {
	n := int64(utf8.RuneCountInString(req.System) + utf8.RuneCountInString(req.Context))
	for _, m := range req.Messages {
		n += int64(utf8.RuneCountInString(m.Content))
	}
	return runesToTokens(n)
}
