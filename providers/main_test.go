package providers

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves goroutines behind (streams,
// iterators, upstream connections).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// started by an init in opencensus, which genai's auth imports
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"))
}
