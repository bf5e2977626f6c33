// Package bench measures maula-chat's chat path against its physical floors, in one run on
// one machine: the direct floor (the same load sent straight to the fake upstream over HTTP
// streaming) and the relay floor (a minimal WebSocket-to-upstream relay, relay.go). Every
// scenario starts what it needs on loopback (the server as a child process with embedded
// stores, the fake upstream and the relay in process), runs interleaved rounds, reports
// medians, and checks what it relies on (no lost text, no errors) as it goes.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Config configures a run.
type Config struct {
	Exe    string // the maula-chat binary to start as the server
	Short  bool   // the quick run of `make bench`
	OutDir string // where JSON and markdown results go
	// Streams, when set, replaces the concurrency levels of ttft and gap (e.g. 1,64).
	Streams []int
	// PerWorker, when set, replaces the requests each worker sends in ttft.
	PerWorker int
	// AdminTurns, when set, replaces the recorded turns the admin scenario seeds.
	AdminTurns int
	// ServerCPUProfile, when set, makes every server the scenario starts write its CPU profile
	// (the first to this path, later ones to path.2, path.3, ...).
	ServerCPUProfile string
	Out              io.Writer
}

// Row is one reported figure beside its floors (NaN where a floor does not apply).
type Row struct {
	Scenario string  `json:"scenario"`
	Metric   string  `json:"metric"`
	Value    float64 `json:"value"`
	Relay    float64 `json:"relay"`
	Direct   float64 `json:"direct"`
	Unit     string  `json:"unit"`
	Note     string  `json:"note,omitempty"`
}

// MarshalJSON writes a figure that does not apply (NaN) as null: JSON has no NaN, and
// encoding/json refuses it.
func (r Row) MarshalJSON() ([]byte, error) {
	num := func(v float64) *float64 {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil
		}
		return &v
	}
	type row struct {
		Scenario string   `json:"scenario"`
		Metric   string   `json:"metric"`
		Value    *float64 `json:"value"`
		Relay    *float64 `json:"relay"`
		Direct   *float64 `json:"direct"`
		Unit     string   `json:"unit"`
		Note     string   `json:"note,omitempty"`
	}
	return json.Marshal(row{r.Scenario, r.Metric, num(r.Value), num(r.Relay), num(r.Direct), r.Unit, r.Note})
}

// Report is one scenario's result.
type Report struct {
	Scenario string    `json:"scenario"`
	Machine  string    `json:"machine"`
	Started  time.Time `json:"started"`
	Rounds   int       `json:"rounds"`
	Rows     []Row     `json:"rows"`
	Checks   []string  `json:"checks"` // correctness the bench asserted, and any failure
}

// Scenarios lists the scenarios in the order `all` runs them.
var Scenarios = []string{"ttft", "gap", "capacity", "idle", "record", "admin"}

// Run runs one scenario, or every one for "all".
func Run(ctx context.Context, name string, cfg Config) error {
	names := []string{name}
	if name == "all" {
		names = Scenarios
	}
	for _, n := range names {
		fn, ok := map[string]func(context.Context, Config, *Report) error{
			"ttft": runTTFT, "gap": runGap, "capacity": runCapacity, "idle": runIdle, "record": runRecord, "admin": runAdmin,
		}[n]
		if !ok {
			return fmt.Errorf("unknown scenario %q (have %s, all)", n, strings.Join(Scenarios, ", "))
		}
		rep := &Report{Scenario: n, Machine: machine(), Started: time.Now().UTC(), Rounds: 3}
		fmt.Fprintf(cfg.Out, "== %s ==\n", n)
		if err := fn(ctx, cfg, rep); err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		if err := write(cfg, rep); err != nil {
			return err
		}
		fmt.Fprintln(cfg.Out, Markdown(rep))
	}
	return nil
}

func machine() string {
	host, _ := os.Hostname()
	_ = host
	return fmt.Sprintf("%d cores, %s/%s, %s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
}

func write(cfg Config, rep *Report) error {
	if cfg.OutDir == "" {
		return nil
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: encode %s results: %w", rep.Scenario, err)
	}
	if err := os.WriteFile(filepath.Join(cfg.OutDir, rep.Scenario+".json"), b, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(cfg.OutDir, rep.Scenario+".md"), []byte(Markdown(rep)), 0o644)
}

// Markdown renders a report as a table.
func Markdown(rep *Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### %s (%s; median of %d rounds)\n\n| metric | maula-chat | relay floor | direct floor | unit | note |\n|---|---|---|---|---|---|\n",
		rep.Scenario, rep.Machine, rep.Rounds)
	for _, r := range rep.Rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.Metric, num(r.Value), num(r.Relay), num(r.Direct), r.Unit, r.Note)
	}
	if len(rep.Checks) > 0 {
		b.WriteString("\nChecks: " + strings.Join(rep.Checks, "; ") + "\n")
	}
	return b.String()
}

func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

var na = math.NaN()
