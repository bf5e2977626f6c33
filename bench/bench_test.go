package bench

import (
	"context"
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
