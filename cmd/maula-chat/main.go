// Command maula-chat is MAULA.AI's realtime AI chat server and its tools, in one binary:
//
//	maula-chat serve      run the server (embedded FerretDB and in-process primitives by default)
//	maula-chat migrate    create every database, collection and index, then exit
//	maula-chat mock-llm   a fake upstream speaking the five providers' streaming formats
//	maula-chat admin ...  administer users, credits and plans
//	maula-chat login      log in to a server and store the session token
//	maula-chat chat       chat with a tool's AI in the terminal (streams; Ctrl-C stops a reply)
//	maula-chat keys       list or create API keys
//	maula-chat version    print the version
//
// Run any subcommand with -h for its flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/maula-ai/maula-chat/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries a process exit code with its one-line message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErr (exit 2) is for bad settings; runErr (exit 1) for failures at run time.
func usageErr(err error) error { return &exitError{2, err} }
func runErr(err error) error   { return &exitError{1, err} }

type command struct {
	name, help string
	run        func(ctx context.Context, args []string) error
}

func commands() []command {
	return []command{
		{"serve", "run the chat server", runServe},
		{"migrate", "create databases, collections and indexes, then exit", runMigrate},
		{"mock-llm", "serve a fake upstream for Claude, GPT, Grok, Mistral and Gemini", func(ctx context.Context, args []string) error {
			if code := runMockLLM(ctx, args); code != 0 {
				return &exitError{code, errors.New("mock-llm stopped")}
			}
			return nil
		}},
		{"demo-data", "create sample analyses for a user so a fresh server has context to chat about: --email E", runDemoData},
		{"bench", "measure the chat path against its floors (bench -h lists the scenarios)", runBench},
		{"admin", "administer users, credits and plans (admin -h lists the subcommands)", runAdmin},
		{"login", "log in to a server and store the session token", runLogin},
		{"chat", "chat in the terminal: chat [--tool T] [--provider P] [--session S] [question]", runChat},
		{"keys", "list or create API keys: keys [list] | keys create --tool T", runKeys},
		{"version", "print the version", func(context.Context, []string) error { fmt.Println("maula-chat", version); return nil }},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stderr))
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:])
		if err == nil || errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "maula-chat %s: %v\n", c.name, err)
		var ee *exitError
		var se *config.SettingError
		switch {
		case errors.As(err, &ee):
			return ee.code
		case errors.As(err, &se):
			return 2
		}
		return 1
	}
	fmt.Fprintf(stderr, "maula-chat: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: maula-chat <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.help)
	}
}

func newLogger(format, level string, w io.Writer) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
