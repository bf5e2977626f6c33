package main

// The client side of the binary: login, chat and keys talk to a running maula-chat server as
// any program would, through the Go SDK (package client) and the /auth REST routes. This file
// holds login and what the three share: the stored credentials and the server's address.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// defaultServer is used when neither --server, MAULA_SERVER nor a stored login names one.
const defaultServer = "http://127.0.0.1:8080"

// credentials is what `maula-chat login` stores, in os.UserConfigDir()/maula-chat/credentials.json
// with mode 0600: the token is a bearer credential for the account.
type credentials struct {
	Server    string `json:"server"`
	Email     string `json:"email"`
	Token     string `json:"token"`
	ExpiresAt string `json:"expiresAt,omitempty"`
}

func credentialsPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find the config directory: %w", err)
	}
	return filepath.Join(dir, "maula-chat", "credentials.json"), nil
}

// loadCredentials returns the stored login, or a zero value when there is none.
func loadCredentials() (credentials, error) {
	var c credentials
	path, err := credentialsPath()
	if err != nil {
		return c, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("read %s: %w", path, err)
	}
	return c, nil
}

// saveCredentials writes the login with mode 0600 in a 0700 directory, through a temporary
// file renamed into place so a crash never leaves half a token.
func saveCredentials(c credentials) (string, error) {
	path, err := credentialsPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	tmp, err := os.CreateTemp(filepath.Dir(path), ".credentials-*")
	if err != nil {
		return "", fmt.Errorf("write credentials: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", fmt.Errorf("write credentials: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return "", fmt.Errorf("write credentials: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("write credentials: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("write credentials: %w", err)
	}
	return path, nil
}

// clientAuth is how the client commands find their server and credential: flags first, then
// MAULA_SERVER / MAULA_TOKEN / MAULA_API_KEY, then the stored login.
type clientAuth struct {
	server, token, apiKey string
}

func (a *clientAuth) flags(fs *flag.FlagSet, withKey bool) {
	fs.StringVar(&a.server, "server", "", "server URL (default: MAULA_SERVER, the stored login's, or "+defaultServer+")")
	fs.StringVar(&a.token, "token", "", "session token (default: MAULA_TOKEN or the stored login)")
	if withKey {
		fs.StringVar(&a.apiKey, "api-key", "", "a tool API key instead of a session (default: MAULA_API_KEY)")
	}
}

// resolve fills what the flags left empty; needCred says a credential is required.
func (a *clientAuth) resolve(needCred bool) error {
	stored, err := loadCredentials()
	if err != nil {
		return usageErr(err)
	}
	if a.server == "" {
		a.server = os.Getenv("MAULA_SERVER")
	}
	if a.server == "" {
		a.server = stored.Server
	}
	if a.server == "" {
		a.server = defaultServer
	}
	a.server = strings.TrimRight(a.server, "/")
	if a.token == "" && a.apiKey == "" {
		a.token, a.apiKey = os.Getenv("MAULA_TOKEN"), os.Getenv("MAULA_API_KEY")
	}
	if a.token == "" && a.apiKey == "" && strings.TrimRight(stored.Server, "/") == a.server {
		a.token = stored.Token
	}
	if needCred && a.token == "" && a.apiKey == "" {
		return usageErr(errors.New("not logged in: run `maula-chat login` (or pass --token / set MAULA_TOKEN)"))
	}
	return nil
}

// apiError is the server's {"error":{"code","message"}} answer.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (HTTP %d): %s", e.Code, e.Status, e.Message)
}

// callAPI sends a JSON request to the server's REST API and decodes a 2xx answer into out.
func callAPI(ctx context.Context, a *clientAuth, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.server+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case a.token != "":
		req.Header.Set("Authorization", "Bearer "+a.token)
	case a.apiKey != "":
		req.Header.Set("X-API-Key", a.apiKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, a.server+path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &apiError{Status: resp.StatusCode, Code: "http_error", Message: resp.Status}
		var env struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(data, &env) == nil && env.Error.Code != "" {
			e.Code, e.Message = env.Error.Code, env.Error.Message
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: bad answer: %w", method, path, err)
	}
	return nil
}

// runLogin asks for an email and password, logs in and stores the session token.
func runLogin(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("login", flag.ContinueOnError)
	var a clientAuth
	fs.StringVar(&a.server, "server", "", "server URL (default: MAULA_SERVER, the stored login's, or "+defaultServer+")")
	email := fs.String("email", "", "account email (asked when not given)")
	passStdin := fs.Bool("password-stdin", false, "read the password from the first line of stdin instead of asking")
	code := fs.String("code", "", "two-factor code, when the account has it on")
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	if fs.NArg() > 0 {
		return usageErr(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if err := a.resolve(false); err != nil {
		return err
	}
	in := bufio.NewReader(os.Stdin)
	if *email == "" {
		fmt.Fprint(os.Stderr, "Email: ")
		line, err := in.ReadString('\n')
		if err != nil && line == "" {
			return usageErr(errors.New("no email given"))
		}
		*email = strings.TrimSpace(line)
	}
	password, err := readPassword(in, *passStdin)
	if err != nil {
		return usageErr(err)
	}
	var out struct {
		Token     string `json:"token"`
		ExpiresAt string `json:"expiresAt"`
		User      struct {
			Email string `json:"email"`
			Name  string `json:"name"`
		} `json:"user"`
	}
	body := map[string]string{"email": *email, "password": password}
	if *code != "" {
		body["code"] = *code
	}
	if err := callAPI(ctx, &a, http.MethodPost, "/auth/login", body, &out); err != nil {
		return runErr(fmt.Errorf("log in: %w", err))
	}
	path, err := saveCredentials(credentials{Server: a.server, Email: out.User.Email, Token: out.Token, ExpiresAt: out.ExpiresAt})
	if err != nil {
		return runErr(err)
	}
	fmt.Fprintf(os.Stderr, "Logged in to %s as %s; token stored in %s (until %s)\n", a.server, out.User.Email, path, out.ExpiresAt)
	return nil
}

// readPassword reads one line; on a terminal it turns echo off while the user types.
func readPassword(in *bufio.Reader, fromStdin bool) (string, error) {
	tty := !fromStdin && isTerminal(os.Stdin)
	if !fromStdin {
		fmt.Fprint(os.Stderr, "Password: ")
	}
	if tty && stty("-echo") == nil {
		defer func() {
			_ = stty("echo")
			fmt.Fprintln(os.Stderr)
		}()
	}
	line, err := in.ReadString('\n')
	if err != nil && line == "" {
		return "", errors.New("no password given")
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// stty changes the terminal's mode through stty(1), which keeps this file free of
// per-platform terminal ioctls.
func stty(arg string) error {
	cmd := exec.Command("stty", arg)
	cmd.Stdin = os.Stdin
	return cmd.Run()
}
