// Command chat asks one question of a maula-chat tool with the Go SDK and streams the reply:
//
//	MAULA_TOKEN=... go run ./examples/chat -server http://127.0.0.1:8080 "Why is 203.0.113.7 high risk?"
//
// Three questions at once share one connection when more than one is given; Ctrl-C cancels
// them (the server bills what was produced).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"sync"

	"github.com/maula-ai/maula-chat/client"
)

func main() {
	server := flag.String("server", "http://127.0.0.1:8080", "maula-chat server")
	tool := flag.String("tool", "ipintel", "tool")
	provider := flag.String("provider", "claude", "provider")
	flag.Parse()
	questions := flag.Args()
	if len(questions) == 0 {
		log.Fatal("usage: chat [flags] question...")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	c, err := client.Dial(ctx, *server, client.Options{Token: os.Getenv("MAULA_TOKEN"), APIKey: os.Getenv("MAULA_API_KEY")})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	answers := make([]strings.Builder, len(questions))
	var wg sync.WaitGroup
	for i, q := range questions {
		stream, err := c.Chat(ctx, client.ChatRequest{Tool: *tool, Provider: *provider, Message: q})
		if err != nil {
			log.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for text := range stream.Deltas() {
				if len(questions) == 1 {
					fmt.Print(text) // one question: stream it as it arrives
				}
				answers[i].WriteString(text)
			}
			res, err := stream.Result()
			var rl *client.RateLimitError
			switch {
			case errors.As(err, &rl):
				log.Printf("%q: rate limited, retry in %s", q, rl.RetryAfter)
			case errors.Is(err, client.ErrInsufficientCredits):
				log.Printf("%q: no credits left", q)
			case err != nil:
				log.Printf("%q: %v", q, err)
			default:
				log.Printf("%q: %s, %d+%d tokens, $%.6f, %d credits left", q, res.FinishReason,
					res.Usage.Input, res.Usage.Output, res.CostUSD, res.CreditsLeft)
			}
		}()
	}
	wg.Wait()
	if len(questions) > 1 {
		for i, q := range questions {
			fmt.Printf("## %s\n%s\n\n", q, answers[i].String())
		}
	} else {
		fmt.Println()
	}
}
