package billing

import (
	"context"
	"fmt"
	"testing"

	"github.com/maula-ai/maula-chat/providers"
)

// BenchmarkTurnMoney measures the money steps of one turn: Reserve then Settle (with the
// rollups, analytics and counters), sequentially, on the embedded store.
func BenchmarkTurnMoney(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	s := e.service(b, PolicyPerCall, 0)
	u := newUser(b, s, int64(b.N)+10)
	b.ResetTimer()
	for i := range b.N {
		res, err := s.Reserve(ctx, req(u, fmt.Sprintf("bench-%d-%d", b.N, i)))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Settle(ctx, res, Outcome{Usage: providers.Usage{Input: 1000, Output: 200}, ProducedOutput: true, Status: StatusDone}); err != nil {
			b.Fatal(err)
		}
	}
}
