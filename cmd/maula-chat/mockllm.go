package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/maula-ai/maula-chat/providers/mockllm"
)

// runMockLLM serves the fake LLM upstream (`maula-chat mock-llm`) until ctx
// is done. Flags set the default response; each request may override them
// with the X-Mock header or query parameters (see package mockllm).
func runMockLLM(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("mock-llm", flag.ContinueOnError)
	d := mockllm.DefaultOptions
	addr := fs.String("addr", "127.0.0.1:9000", "listen address")
	fs.IntVar(&d.Chunks, "chunks", d.Chunks, "text chunks per response")
	fs.IntVar(&d.ChunkSize, "chunk-size", d.ChunkSize, "bytes per chunk")
	fs.DurationVar(&d.Delay, "delay", d.Delay, "pause between chunks")
	fs.DurationVar(&d.FirstChunkDelay, "ttfc", d.FirstChunkDelay, "time to first chunk")
	fs.IntVar(&d.Status, "fail-status", 0, "answer every request with this HTTP status (e.g. 429, 500, 529)")
	fs.DurationVar(&d.RetryAfter, "retry-after", 0, "Retry-After sent with -fail-status")
	fs.IntVar(&d.ErrorAfter, "error-after", -1, "send an error event after N chunks (-1 never)")
	fs.IntVar(&d.ResetAfter, "reset-after", -1, "reset the connection after N chunks (-1 never)")
	fs.BoolVar(&d.NoUsage, "no-usage", false, "send no usage")
	fs.BoolVar(&d.NoFinish, "no-finish", false, "end streams without a finish event")
	fs.IntVar(&d.InputTokens, "input-tokens", d.InputTokens, "uncached input tokens reported")
	fs.IntVar(&d.CacheReadTokens, "cache-read-tokens", 0, "cached input tokens reported")
	fs.IntVar(&d.CacheWriteTokens, "cache-write-tokens", 0, "cache-write tokens reported (Anthropic)")
	fs.IntVar(&d.ReasoningTokens, "reasoning-tokens", 0, "reasoning tokens reported")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mock-llm: %v\n", err)
		return 1
	}
	srv := &http.Server{Handler: mockllm.New(d), ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("mock-llm listening on http://%s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		fmt.Fprintf(os.Stderr, "mock-llm: %v\n", err)
		return 1
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	return 0
}
