package config

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadDefaultsEnvAndFlags(t *testing.T) {
	c, err := Load(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:8080" || c.DataDir != "./data" || c.MongoURI != "" || c.BcryptCost != 12 || c.ShutdownTimeout != 20*time.Second {
		t.Fatalf("defaults: %+v", c)
	}
	c, err = Load([]string{"--addr", "127.0.0.1:9999"}, env(map[string]string{"MAULA_ADDR": "127.0.0.1:7000", "MAULA_ADMIN_EMAILS": "a@x.io, b@x.io"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:9999" {
		t.Errorf("flag did not override env: %s", c.Addr)
	}
	if strings.Join(c.AdminEmails, "|") != "a@x.io|b@x.io" {
		t.Errorf("admin emails = %v", c.AdminEmails)
	}
}

func TestLoadRejectsNamingTheSetting(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		setting string
	}{
		{"bad mongo uri", nil, map[string]string{"MONGODB_URI": "not-a-uri"}, "MONGODB_URI"},
		{"bad mongo uri flag", []string{"--mongodb-uri", "x://"}, nil, "--mongodb-uri"},
		{"bad addr", nil, map[string]string{"MAULA_ADDR": "8080"}, "MAULA_ADDR"},
		{"bad redis", nil, map[string]string{"REDIS_URL": "http://nope"}, "REDIS_URL"},
		{"bad duration", nil, map[string]string{"MAULA_STORE_WAIT": "soon"}, "MAULA_STORE_WAIT"},
		{"short jwt secret", nil, map[string]string{"MAULA_JWT_SECRET": "short"}, "MAULA_JWT_SECRET"},
		{"bad log format", nil, map[string]string{"MAULA_LOG_FORMAT": "xml"}, "MAULA_LOG_FORMAT"},
		{"bcrypt cost", nil, map[string]string{"MAULA_BCRYPT_COST": "40"}, "MAULA_BCRYPT_COST"},
		{"stray argument", []string{"extra"}, nil, "serve"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.args, env(tc.env), io.Discard)
			var se *SettingError
			if !errors.As(err, &se) || se.Setting != tc.setting {
				t.Fatalf("err = %v, want a SettingError naming %s", err, tc.setting)
			}
		})
	}
}

// The README's table must list every setting, so users can find them all.
func TestReadmeListsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range Settings {
		if !strings.Contains(string(readme), "`"+s.Env+"`") {
			t.Errorf("README.md does not list %s", s.Env)
		}
	}
}
