package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"text/tabwriter"
)

// apiKeyInfo is one key as /auth/api-keys lists it (the key text only when just created).
type apiKeyInfo struct {
	ID          string   `json:"id"`
	ToolName    string   `json:"toolName"`
	Name        string   `json:"name"`
	Prefix      string   `json:"prefix"`
	Key         string   `json:"key,omitempty"`
	Permissions []string `json:"permissions"`
	IsActive    bool     `json:"isActive"`
	CreatedAt   string   `json:"createdAt"`
	ExpiresAt   string   `json:"expiresAt,omitempty"`
}

// runKeys lists the account's API keys or creates one: `keys [list] [--tool T]`,
// `keys create --tool T [--name N] [--read-only]`.
func runKeys(ctx context.Context, args []string) error {
	sub := "list"
	if len(args) > 0 && (args[0] == "list" || args[0] == "create") {
		sub, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("keys "+sub, flag.ContinueOnError)
	var a clientAuth
	a.flags(fs, false)
	tool := fs.String("tool", "", "tool id (list: only this tool's keys; create: required)")
	name := fs.String("name", "", "create: the key's name")
	readOnly := fs.Bool("read-only", false, "create: permission read only (default read and write)")
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	if fs.NArg() > 0 {
		return usageErr(fmt.Errorf("unexpected argument %q (keys list | keys create --tool T)", fs.Arg(0)))
	}
	if err := a.resolve(true); err != nil {
		return err
	}
	if sub == "create" {
		if *tool == "" {
			return usageErr(errors.New("keys create needs --tool"))
		}
		body := map[string]any{"toolName": *tool}
		if *name != "" {
			body["name"] = *name
		}
		if *readOnly {
			body["permissions"] = []string{"read"}
		}
		var out struct {
			APIKey apiKeyInfo `json:"apiKey"`
		}
		if err := callAPI(ctx, &a, http.MethodPost, "/auth/api-keys", body, &out); err != nil {
			return runErr(fmt.Errorf("create key: %w", err))
		}
		fmt.Fprintf(os.Stderr, "Created %s key %q (%s); the key text is shown only now:\n", out.APIKey.ToolName, out.APIKey.Name, out.APIKey.ID)
		fmt.Println(out.APIKey.Key)
		return nil
	}
	var out struct {
		APIKeys []apiKeyInfo `json:"apiKeys"`
	}
	if err := callAPI(ctx, &a, http.MethodGet, "/auth/api-keys", nil, &out); err != nil {
		return runErr(fmt.Errorf("list keys: %w", err))
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTOOL\tPREFIX\tNAME\tPERMISSIONS\tACTIVE\tCREATED")
	for _, k := range out.APIKeys {
		if *tool != "" && k.ToolName != *tool {
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%v\t%s\n", k.ID, k.ToolName, k.Prefix, k.Name, k.Permissions, k.IsActive, k.CreatedAt)
	}
	return tw.Flush()
}
