package store

import "sync"

// Write runs f, one write to database db, alone among the writes to that database that go
// through Write (billing's, the chat recorder's and the cost report's; the analyses service
// and the auth service still write directly) when the server is the embedded FerretDB. Each database is one SQLite file, and SQLite lets
// one writer into a file at a time: concurrent writers either wait in SQLite's busy handler,
// which sleeps 1, 2, 5, 10, 15, 20, 25 ms between attempts, or fail with SQLITE_BUSY and are
// retried after a sleep of ours. Queued on a Go mutex instead, the file passes from one writer
// to the next in microseconds. Reads need no gate (WAL readers do not block writers). On
// MongoDB f simply runs.
func (s *Store) Write(db string, f func() error) error {
	if !s.Embedded {
		return f()
	}
	mu, ok := s.gates.Load(db)
	if !ok { // once per database: no mutex allocated on every write
		mu, _ = s.gates.LoadOrStore(db, &sync.Mutex{})
	}
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	return f()
}
