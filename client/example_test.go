package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/gorilla/websocket"
	"github.com/maula-ai/maula-chat/client"
	"github.com/maula-ai/maula-chat/protocol"
)

// exampleServer is a stand-in for maula-chat so the examples run offline: it streams
// "Hello, world." to every chat.send, answers "too fast" with a rate limit, and serves one
// conversation's history.
func exampleServer() *httptest.Server {
	up := websocket.Upgrader{Subprotocols: []string{protocol.Subprotocol}}
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			var f protocol.ClientFrame
			if ws.ReadJSON(&f) != nil {
				return
			}
			switch f.Type {
			case protocol.TypeChatSend:
				if f.Message == "too fast" {
					_ = ws.WriteJSON(protocol.Error{Type: protocol.TypeChatError, ID: f.ID, Code: protocol.CodeRateLimited,
						Message: "message rate of your plan reached", Retryable: true, RetryAfterMs: 12000})
					continue
				}
				if f.Message == "long" { // one delta, then nothing until chat.cancel
					_ = ws.WriteJSON(protocol.Started{Type: protocol.TypeChatStarted, ID: f.ID, SessionID: "65f0c2", MessageID: "65f0c4", Provider: f.Provider, Model: "claude-sonnet-4-5"})
					_ = ws.WriteJSON(protocol.Delta{Type: protocol.TypeChatDelta, ID: f.ID, Seq: 1, Text: "Once upon a time"})
					continue
				}
				_ = ws.WriteJSON(protocol.Started{Type: protocol.TypeChatStarted, ID: f.ID, SessionID: "65f0c2", MessageID: "65f0c3", Provider: f.Provider, Model: "claude-sonnet-4-5"})
				for i, t := range []string{"Hello, ", "world."} {
					_ = ws.WriteJSON(protocol.Delta{Type: protocol.TypeChatDelta, ID: f.ID, Seq: uint64(i + 1), Text: t})
				}
				_ = ws.WriteJSON(protocol.Done{Type: protocol.TypeChatDone, ID: f.ID, Seq: 2, FinishReason: "stop",
					Usage: protocol.Usage{Input: 812, Output: 2}, CostUSD: 0.002466, CostMicros: 2466, CreditsLeft: 99})
			case protocol.TypeChatCancel:
				_ = ws.WriteJSON(protocol.Cancelled{Type: protocol.TypeChatCancelled, ID: f.ID, Seq: 1,
					Usage: protocol.Usage{Input: 812, Output: 4}, CostUSD: 0.002496, CostMicros: 2496, CreditsLeft: 98})
			case protocol.TypeHistoryGet:
				_ = ws.WriteJSON(protocol.History{Type: protocol.TypeHistory, ID: f.ID, Tool: f.Tool, SessionID: f.SessionID,
					Messages: []protocol.ChatMessage{{Role: "user", Message: "Say hello"}, {Role: "assistant", Message: "Hello, world."}}})
			}
		}
	}))
}

// Stream a reply, then read its usage and cost.
func ExampleClient_Chat() {
	srv := exampleServer() // your server: "https://chat.maula.ai"
	defer srv.Close()
	ctx := context.Background()
	c, err := client.Dial(ctx, srv.URL, client.Options{Token: "<session token>"})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	stream, err := c.Chat(ctx, client.ChatRequest{Tool: "ipintel", Provider: "claude", Message: "Say hello"})
	if err != nil {
		panic(err)
	}
	for text := range stream.Deltas() {
		fmt.Print(text)
	}
	fmt.Println()
	res, err := stream.Result()
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s: %d in, %d out, $%.6f, %d credits left, session %s\n",
		res.FinishReason, res.Usage.Input, res.Usage.Output, res.CostUSD, res.CreditsLeft, res.SessionID)
	// Output:
	// Hello, world.
	// stop: 812 in, 2 out, $0.002466, 99 credits left, session 65f0c2
}

// Typed errors say what to do next.
func ExampleRateLimitError() {
	srv := exampleServer()
	defer srv.Close()
	ctx := context.Background()
	c, err := client.Dial(ctx, srv.URL, client.Options{APIKey: "mk_ipintel_..."})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	stream, _ := c.Chat(ctx, client.ChatRequest{Tool: "ipintel", Provider: "claude", Message: "too fast"})
	_, err = stream.Result()
	var rl *client.RateLimitError
	switch {
	case errors.As(err, &rl):
		fmt.Println("rate limited; retry in", rl.RetryAfter)
	case errors.Is(err, client.ErrInsufficientCredits):
		fmt.Println("no credits left")
	}
	// Output: rate limited; retry in 12s
}

// Cancelling the context stops the reply on the server (chat.cancel).
func ExampleStream_Result_cancel() {
	srv := exampleServer()
	defer srv.Close()
	c, err := client.Dial(context.Background(), srv.URL, client.Options{Token: "<session token>"})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := c.Chat(ctx, client.ChatRequest{Tool: "ipintel", Provider: "claude", Message: "long"})
	if err != nil {
		panic(err)
	}
	for text := range stream.Deltas() {
		fmt.Println(text)
		cancel() // enough: the server stops the upstream and bills what was produced
	}
	res, err := stream.Result()
	fmt.Println(errors.Is(err, context.Canceled), res.Cancelled, res.Usage.Output, res.CostMicros)
	// Output:
	// Once upon a time
	// true true 4 2496
}

// Read a conversation back.
func ExampleClient_History() {
	srv := exampleServer()
	defer srv.Close()
	ctx := context.Background()
	c, err := client.Dial(ctx, srv.URL, client.Options{Token: "<session token>"})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	h, err := c.History(ctx, "ipintel", "65f0c2", client.Page{Limit: 20})
	if err != nil {
		panic(err)
	}
	for _, m := range h.Messages {
		fmt.Printf("%s: %s\n", m.Role, m.Message)
	}
	// Output:
	// user: Say hello
	// assistant: Hello, world.
}
