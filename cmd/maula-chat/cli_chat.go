package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/maula-ai/maula-chat/client"
)

// runChat is `maula-chat chat [flags] [question]`: with a question it streams one reply and
// exits; without, it runs a prompt loop. Ctrl-C stops the running reply and returns to the
// prompt; at an idle prompt a second Ctrl-C, or EOF, exits.
func runChat(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	var a clientAuth
	a.flags(fs, true)
	var req client.ChatRequest
	fs.StringVar(&req.Tool, "tool", "ipintel", "tool whose context the chat uses")
	fs.StringVar(&req.Provider, "provider", "claude", "provider: claude, gpt, grok, mistral, gemini")
	fs.StringVar(&req.Model, "model", "", "model (default: the provider's default)")
	fs.StringVar(&req.SessionID, "session", "", "continue this conversation (default: a new one)")
	fs.StringVar(&req.AnalysisID, "analysis", "", "attach this analysis of the tool as context")
	fs.IntVar(&req.MaxTokens, "max-tokens", 0, "output cap (default: the server's)")
	temp := fs.Float64("temperature", -1, "sampling temperature 0 to 2 (default: the provider's)")
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	if *temp >= 0 {
		req.Temperature = temp
	}
	if err := a.resolve(true); err != nil {
		return err
	}
	// Ctrl-C belongs to this command from here: main's signal context would end the program
	// on the first press, so replies run under a context it cannot cancel and the signals
	// come here instead.
	base := context.WithoutCancel(ctx)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	c, err := client.Dial(dctx, a.server, client.Options{Token: a.token, APIKey: a.apiKey})
	cancel()
	if err != nil {
		return runErr(err)
	}
	defer c.Close()
	ch := &chatSession{c: c, req: req, out: os.Stdout, info: os.Stderr, sigs: sigs}
	if q := strings.TrimSpace(strings.Join(fs.Args(), " ")); q != "" {
		switch interrupted, err := ch.ask(base, q); {
		case errors.Is(err, errTerminated):
			return &exitError{143, err}
		case interrupted:
			return &exitError{130, errors.New("interrupted")}
		case err != nil:
			return runErr(describedError{err})
		}
		return nil
	}
	if err := ch.interactive(base, os.Stdin); err != nil {
		return &exitError{143, err}
	}
	return nil
}

var errTerminated = errors.New("terminated")

// chatSession is one conversation in the terminal.
type chatSession struct {
	c    *client.Client
	req  client.ChatRequest // the next request's settings; SessionID follows the conversation
	out  io.Writer          // the replies (and the prompt)
	info io.Writer          // usage, cost and errors
	sigs <-chan os.Signal
}

// interactive reads questions from in until EOF or a second Ctrl-C at an idle prompt.
func (ch *chatSession) interactive(ctx context.Context, in io.Reader) error {
	lines := make(chan string)
	go func() { // blocks in Read for the life of the program: there is no portable way out
		defer close(lines)
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	fmt.Fprintf(ch.info, "maula-chat · %s with %s · Ctrl-C stops a reply, Ctrl-D exits\n", ch.req.Tool, ch.req.Provider)
	armed := false // a Ctrl-C at the idle prompt was pressed once
	for {
		fmt.Fprint(ch.out, "> ")
		select {
		case line, ok := <-lines:
			if !ok {
				fmt.Fprintln(ch.out)
				return nil
			}
			armed = false
			line = strings.TrimSpace(line)
			switch line {
			case "":
				continue
			case "/exit", "/quit":
				return nil
			}
			if _, err := ch.ask(ctx, line); err != nil {
				if errors.Is(err, errTerminated) {
					return err
				}
				fmt.Fprintf(ch.info, "error: %v\n", describe(err))
			}
		case sig := <-ch.sigs:
			if sig == syscall.SIGTERM {
				return errTerminated
			}
			if armed {
				fmt.Fprintln(ch.out)
				return nil
			}
			armed = true
			fmt.Fprint(ch.out, "\n(press Ctrl-C again or Ctrl-D to exit)\n")
		}
	}
}

// ask streams one reply to out as it arrives. A Ctrl-C cancels it (the server stops the
// upstream and bills what was produced); interrupted reports that.
func (ch *chatSession) ask(ctx context.Context, question string) (interrupted bool, err error) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := ch.req
	req.Message = question
	s, err := ch.c.Chat(rctx, req)
	if err != nil {
		return false, err
	}
	done := make(chan struct{})
	wrote := false
	go func() {
		defer close(done)
		for text := range s.Deltas() {
			wrote = true
			_, _ = io.WriteString(ch.out, text)
		}
	}()
	terminated := false
wait:
	for {
		select {
		case <-done:
			break wait
		case sig := <-ch.sigs:
			terminated = terminated || sig == syscall.SIGTERM
			interrupted = true
			cancel() // chat.cancel; the stream ends with chat.cancelled
		}
	}
	if wrote {
		fmt.Fprintln(ch.out)
	}
	res, err := s.Result()
	if res.SessionID != "" {
		ch.req.SessionID = res.SessionID // the next question continues this conversation
	}
	switch {
	case terminated:
		return true, errTerminated
	case interrupted && res.Cancelled:
		fmt.Fprintf(ch.info, "[cancelled] %s\n", summary(res))
		return true, nil
	case err != nil:
		return interrupted, err
	}
	fmt.Fprintf(ch.info, "[%s] %s\n", res.FinishReason, summary(res))
	return false, nil
}

// summary is the usage and cost line printed after each reply.
func summary(r *client.Result) string {
	u := r.Usage
	s := fmt.Sprintf("%d in", u.Input)
	if u.CacheRead > 0 || u.CacheWrite > 0 {
		s += fmt.Sprintf(" (%d cached, %d cache writes)", u.CacheRead, u.CacheWrite)
	}
	s += fmt.Sprintf(" + %d out tokens", u.Output)
	if u.Estimated {
		s += " (estimated)"
	}
	return fmt.Sprintf("%s · $%.6f · %d credits left · %s/%s · session %s", s, float64(r.CostMicros)/1e6, r.CreditsLeft,
		r.Provider, r.Model, r.SessionID)
}

// describedError prints as describe(err) and unwraps to err.
type describedError struct{ err error }

func (e describedError) Error() string { return describe(e.err) }
func (e describedError) Unwrap() error { return e.err }

// describe turns the SDK's typed errors into what a person at a terminal needs to know.
func describe(err error) string {
	var rl *client.RateLimitError
	var pe *client.ProviderError
	switch {
	case errors.As(err, &rl):
		return fmt.Sprintf("message rate of your plan reached; retry in %s", rl.RetryAfter.Round(time.Second))
	case errors.Is(err, client.ErrInsufficientCredits):
		return "no AI credits left on your plan"
	case errors.Is(err, client.ErrUnauthorized):
		return "not authorized: run `maula-chat login` again"
	case errors.As(err, &pe):
		if pe.Retryable {
			return pe.Message + " (the provider may answer if you retry)"
		}
		return pe.Message
	}
	return err.Error()
}
