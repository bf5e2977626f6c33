// Command resume continues a conversation and lists its history with the Go SDK. A dropped
// connection while the reply streams is redialled and the reply resumed from its last seq by
// the SDK itself: the loop below never sees the drop.
//
//	MAULA_TOKEN=... go run ./examples/resume -session 65f0c2... "and what should I do?"
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/maula-ai/maula-chat/client"
)

func main() {
	server := flag.String("server", "http://127.0.0.1:8080", "maula-chat server")
	tool := flag.String("tool", "ipintel", "tool")
	session := flag.String("session", "", "conversation to continue (default: the most recent)")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	c, err := client.Dial(ctx, *server, client.Options{Token: os.Getenv("MAULA_TOKEN"),
		ReconnectBackoff: 200 * time.Millisecond, MaxReconnectAttempts: 8})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	if *session == "" {
		list, err := c.Sessions(ctx, *tool, client.Page{Limit: 1})
		if err != nil {
			log.Fatal(err)
		}
		if len(list.Sessions) == 0 {
			log.Fatal("no conversation yet: run examples/chat first")
		}
		*session = list.Sessions[0].SessionID
	}
	h, err := c.History(ctx, *tool, *session, client.Page{Limit: 20})
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range h.Messages {
		fmt.Printf("%s: %s\n", m.Role, m.Message)
	}
	if flag.NArg() == 0 {
		return
	}
	stream, err := c.Chat(ctx, client.ChatRequest{Tool: *tool, Provider: "claude", SessionID: *session, Message: flag.Arg(0)})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print("assistant: ")
	for text := range stream.Deltas() {
		fmt.Print(text)
	}
	res, err := stream.Result()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("\n(%s, $%.6f; reconnects: %d)\n", res.FinishReason, res.CostUSD, c.Stats().Reconnects)
}
