package store

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// localLocks maps a lock name to its process-wide mutex. Owned by this package; entries are
// never removed (lock names are few: per user and per shared document kind).
var localLocks sync.Map

// LocalLock returns the process-wide mutex for name. FerretDB applies an update as a read and
// then a write of the whole document, so two concurrent updates of one document can lose one;
// when this process is the only client of its embedded server (SoleWriter), serialising the
// writers of a document on this mutex is enough, and costs no database round trip.
func LocalLock(name string) *sync.Mutex {
	mu, _ := localLocks.LoadOrStore(name, &sync.Mutex{})
	return mu.(*sync.Mutex)
}

// SoleWriter reports whether this process is the only client that can write: the embedded
// server, not exposed on a TCP address for other instances.
func (s *Store) SoleWriter() bool { return s.Embedded && !s.Exposed }

// NeedsLocking decides whether writers of shared documents must serialise themselves:
// "on" and "local" yes, "off" no, "auto" (or "") yes when the server reports a FerretDB
// version — FerretDB applies an update as a read and then a whole-document write, so two
// concurrent updates of one document can lose one; MongoDB's updates are atomic.
func NeedsLocking(ctx context.Context, s *Store, mode string) (bool, error) {
	switch mode {
	case "on", "local":
		return true, nil
	case "off":
		return false, nil
	case "", "auto":
	default:
		return false, fmt.Errorf("locking %q: want auto, on, local or off", mode)
	}
	var info bson.M
	if err := s.DB(AuthDB).RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info); err != nil {
		return false, fmt.Errorf("buildInfo: %w", err)
	}
	_, ferret := info["ferretdbVersion"]
	return ferret, nil
}

// IsBusy reports SQLite's "database is locked" from the embedded server: the statement did
// not commit and may be retried.
func IsBusy(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "SQLITE_BUSY") || strings.Contains(err.Error(), "database is locked"))
}
