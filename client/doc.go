// Package client is the Go SDK of maula-chat's WebSocket protocol v1 (docs/protocol.md).
//
// One Client holds one WebSocket connection to GET /ai/chat, authenticated with a session
// token or a tool API key, and runs any number of chats on it at once:
//
//	c, err := client.Dial(ctx, "https://chat.maula.ai", client.Options{Token: token})
//	if err != nil { ... }
//	defer c.Close()
//	stream, err := c.Chat(ctx, client.ChatRequest{Tool: "ipintel", Provider: "claude", Message: "Why is 203.0.113.7 risky?"})
//	if err != nil { ... }
//	for text := range stream.Deltas() {
//		fmt.Print(text)
//	}
//	res, err := stream.Result()
//
// What the SDK does so callers need not:
//
//   - one reader goroutine demultiplexes frames by request id and one writer goroutine owns
//     every write, so streams never block each other and a slow consumer of one stream only
//     buffers its own text;
//   - cancelling the context given to Chat sends chat.cancel; the stream then ends with the
//     server's chat.cancelled figures (what was produced is billed) and context.Canceled;
//   - when the connection drops (network, 1001 going away, 1011, 4008 slow consumer) it
//     redials with exponential backoff and jitter and sends chat.resume for every running
//     chat with the last seq it delivered, so each reply's text arrives exactly once;
//   - chat.error frames become typed errors: ErrInsufficientCredits, *RateLimitError,
//     *ProviderError, ErrUnauthorized, ErrForbidden, and *ProtocolError for the rest.
//
// The package shares only the frame types of the protocol package with the server.
package client
