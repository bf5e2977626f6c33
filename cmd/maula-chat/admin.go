package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/maula-ai/maula-chat/auth"
	"github.com/maula-ai/maula-chat/config"
	"github.com/maula-ai/maula-chat/httpx"
)

// adminCommand is one `maula-chat admin <name>` subcommand. Others add theirs to
// adminCommands (e.g. grant-credits from the billing work); each parses its own flags.
type adminCommand struct {
	help string
	run  func(ctx context.Context, env adminEnv, args []string) error
}

// adminEnv is what an admin subcommand gets: the process's streams, and a way to open the
// configured stores (from the environment, as `serve` reads them) only when it needs them.
type adminEnv struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// open returns the configured stores and a release func to defer.
	open func(ctx context.Context) (*config.Config, *stores, func(), error)
}

// adminCommands maps a subcommand name to its implementation.
var adminCommands = map[string]adminCommand{
	"create-user":   {"create a user (free plan, 50 default API keys): --email E --password-stdin [--admin] [--name N] [--show-keys]", adminCreateUser},
	"grant-credits": {"add AI credits to a user, as a ledger entry: --email E (or --user ID) --credits N --reason R [--key K]", plain(runAdminGrantCredits)},
	"set-plan":      {"change a user's plan (ledger entry and billing record): --email E --plan free|pro|enterprise", plain(runAdminSetPlan)},
	"reconcile":     {"recompute costs from stored usage and prices; report differences (exit 1 if any): --from YYYY-MM-DD --to YYYY-MM-DD", plain(runAdminReconcile)},
}

// plain adapts a subcommand that opens its own stores.
func plain(f func(ctx context.Context, args []string) error) func(context.Context, adminEnv, []string) error {
	return func(ctx context.Context, _ adminEnv, args []string) error { return f(ctx, args) }
}

// runAdmin dispatches `maula-chat admin <subcommand> [flags]`.
func runAdmin(ctx context.Context, args []string) error {
	env := adminEnv{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, open: openAdminStores}
	return dispatchAdmin(ctx, env, args)
}

func dispatchAdmin(ctx context.Context, env adminEnv, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		adminUsage(env.stderr)
		if len(args) == 0 {
			return usageErr(errors.New("a subcommand is required"))
		}
		return nil
	}
	c, ok := adminCommands[args[0]]
	if !ok {
		adminUsage(env.stderr)
		return usageErr(fmt.Errorf("unknown admin subcommand %q", args[0]))
	}
	return c.run(ctx, env, args[1:])
}

func adminUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: maula-chat admin <subcommand> [flags]\n\nSubcommands:")
	names := make([]string, 0, len(adminCommands))
	for n := range adminCommands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-14s %s\n", n, adminCommands[n].help)
	}
}

// openAdminStores loads the configuration from the environment only (the admin flags are the
// subcommand's own) and opens the stores as serve does; logs stay quiet at warn.
func openAdminStores(ctx context.Context) (*config.Config, *stores, func(), error) {
	cfg, err := config.Load(nil, os.Getenv, os.Stderr)
	if err != nil {
		return nil, nil, nil, err
	}
	log := newLogger(cfg.LogFormat, "warn", os.Stderr)
	st, err := openStores(ctx, cfg, log, false)
	if err != nil {
		return nil, nil, nil, err
	}
	return cfg, st, st.close, nil
}

func adminCreateUser(ctx context.Context, env adminEnv, args []string) error {
	fs := flag.NewFlagSet("admin create-user", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	email := fs.String("email", "", "the user's email (required)")
	name := fs.String("name", "", "display name (default: the email's local part)")
	pwStdin := fs.Bool("password-stdin", false, "read the password from the first line of stdin (required)")
	admin := fs.Bool("admin", false, "make the user an admin")
	showKeys := fs.Bool("show-keys", false, "print the 50 default API keys (they are shown only this once)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *email == "" || !*pwStdin || fs.NArg() > 0 {
		fs.Usage()
		return usageErr(errors.New("--email and --password-stdin are required"))
	}
	line, err := bufio.NewReader(io.LimitReader(env.stdin, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read password: %w", err)
	}
	password := strings.TrimRight(line, "\r\n")
	cfg, st, release, err := env.open(ctx)
	if err != nil {
		return err
	}
	defer release()
	svc, err := newAuthService(ctx, cfg, st, newLogger(cfg.LogFormat, "warn", env.stderr))
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = svc.Close(cctx)
	}()
	reg, err := svc.CreateUser(ctx, auth.NewUser{Email: *email, Password: password, Name: *name}, *admin)
	if err != nil {
		var ae *httpx.APIError
		if errors.As(err, &ae) && ae.Status < 500 {
			return usageErr(errors.New(ae.Message))
		}
		return err
	}
	out := map[string]any{"id": reg.User.ID.Hex(), "email": reg.User.Email, "role": reg.User.Role,
		"plan": reg.User.Subscription.Plan, "apiKeys": len(reg.Keys)}
	if *showKeys {
		out["apiKeys"] = reg.Keys
	}
	enc := json.NewEncoder(env.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
