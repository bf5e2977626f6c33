package store

import "sync"

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
