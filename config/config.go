// Package config reads maula-chat's settings: each one from an environment variable, with a
// command-line flag that overrides it. Bad values are reported as *SettingError naming the
// setting, which the binary turns into exit code 2. The table in Settings is the single source
// of the README's configuration table and of `maula-chat serve --help`.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/maula-ai/maula-chat/kv"
	"github.com/maula-ai/maula-chat/store"
)

// Config is the server's configuration after defaults, environment and flags.
type Config struct {
	Addr            string
	MongoURI        string
	MongoListen     string
	DataDir         string
	RedisURL        string
	LogFormat       string
	LogLevel        string
	StoreWait       time.Duration
	ShutdownTimeout time.Duration
	JWTSecret       string
	AllowedOrigins  []string
	AdminEmails     []string
	SMTPURL         string
	BcryptCost      int
	BasePath        string
	PublicURL       string
	Pprof           bool
	CPUProfile      string
	CreditPolicy    string
	Recording       string
	MicrosPerCredit int64
	SweepInterval   time.Duration
	GracePeriod     time.Duration
}

// Setting is one configurable value.
type Setting struct {
	Env, Flag, Default, Help string
	set                      func(c *Config, v string) error
}

// Settings lists every setting of `maula-chat serve`. Provider keys (ANTHROPIC_API_KEY, ...)
// are read by the providers package and listed in docs/providers.md.
var Settings = []Setting{
	{"MAULA_ADDR", "addr", "127.0.0.1:8080", "HTTP listen address", func(c *Config, v string) error {
		if _, _, err := net.SplitHostPort(v); err != nil {
			return fmt.Errorf("not host:port: %w", err)
		}
		c.Addr = v
		return nil
	}},
	{"MONGODB_URI", "mongodb-uri", "", "MongoDB to use; empty starts the embedded FerretDB", func(c *Config, v string) error {
		if v != "" {
			if err := store.ValidateURI(v); err != nil {
				return err
			}
		}
		c.MongoURI = v
		return nil
	}},
	{"MAULA_MONGO_LISTEN", "mongo-listen", "", "also expose the embedded FerretDB on this TCP address (e.g. 127.0.0.1:27017) for other instances", func(c *Config, v string) error {
		if v != "" {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return fmt.Errorf("not host:port: %w", err)
			}
		}
		c.MongoListen = v
		return nil
	}},
	{"MAULA_DATA_DIR", "data-dir", "./data", "directory for the embedded database and generated secrets", func(c *Config, v string) error {
		if v == "" {
			return errors.New("must not be empty")
		}
		c.DataDir = v
		return nil
	}},
	{"REDIS_URL", "redis-url", "", "Redis for shared rate limits, caches, pub/sub and stream buffers; empty uses in-process primitives", func(c *Config, v string) error {
		if v != "" {
			if err := kv.ValidateRedisURL(v); err != nil {
				return err
			}
		}
		c.RedisURL = v
		return nil
	}},
	{"MAULA_LOG_FORMAT", "log-format", "text", "log format: text or json", oneOf(func(c *Config) *string { return &c.LogFormat }, "text", "json")},
	{"MAULA_LOG_LEVEL", "log-level", "info", "log level: debug, info, warn or error", oneOf(func(c *Config) *string { return &c.LogLevel }, "debug", "info", "warn", "error")},
	{"MAULA_STORE_WAIT", "store-wait", "30s", "how long an unreachable MongoDB or Redis is retried at start", duration(func(c *Config) *time.Duration { return &c.StoreWait })},
	{"MAULA_SHUTDOWN_TIMEOUT", "shutdown-timeout", "20s", "how long running chat turns may finish after SIGTERM", duration(func(c *Config) *time.Duration { return &c.ShutdownTimeout })},
	{"MAULA_JWT_SECRET", "jwt-secret", "", "HS256 secret for session tokens (at least 32 bytes); empty generates one kept in the data dir", func(c *Config, v string) error {
		if v != "" && len(v) < 32 {
			return errors.New("must be at least 32 bytes")
		}
		c.JWTSecret = v
		return nil
	}},
	{"MAULA_ALLOWED_ORIGINS", "allowed-origins", "", "comma-separated origins allowed to open the chat socket with a cookie (same origin always allowed)", list(func(c *Config) *[]string { return &c.AllowedOrigins })},
	{"MAULA_ADMIN_EMAILS", "admin-emails", "", "comma-separated emails that become admins at registration", list(func(c *Config) *[]string { return &c.AdminEmails })},
	{"MAULA_SMTP_URL", "smtp-url", "", "smtp://user:pass@host:port for verification mail; empty logs the link", func(c *Config, v string) error { c.SMTPURL = v; return nil }},
	{"MAULA_BCRYPT_COST", "bcrypt-cost", "12", "bcrypt cost for password hashes (4 to 16)", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 4 || n > 16 {
			return errors.New("must be an integer from 4 to 16")
		}
		c.BcryptCost = n
		return nil
	}},
	{"MAULA_BASE_PATH", "base-path", "", "path prefix when served behind a proxy, e.g. /chat", func(c *Config, v string) error {
		v = strings.TrimRight(v, "/")
		if v != "" && !strings.HasPrefix(v, "/") {
			return errors.New("must start with /")
		}
		c.BasePath = v
		return nil
	}},
	{"MAULA_PUBLIC_URL", "public-url", "", "URL users reach the server at, for links in mail; empty derives it from the address", func(c *Config, v string) error { c.PublicURL = strings.TrimRight(v, "/"); return nil }},
	{"MAULA_PPROF", "pprof", "false", "serve net/http/pprof under /debug/pprof to admins", boolean(func(c *Config) *bool { return &c.Pprof })},
	{"MAULA_CPUPROFILE", "cpuprofile", "", "write a CPU profile of the server's whole run to this file (benchmarks)", func(c *Config, v string) error { c.CPUProfile = v; return nil }},
	{"MAULA_RECORDING", "recording", "on", "off stores no messages and bills nothing, to measure what recording costs (benchmarks only)", oneOf(func(c *Config) *string { return &c.Recording }, "on", "off")},
	{"MAULA_CREDIT_POLICY", "credit-policy", "per_call", "how chat turns spend credits: per_call or per_cost", oneOf(func(c *Config) *string { return &c.CreditPolicy }, "per_call", "per_cost")},
	{"MAULA_MICROS_PER_CREDIT", "micros-per-credit", "1000", "with per_cost: micro-dollars one credit buys", func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return errors.New("must be a positive integer")
		}
		c.MicrosPerCredit = n
		return nil
	}},
	{"MAULA_SWEEP_INTERVAL", "sweep-interval", "10m", "retention sweeper interval where the server has no TTL indexes", duration(func(c *Config) *time.Duration { return &c.SweepInterval })},
	{"MAULA_RESUME_GRACE", "resume-grace", "30s", "how long a reply goes on after its socket drops, waiting for chat.resume", duration(func(c *Config) *time.Duration { return &c.GracePeriod })},
}

