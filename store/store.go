// Package store opens the platform's MongoDB: an embedded FerretDB (SQLite backend) started
// in-process when no MONGODB_URI is given, or the server the URI names. Either way the rest of
// the program talks to it through the official mongo-driver, so there is one code path. The
// package also owns the databases' indexes (schema.go) and the retention rules (retention.go).
// It knows collection names, never the documents' Go types.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/connstring"
)

// Options say which MongoDB to use.
type Options struct {
	// URI of an external MongoDB; empty starts the embedded FerretDB.
	URI string
	// DataDir holds the embedded server's SQLite files.
	DataDir string
	// Listen, when set, is the TCP address the embedded server listens on, so that other
	// processes can share it; otherwise it takes a free loopback port.
	Listen string
	// Wait bounds how long an unreachable server is retried before Open gives up.
	Wait time.Duration
	// Logger receives the store's own lines; of FerretDB's, only errors.
	Logger *slog.Logger
}

// Store is an open connection to the platform's MongoDB. Close releases it.
type Store struct {
	Client *mongo.Client
	// URI is the address clients can use; for the embedded server, its loopback URI.
	URI string
	// Embedded is true when this process runs the FerretDB server itself.
	Embedded bool
	// Exposed is true when the embedded server listens on an address given for other
	// processes (Options.Listen), so they may write too.
	Exposed bool

	stopFerret context.CancelFunc
	ferretDone chan struct{}
	dir        string // the embedded server's SQLite files; set once by Open
	// gates maps a database name to the mutex its writes queue on (Write). Entries are never
	// removed: databases are few (maula-auth-db and one per tool).
	gates sync.Map
}

// ValidateURI reports whether a MongoDB connection string is usable, before anything is dialled.
func ValidateURI(uri string) error {
	if _, err := connstring.ParseAndValidate(uri); err != nil {
		return fmt.Errorf("invalid MongoDB URI: %w", err)
	}
	return nil
}

// CheckDataDir creates the data directory if needed and proves it is writable.
func CheckDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("data dir not writable: %w", err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// Open connects to MongoDB per opts, starting the embedded server when opts.URI is empty.
// An unreachable server is retried with backoff for opts.Wait.
func Open(ctx context.Context, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Wait <= 0 {
		opts.Wait = 30 * time.Second
	}
	s := &Store{URI: opts.URI}
	if s.URI == "" {
		if err := s.startEmbedded(opts, log); err != nil {
			return nil, err
		}
	} else if err := ValidateURI(s.URI); err != nil {
		return nil, err
	}
	copts := options.Client().ApplyURI(s.URI).
		SetServerSelectionTimeout(5 * time.Second).
		SetConnectTimeout(5 * time.Second).
		SetAppName("maula-chat")
	client, err := mongo.Connect(copts)
	if err != nil {
		s.stopEmbedded()
		return nil, fmt.Errorf("connect to MongoDB: %w", err)
	}
	s.Client = client
	if err := s.waitReady(ctx, opts.Wait, log); err != nil {
		_ = s.Close(context.Background())
		return nil, err
	}
	return s, nil
}

func (s *Store) startEmbedded(opts Options, log *slog.Logger) error {
	dir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	dir = filepath.Join(dir, "mongo")
	if err := CheckDataDir(dir); err != nil {
		return err
	}
	s.dir = dir
	listen := opts.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	// FerretDB logs every command at debug level and every error answer as a warning; keep
	// only its errors (panics in its handlers among them).
	quiet := slog.New(log.Handler().WithGroup("ferretdb")).Handler()
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: listen},
		Logger:    slog.New(levelFloor{Handler: quiet, min: slog.LevelError}),
		Handler:   "sqlite",
		SQLiteURL: "file:" + dir + "/?_pragma=synchronous(NORMAL)",
	})
	if err != nil {
		return fmt.Errorf("start embedded FerretDB: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopFerret, s.ferretDone, s.Embedded, s.Exposed = cancel, make(chan struct{}), true, opts.Listen != ""
	go func() {
		defer close(s.ferretDone)
		_ = f.Run(ctx)
	}()
	// MongoDBURI blocks until the listener is bound, or fails the bind (e.g. port in use).
	uriCh := make(chan string, 1)
	go func() { uriCh <- f.MongoDBURI() }()
	select {
	case s.URI = <-uriCh:
		return nil
	case <-s.ferretDone:
		return fmt.Errorf("embedded FerretDB could not listen on %s", listen)
	}
}

func (s *Store) waitReady(ctx context.Context, wait time.Duration, log *slog.Logger) error {
	deadline := time.Now().Add(wait)
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := s.Client.Ping(pctx, readpref.Primary())
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().Add(backoff).After(deadline) {
			return fmt.Errorf("MongoDB at %s unreachable after %d attempts: %w", redactURI(s.URI), attempt, err)
		}
		log.Warn("MongoDB not reachable yet, retrying", "attempt", attempt, "in", backoff, "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(backoff*2, 3*time.Second)
	}
}

// Ping checks that the server answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.Client.Ping(ctx, readpref.Primary())
}

// DB returns a database handle.
func (s *Store) DB(name string) *mongo.Database { return s.Client.Database(name) }

// Close disconnects and stops the embedded server, waiting for it to flush.
func (s *Store) Close(ctx context.Context) error {
	var err error
	if s.Client != nil {
		err = s.Client.Disconnect(ctx)
	}
	s.stopEmbedded()
	return err
}

func (s *Store) stopEmbedded() {
	if s.stopFerret == nil {
		return
	}
	s.stopFerret()
	<-s.ferretDone
	s.stopFerret = nil
}

// redactURI drops credentials from a URI for logs.
func redactURI(uri string) string {
	cs, err := connstring.Parse(uri)
	if err != nil || cs.Username == "" {
		return uri
	}
	return cs.Scheme + "://***@" + fmt.Sprint(cs.Hosts)
}

// IsDuplicateKey reports whether err is a unique-index violation (E11000).
func IsDuplicateKey(err error) bool { return mongo.IsDuplicateKeyError(err) }

// ErrNotFound is returned by lookups that find nothing.
var ErrNotFound = errors.New("not found")

// levelFloor drops records below a level; FerretDB's handler has no level of its own.
//
// It also defers WithAttrs and WithGroup to the records that pass: FerretDB calls
// logger.With(args) twice for every SQL statement it runs, with the statement's arguments
// (whole documents as JSON), and a text or JSON handler formats attributes as soon as they are
// added, whatever the level of the records that follow. Formatting them only for a record that
// is written removes that work from every read and write of the embedded server.
type levelFloor struct {
	slog.Handler
	min slog.Level
	// pending are the WithAttrs/WithGroup calls not yet applied to Handler, in order.
	pending []func(slog.Handler) slog.Handler
}

func (h levelFloor) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h levelFloor) Handle(ctx context.Context, r slog.Record) error {
	inner := h.Handler
	for _, f := range h.pending {
		inner = f(inner)
	}
	return inner.Handle(ctx, r)
}

func (h levelFloor) WithAttrs(a []slog.Attr) slog.Handler {
	return h.with(func(in slog.Handler) slog.Handler { return in.WithAttrs(a) })
}

func (h levelFloor) WithGroup(n string) slog.Handler {
	return h.with(func(in slog.Handler) slog.Handler { return in.WithGroup(n) })
}

func (h levelFloor) with(f func(slog.Handler) slog.Handler) slog.Handler {
	return levelFloor{h.Handler, h.min, append(h.pending[:len(h.pending):len(h.pending)], f)}
}
