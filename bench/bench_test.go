package bench

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/providers/mockllm"
)

// The floors must themselves deliver the exact text, or the comparison means nothing.
func TestFloorsDeliverTheText(t *testing.T) {
	opts := mockllm.Options{Chunks: 16, ChunkSize: 8, Delay: time.Millisecond, ErrorAfter: -1, ResetAfter: -1, InputTokens: 50}
	up, err := startUpstream(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer up.close()
	rel, err := startRelay(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer rel.close()
	want := mockllm.Text(opts)
	for _, tc := range []loadSpec{
		{target: targetDirect, conc: 4, perWorker: 3, upstream: up.URL, want: want, period: 10 * time.Millisecond},
		{target: targetRelay, conc: 4, perWorker: 3, wsURL: rel.URL, want: want, period: 10 * time.Millisecond},
	} {
		res := runLoad(context.Background(), tc)
		if res.Errors != 0 || res.Lost != 0 || res.Requests != 12 || res.Deltas != 12*16 || res.TTFT.Count() != 12 {
			t.Fatalf("%s: %+v", tc.target, res)
		}
	}
}

// TestReportJSON: the results file holds every row, figures that do not apply as null.
func TestReportJSON(t *testing.T) {
	dir := t.TempDir()
	rep := &Report{Scenario: "x", Rows: []Row{{Scenario: "x", Metric: "m", Value: 1.5, Relay: na, Direct: 2, Unit: "µs"}}}
	if err := write(Config{OutDir: dir}, rep); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "x.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Rows []map[string]any `json:"rows"`
	}
	if err := json.Unmarshal(b, &got); err != nil || len(got.Rows) != 1 {
		t.Fatalf("results file %s: %v", b, err)
	}
	if r := got.Rows[0]; r["value"] != 1.5 || r["relay"] != nil || r["direct"] != 2.0 {
		t.Fatalf("row = %v, want value 1.5, relay null, direct 2", r)
	}
}
