package chat

import (
	"fmt"
	"os"
	"testing"

	"github.com/maula-ai/maula-chat/internal/testenv"
	"github.com/maula-ai/maula-chat/store"
)

// sharedMongo is one migrated store for the package's tests; every test uses its own users.
var sharedMongo *store.Store

func TestMain(m *testing.M) {
	s, closeFn, err := testenv.OpenMongo()
	if err != nil {
		fmt.Fprintln(os.Stderr, "open test MongoDB:", err)
		os.Exit(1)
	}
	sharedMongo = s
	code := m.Run()
	closeFn()
	os.Exit(code)
}