// SettingError names the setting whose value is wrong.
type SettingError struct {
	Setting string // env var name, with the flag in brackets
	Err     error
}

func (e *SettingError) Error() string { return fmt.Sprintf("%s: %v", e.Setting, e.Err) }
func (e *SettingError) Unwrap() error { return e.Err }

// Load builds the configuration: defaults, then the environment, then flags in args. It
// returns flag.ErrHelp after printing usage to out when -h/--help is given.
func Load(args []string, getenv func(string) string, out io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(out)
	flags := make([]*string, len(Settings))
	for i, s := range Settings {
		flags[i] = fs.String(s.Flag, "\x00", fmt.Sprintf("%s (env %s, default %q)", s.Help, s.Env, s.Default))
	}
	fs.Usage = func() {
		fmt.Fprintln(out, "Usage: maula-chat serve [flags]\n\nEvery flag overrides its environment variable.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, &SettingError{"serve", fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	for i, s := range Settings {
		v, from := s.Default, s.Env
		if e := getenv(s.Env); e != "" {
			v = e
		}
		if *flags[i] != "\x00" {
			v, from = *flags[i], "--"+s.Flag
		}
		if err := s.set(c, v); err != nil {
			return nil, &SettingError{from, err}
		}
	}
	return c, nil
}

// MarkdownTable renders Settings as the README's table.
func MarkdownTable() string {
	var b strings.Builder
	b.WriteString("| variable | flag | default | meaning |\n|---|---|---|---|\n")
	for _, s := range Settings {
		def := s.Default
		if def == "" {
			def = "(empty)"
		}
		fmt.Fprintf(&b, "| `%s` | `--%s` | `%s` | %s |\n", s.Env, s.Flag, def, s.Help)
	}
	return b.String()
}

func oneOf(field func(*Config) *string, allowed ...string) func(*Config, string) error {
	return func(c *Config, v string) error {
		for _, a := range allowed {
			if v == a {
				*field(c) = v
				return nil
			}
		}
		return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
	}
}

func duration(field func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("%q is not a duration like 30s", v)
		}
		*field(c) = d
		return nil
	}
}

func boolean(field func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		*field(c) = b
		return nil
	}
}

func list(field func(*Config) *[]string) func(*Config, string) error {
	return func(c *Config, v string) error {
		var out []string
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		*field(c) = out
		return nil
	}
}
