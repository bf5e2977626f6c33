package billing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/store"
)

// The journal: the turns' money written many at a time.
//
// Why: written one step at a time (credits.go), a turn costs six single-document writes to the
// embedded server (reserve and settle: ledger entry, subscription, mark applied), ~1.5–2 ms of
// CPU each, and that bounded the recorded turns per second. When this process is the store's
// only writer (locking "local"), its copy of each subscription (the shadow) is the truth, so
// the outcome of each step is known before it is written, and many turns' steps can be
// written together. Only the steps of the hub's turns go this way: the write of a reservation
// answered early (early.go) and the settle of such a reservation.
//
// A flush (one at a time; groupCommit gathers the steps that arrive meanwhile) writes:
//
//  1. the journal document {_id: <name>:<seq>, seq, entries, rollups}: every ledger entry of
//     the batch as it will be stored, applied, with its balance after; once it is written the
//     batch is decided, whatever happens next;
//  2. the entries into the ledger, in one insertMany;
//  3. each subscription the batch touches, once: $inc of the sum of its entries, the holds
//     set and released, and journal.<name> = seq in the same update;
//  4. when due (rollupEvery, a report, shutdown): the rollups and analytics documents of the
//     settles carried and its own, once per document, each also with journal.<name> = seq.
//     Otherwise its settles are carried until a later batch writes them; the documents of
//     the batches since the last that wrote them are kept, so that a replay finds them.
//
// The steps are answered after 1 (they are durable then); 2 to 4 run behind the answer, and
// the next batch is planned once they are done. Until then the users' steps count as in
// flight (jop.after), and reads of a balance wait for them (WaitApplied).
//
// What keeps it exact: the step is decided from the shadow and checked there (a reserve
// needs the credits and no hold yet, a settle needs its hold); while a user has steps in the
// journal no other step writes that user's subscription (every other balance change waits
// in holdEarly, and a settle arriving while one waits takes the one-step-at-a-time path).
// A crash after 1 leaves a document that says what the batch is: at the next start (and
// after a failed flush) it is replayed, with the settles it carries, each write skipped where the document's journal
// marker already has the batch's seq, so a replay of a complete batch changes nothing and one
// of a partial batch finishes it exactly. A crash before 1 loses the batch as if its steps had
// never been answered: reservations vanish with the process, and settles were not answered.
// A flush that fails before 1 answers its steps with errNotWritten: nothing of them was
// written and they take the one-step path. One that fails after 1 is completed by a replay
// (its steps stand); if even the replay fails, billing refuses to change any balance
// (errJournalBroken) until a replay succeeds, because the one-step path cannot know what the
// journal will still write.

// journalColl is the collection of maula-auth-db holding the journals' batch documents (those
// since each journal's last rollup write, and any not deleted yet).
const journalColl = "billing_journal"

// journalBatchLimit keeps a batch's journal document far below MongoDB's 16 MiB.
const journalBatchLimit = 1024

var (
	// errNotWritten: nothing of the step was written; it may be written another way.
	errNotWritten = errors.New("billing: journal: not written")
	// errJournalBroken: a flush could not be completed; balances wait for its replay.
	errJournalBroken = errors.New("billing: journal: a batch waits to be replayed")
)

// journal is the service's batch writer. seq and pending are owned by mu, which a flush or a
// replay holds from start to end; broken mirrors pending != nil for lock-free checks.
type journal struct {
	name string // its batches' _id prefix (batchID) and the markers' field: journal.<name>
	coll *mongo.Collection
	q    groupCommit[*jop]
	mu   sync.Mutex
	seq  int64 // last batch written whole
	// trim deletes the batch documents a rollup write left behind, beside the batches
	// (trimJournal); kept (the oldest batch whose document may still be stored), upTo and
	// running are owned by trimMu, and trimDone counts the deleter for shutdown.
	trimMu   sync.Mutex
	kept     int64
	upTo     int64
	running  bool
	trimDone sync.WaitGroup
	pending  *journalDoc // a batch written in the journal but not yet everywhere else
	broken   atomic.Bool
	// carry is the settles whose rollups are not written yet (their batch documents are
	// kept until they are), since carrySince; timer, when armed, writes them after rollupEvery.
	carry      []*Entry
	carrySince time.Time
	timer      bool
	closed     bool // shutdown: no more timers
	// answered is the last batch whose steps were answered, applied the last one written
	// everywhere (or handed to its replay): a read of a balance waits for applied to reach
	// the answered it found (WaitApplied). Owned by appliedMu; appliedCh is closed and
	// replaced each time applied moves.
	appliedMu         sync.Mutex
	answered, applied int64
	appliedCh         chan struct{}
}

// jop is one step in the journal: a reserve or settle entry, as it will be stored.
type jop struct {
	es  []*Entry // one user's: a step, or a reservation with its settle
	err error    // set by the flush: the steps were refused (wraps errNotWritten)
	// after, when set, runs once the steps are in the shadow and the store, which may be
	// after the answer: by the flush when the op is answered nil, else by runJournal.
	after func()
}

// journalDoc is one batch of a journal.
type journalDoc struct {
	ID  string    `bson:"_id"`
	Seq int64     `bson:"seq"`
	At  time.Time `bson:"at"`
	// Entries are stored as one BSON binary (pack): FerretDB reads a document again
	// to delete it, and decoding a binary costs far less than an array of documents.
	Entries []*Entry `bson:"-"`
	Packed  []byte   `bson:"entries"`
	// Rollups says this batch writes the rollups of its settles and of every settle since
	// the last batch that did (carried: in memory, and in the stored batches since that one).
	// Otherwise they all wait for a later one.
	Rollups bool `bson:"rollups"`
	// Carried is read from batches of the first journal format only, which listed the
	// _ids of the earlier batches' settles they carried (now read from the batches kept).
	Carried []bson.ObjectID `bson:"carried,omitempty"`
	// Batch tells this batch from a stale document of the same seq (flushFailed).
	Batch   bson.ObjectID `bson:"batch"`
	carried []*Entry
	listed  *journalDoc // the batch of the first format whose Carried list d's carried starts with
}

// journalName is what a journal may be called: no ':' (it separates the name from the seq
// in batchID) and nothing a field name cannot hold (journal.<name> markers).
var journalName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// batchID is the _id of a journal's batch: ordered by seq as strings are.
func batchID(name string, seq int64) string { return fmt.Sprintf("%s:%019d", name, seq) }

// packedEntries is the form of a batch's entries in its journal document.
type packedEntries struct {
	E []*Entry `bson:"e"`
}

func (d *journalDoc) pack() (err error) {
	d.Packed, err = bson.Marshal(packedEntries{d.Entries})
	if err != nil {
		return fmt.Errorf("billing: journal: pack: %w", err)
	}
	return nil
}

func (d *journalDoc) unpack() error {
	var p packedEntries
	if err := bson.Unmarshal(d.Packed, &p); err != nil {
		return fmt.Errorf("billing: journal: batch %d: %w", d.Seq, err)
	}
	d.Entries = p.E
	return nil
}

// loadCarried reads from the ledger the settles a stored journal document of the first
// format carries.
func (s *Service) loadCarried(ctx context.Context, d *journalDoc) error {
	d.carried = d.carried[:0]
	for _, id := range d.Carried {
		var e Entry
		if err := s.ledger.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&e); err != nil {
			return fmt.Errorf("billing: journal: carried settle %s: %w", id.Hex(), err)
		}
		d.carried = append(d.carried, &e)
	}
	return nil
}

// settles returns the entries of d whose rollups d writes, or would carry.
func (d *journalDoc) settles() []*Entry {
	return d.ownSettles(append([]*Entry(nil), d.carried...))
}

// ownSettles appends to out the settles of d's own entries whose rollups are the journal's.
func (d *journalDoc) ownSettles(out []*Entry) []*Entry {
	for _, e := range d.Entries {
		if e.Phase == PhaseSettle && e.Rollup == "done" {
			out = append(out, e)
		}
	}
	return out
}

// Rollups are written at most every rollupEvery (and before any report reads them, and at
// shutdown): a rollup document takes the increments of all the settles since in one write,
// where each batch would write it again. Their cost is per document, not per settle (a
// document per user and day at the user levels), and while they are written no batch can
// be: at 1 s they took a quarter of the auth database's time under load, at 5 s a twentieth.
// rollupCarryMax bounds the settles carried (memory, and what a start replays).
const (
	rollupEvery    = 5 * time.Second
	rollupCarryMax = 8192
)

// journalMark is the marker a batch leaves on every document it changes: journal.<name> =
// seq. check says the batch may have been written before (a replay): read the marker first.
type journalMark struct {
	name  string
	seq   int64
	check bool
}

func (m *journalMark) field() string { return "journal." + m.name }

func (m *journalMark) set() bson.E {
	return bson.E{Key: "$set", Value: bson.D{{Key: m.field(), Value: m.seq}}}
}

// has reports whether the document already carries the batch (only when m.check). A document
// written before its _id was derived (store.UpsertByID) is found by its key fields.
func (m *journalMark) has(ctx context.Context, c *mongo.Collection, id any, key bson.D) (bool, error) {
	if !m.check {
		return false, nil
	}
	var d struct {
		Journal map[string]int64 `bson:"journal"`
	}
	proj := options.FindOne().SetProjection(bson.D{{Key: "journal", Value: 1}})
	err := c.FindOne(ctx, bson.D{{Key: "_id", Value: id}}, proj).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) && key != nil {
		err = c.FindOne(ctx, key, proj).Decode(&d) // a scan on FerretDB: replays only
	}
	if errors.Is(err, mongo.ErrNoDocuments) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("billing: journal: read marker of %s: %w", c.Name(), err)
	}
	return d.Journal[m.name] >= m.seq, nil
}

// openJournal starts the journal named name: it replays the last batch, which a crash may
// have left half written (a complete one is skipped document by document), with the settles
// it carries: those of the batches kept since the last that wrote the rollups.
func (s *Service) openJournal(ctx context.Context, name string) error {
	if !journalName.MatchString(name) {
		return fmt.Errorf("billing: journal name %q: 1 to 64 letters, digits, '_' and '-'", name)
	}
	// Batches are deleted by _id: without the index every delete reads the whole collection.
	if err := s.createIndexed(ctx, journalColl); err != nil {
		return fmt.Errorf("billing: journal: %w", err)
	}
	j := &journal{name: name, coll: s.o.Mongo.DB(model.AuthDB).Collection(journalColl), appliedCh: make(chan struct{})}
	j.q.limit = journalBatchLimit
	j.q.before = func() { j.mu.Lock(); j.mu.Unlock() } // the last batch's apply, running behind its answer
	s.j = j
	// The batches kept, oldest first: only the last can be unfinished (each is written
	// everywhere before the next begins), and the batches are deleted up to each one that
	// writes the rollups, once it is written.
	cur, err := j.coll.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$gte", Value: name + ":"}, {Key: "$lt", Value: name + ";"}}}},
		options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return fmt.Errorf("billing: journal: read: %w", err)
	}
	var docs []*journalDoc
	if err := cur.All(ctx, &docs); err != nil {
		return fmt.Errorf("billing: journal: read: %w", err)
	}
	if len(docs) == 0 {
		return nil
	}
	d := docs[len(docs)-1]
	if err := d.unpack(); err != nil {
		return err
	}
	if err := carriedSince(docs, d); err != nil {
		return err
	}
	if l := d.listed; l != nil { // a batch of the first format lists what it carried before it
		after := d.carried // the settles of the batches from l on (none when l is d)
		if err := s.loadCarried(ctx, l); err != nil {
			return err
		}
		d.carried = append(append([]*Entry(nil), l.carried...), after...)
	}
	if err := s.replayJournal(ctx, d); err != nil {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.trimMu.Lock()
	j.kept = docs[0].Seq // the ones before d are deleted after the next rollup write
	j.trimMu.Unlock()
	s.committed(d)
	if len(j.carry) > 0 { // the last run's rollups still to write: now, not at its next turn
		return s.writeBatch(ctx, nil, true)
	}
	return nil
}

// carriedSince sets the settles d (the last of docs) carries: those of the batches kept
// between the last one before d that wrote the rollups and d. A batch of the first format
// there (or d itself) lists the _ids of those before it: only the batches after it are read,
// and d.listed is set to it for loadCarried.
func carriedSince(docs []*journalDoc, d *journalDoc) error {
	since := 0
	for i := len(docs) - 2; i >= 0; i-- {
		if docs[i].Rollups {
			since = i + 1
			break
		}
	}
	d.carried, d.listed = nil, nil
	for i := len(docs) - 1; i >= since; i-- {
		if len(docs[i].Carried) > 0 {
			since, d.listed = i, docs[i]
			break
		}
	}
	for _, o := range docs[since : len(docs)-1] {
		if err := o.unpack(); err != nil {
			return err
		}
		d.carried = o.ownSettles(d.carried)
	}
	return nil
}

// committed records a batch written everywhere (j.mu held): its seq, and the settles whose
// rollups it left to a later batch.
func (s *Service) committed(d *journalDoc) {
	j := s.j
	j.seq = d.Seq
	if d.Rollups {
		j.carry = nil
		s.trimJournal(d.Seq)
		return
	}
	if len(j.carry) == 0 {
		j.carrySince = time.Now()
	}
	j.carry = d.settles()
	if len(j.carry) > 0 && !j.timer && !j.closed {
		j.timer = true
		time.AfterFunc(rollupEvery, func() {
			if err := s.syncJournal(context.Background(), true); err != nil { // syncJournal bounds it
				s.log.Warn("billing: journal: writing the rollups", "err", err)
			}
		})
	}
}

// trimJournal deletes the batch documents before upTo: nothing before a batch that wrote the
// rollups is needed any more (a replay reads the batches since the last such one, and a
// crash partway leaves only batches before it). They are deleted by one goroutine beside the
// next batches, not while the journal waits (a rollup write leaves ~150 at 5 s), each by _id:
// a filter on a range would read every document of the collection. A failure leaves the rest
// to the next rollup write, shutdown to the next start (j.mu held: closed is read).
func (s *Service) trimJournal(upTo int64) {
	j := s.j
	j.trimMu.Lock()
	defer j.trimMu.Unlock()
	j.upTo = max(j.upTo, upTo)
	if j.running || j.kept >= j.upTo || j.closed {
		return
	}
	j.running = true
	j.trimDone.Add(1)
	go func() {
		defer j.trimDone.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for {
			j.trimMu.Lock()
			seq := j.kept
			if seq >= j.upTo {
				j.running = false
				j.trimMu.Unlock()
				return
			}
			j.trimMu.Unlock()
			err := s.write(func() error {
				_, err := j.coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: batchID(j.name, seq)}})
				return err
			})
			j.trimMu.Lock()
			if err != nil {
				j.running = false
				j.trimMu.Unlock()
				s.log.Warn("billing: journal: deleting an old batch", "seq", seq, "err", err)
				return
			}
			j.kept++
			j.trimMu.Unlock()
		}
	}()
}

// SyncJournal writes the rollups the journal still carries, so that reports read every
// settled turn; reports call it. A no-op without the journal.
func (s *Service) SyncJournal(ctx context.Context) error { return s.syncJournal(ctx, false) }

func (s *Service) syncJournal(ctx context.Context, fromTimer bool) error {
	if s.j == nil {
		return nil
	}
	// A report's client may go away: a batch begun must not be cut by it (nor wait forever).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	j := s.j
	j.mu.Lock()
	defer j.mu.Unlock()
	if fromTimer {
		j.timer = false
	}
	if err := s.repairLocked(ctx); err != nil {
		return err
	}
	if len(j.carry) == 0 {
		return nil
	}
	return s.writeBatch(ctx, nil, true)
}

// closeJournal writes what the journal carries and stops its timers (shutdown).
func (s *Service) closeJournal(ctx context.Context) {
	if s.j == nil {
		return
	}
	if err := s.SyncJournal(ctx); err != nil {
		s.log.Warn("billing: journal: writing the rollups at shutdown", "err", err)
	}
	s.j.mu.Lock()
	s.j.closed = true
	s.j.mu.Unlock()
	s.j.trimDone.Wait() // bounded like WaitEarly: the deleter gives up after 30 s
}

// runJournal writes es (one user's) through the journal, together, and returns when they
// are decided: nil once they are in a journal document (a crash from then on is completed by
// the replay), an error when nothing of them was written (errNotWritten) or balances wait for
// a replay (errJournalBroken). after (if not nil) runs once they are also in the shadow and
// the store, or at once on an error: until then the user's steps must count them in flight.
func (s *Service) runJournal(after func(), es ...*Entry) error {
	return s.queueJournal(after, es...)()
}

// queueJournal queues es in the journal and returns runJournal's wait for them: steps queued
// after these are written in the same batch, after them, or in a later one.
func (s *Service) queueJournal(after func(), es ...*Entry) (wait func() error) {
	op := &jop{es: es, after: after}
	it := s.j.q.add(op)
	return func() error {
		err := s.j.q.wait(it, s.flushJournal)
		if err == nil {
			err = op.err
		}
		if err != nil && after != nil {
			after()
		}
		return err
	}
}

// WaitApplied waits until every batch of the journal answered before the call is written
// everywhere, so that a read of a subscription after a turn's chat.done sees the turn; it
// returns errJournalBroken while a batch waits for its replay (the store lacks answered
// steps). A no-op without the journal.
func (s *Service) WaitApplied(ctx context.Context) error {
	if s.j == nil {
		return nil
	}
	j := s.j
	j.appliedMu.Lock()
	target := j.answered
	for j.applied < target {
		ch := j.appliedCh
		j.appliedMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("billing: waiting for the journal: %w", ctx.Err())
		}
		j.appliedMu.Lock()
	}
	j.appliedMu.Unlock()
	if j.broken.Load() {
		return errJournalBroken
	}
	return nil
}

// markAnswered and markApplied move answered and applied to seq.
func (j *journal) markAnswered(seq int64) {
	j.appliedMu.Lock()
	j.answered = seq
	j.appliedMu.Unlock()
}

func (j *journal) markApplied(seq int64) {
	j.appliedMu.Lock()
	j.applied = seq
	close(j.appliedCh)
	j.appliedCh = make(chan struct{})
	j.appliedMu.Unlock()
}

// journalReady returns errJournalBroken while a failed batch waits for its replay, after one
// more attempt at it. Every step that changes a balance asks first: until the batch is
// written, nothing can tell which of its changes are in place.
func (s *Service) journalReady(ctx context.Context) error {
	if s.j == nil || !s.j.broken.Load() {
		return nil
	}
	j := s.j
	j.mu.Lock()
	defer j.mu.Unlock()
	return s.repairLocked(ctx)
}

// repairLocked replays the pending batch, if any (j.mu held).
func (s *Service) repairLocked(ctx context.Context) error {
	j := s.j
	if j.pending == nil {
		return nil
	}
	if err := s.replayJournal(ctx, j.pending); err != nil {
		return fmt.Errorf("%w: %w", errJournalBroken, err)
	}
	s.log.Warn("billing: journal: a failed batch was completed by replay", "seq", j.pending.Seq)
	s.committed(j.pending)
	j.pending = nil
	j.broken.Store(false)
	return nil
}

// flushJournal writes one batch (groupCommit's flush): the steps refused by the shadow get
// their own error, the others are written together. They are answered once the batch's
// journal document is written: the rest of the batch (ledger, subscriptions, rollups) runs
// behind the answer, in a goroutine that holds j.mu until it is done, so the next batch is
// planned on a shadow that holds this one (groupCommit.before waits for it too).
func (s *Service) flushJournal(batch []*jop) error {
	// The batch carries many callers' steps: no caller's cancellation may cut it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	j := s.j
	j.mu.Lock()
	behind := false // the apply goroutine owns ctx and j.mu from then on
	defer func() {
		if !behind {
			cancel()
			j.mu.Unlock()
		}
	}()
	if err := s.repairLocked(ctx); err != nil {
		// Nothing of this batch was written: its steps may go the step-by-step way, which
		// waits for the repair (journalReady) and says so if it fails.
		return fmt.Errorf("%w: %w", errNotWritten, err)
	}
	doc, err := s.startBatch(ctx, s.planJournal(ctx, batch), false)
	if err != nil {
		if err = s.flushFailed(ctx, doc, err); err == nil {
			runAfter(batch)
		}
		return err
	}
	if doc == nil {
		return nil
	}
	j.markAnswered(doc.Seq)
	behind = true
	go func() {
		defer j.mu.Unlock()
		defer cancel()
		defer func() {
			// A panic past applyCaught (the replay, committed): the batch waits for its replay
			// like a failed one, and its waiters are released, not left waiting for ever.
			if r := recover(); r != nil {
				s.log.Error("billing: journal: a batch panicked; balances wait for its replay", "seq", doc.Seq, "panic", r)
				j.pending = doc
				j.broken.Store(true)
			}
			runAfter(batch)
			j.markApplied(doc.Seq)
		}()
		// A failure here is the replay's (flushFailed): the steps are in the journal, so
		// they stand; if it cannot complete them, balances wait (errJournalBroken).
		_ = s.finishBatch(ctx, doc)
	}()
	return nil
}

// runAfter runs the after of each op of a batch answered nil.
func runAfter(batch []*jop) {
	for _, op := range batch {
		if op.err == nil && op.after != nil {
			op.after()
		}
	}
}

// writeBatch writes a batch of entries everywhere (j.mu held); force writes the rollups
// carried even when they are not due.
func (s *Service) writeBatch(ctx context.Context, entries []*Entry, force bool) error {
	doc, err := s.startBatch(ctx, entries, force)
	if err != nil {
		return s.flushFailed(ctx, doc, err)
	}
	if doc == nil {
		return nil
	}
	return s.finishBatch(ctx, doc)
}

// startBatch writes a batch's journal document (step 1; j.mu held) and returns it, or nil
// when there is nothing to write. On an error, the document may or may not be stored:
// flushFailed finds out.
func (s *Service) startBatch(ctx context.Context, entries []*Entry, force bool) (*journalDoc, error) {
	j := s.j
	doc := &journalDoc{ID: batchID(j.name, j.seq+1), Seq: j.seq + 1, At: s.now().UTC(), Entries: entries, carried: j.carry,
		Batch: bson.NewObjectID()}
	if err := doc.pack(); err != nil {
		return nil, fmt.Errorf("%w: %w", errNotWritten, err)
	}
	pending := len(j.carry)
	for _, e := range entries {
		if e.Phase == PhaseSettle {
			pending++
		}
	}
	doc.Rollups = pending > 0 && (force || pending >= rollupCarryMax || (len(j.carry) > 0 && time.Since(j.carrySince) >= rollupEvery))
	if len(entries) == 0 && !doc.Rollups {
		return nil, nil
	}
	err := retryBusy(ctx, func() error {
		if err := s.testJournalFault("journal"); err != nil {
			return err
		}
		return s.write(func() error {
			_, err := j.coll.InsertOne(ctx, doc) // an insert: a replace would read the last batch first
			return err
		})
	})
	return doc, err
}

// finishBatch does steps 2 to 4 of a batch whose journal document is written (j.mu held),
// through its replay if they fail.
func (s *Service) finishBatch(ctx context.Context, doc *journalDoc) error {
	err := s.applyCaught(ctx, doc)
	if err == nil {
		s.committed(doc)
		return nil
	}
	return s.flushFailed(ctx, doc, err)
}

// applyCaught is applyJournal for a new batch, with a panic turned into its error: the batch
// is in the journal, so it must go through flushFailed like any failure.
func (s *Service) applyCaught(ctx context.Context, doc *journalDoc) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("billing: journal: batch %d panicked: %v", doc.Seq, r)
		}
	}()
	return s.applyJournal(ctx, doc, false)
}

// flushFailed decides what a failed flush wrote: nothing when the journal does not hold the
// batch (its steps may go another way), else the batch is completed by replay; while that
// fails, balances wait (errJournalBroken).
func (s *Service) flushFailed(ctx context.Context, doc *journalDoc, cause error) error {
	if doc == nil { // never sent (startBatch could not build it)
		return cause
	}
	j := s.j
	wait := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		var got journalDoc
		err := j.coll.FindOne(ctx, bson.D{{Key: "_id", Value: doc.ID}}).Decode(&got)
		if err == nil && got.Batch != doc.Batch {
			// Another batch of this seq, stored after it was answered "not written": its
			// steps went another way, so it must never be replayed.
			s.log.Error("billing: journal: a stale batch of the same seq; deleted", "seq", doc.Seq)
			err = s.write(func() error { _, err := j.coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: doc.ID}}); return err })
			if err == nil {
				return fmt.Errorf("%w: %w", errNotWritten, cause)
			}
		}
		if errors.Is(err, mongo.ErrNoDocuments) {
			s.log.Warn("billing: journal: a batch was not written", "seq", doc.Seq, "err", cause)
			return fmt.Errorf("%w: %w", errNotWritten, cause)
		}
		if err == nil { // it holds the batch: the one in memory, whose carried settles are loaded
			if err = s.replayJournal(ctx, doc); err == nil {
				s.log.Warn("billing: journal: a failed batch was completed by replay", "seq", doc.Seq, "err", cause)
				s.committed(doc)
				return nil
			}
		}
		if attempt == 2 {
			j.pending = doc
			j.broken.Store(true)
			s.log.Error("billing: journal: a batch could not be completed; balances wait for its replay", "seq", doc.Seq, "err", cause, "replay", err)
			return fmt.Errorf("%w: %w", errJournalBroken, cause)
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait *= 4
	}
}

// userBatch is one user's balance and holds in a batch being planned.
type userBatch struct {
	credits int64
	holds   map[string]hold
}

// planJournal checks each step against the shadow, in order, and completes its entry
// (applied, balance after); a step that does not hold is refused alone. It returns the
// entries to write.
func (s *Service) planJournal(ctx context.Context, batch []*jop) []*Entry {
	users := map[bson.ObjectID]*userBatch{}
	now := s.now().UTC()
	var entries []*Entry
	for _, op := range batch {
		user := op.es[0].UserID
		ub := users[user]
		if ub == nil {
			var cur *subDoc
			err := s.onSub(ctx, user, func() (err error) { cur, err = s.currentSub(ctx, user); return err })
			if err == nil && cur == nil {
				err = ErrNoSubscription
			}
			if err != nil {
				op.err = fmt.Errorf("%w: %w", errNotWritten, err)
				continue
			}
			ub = &userBatch{credits: cur.Features.AICredits, holds: make(map[string]hold, len(cur.Holds))}
			for k, h := range cur.Holds {
				ub.holds[k] = h
			}
			users[user] = ub
		}
		// The op's steps hold together or not at all: undo records how to take them back.
		credits := ub.credits
		var undo []func()
		for _, e := range op.es {
			if e.UserID != user || !stepHolds(ub.holds, credits, e) {
				op.err = fmt.Errorf("%w: %s %q does not match the balance or holds in memory", errNotWritten, e.Phase, e.RequestID)
				break
			}
			undo = append(undo, applyStep(ub.holds, &credits, e))
			e.BalanceAfter = credits
		}
		if op.err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
			continue
		}
		ub.credits = credits
		for _, e := range op.es {
			e.State, e.AppliedAt = StateApplied, &now
			entries = append(entries, e)
		}
	}
	return entries
}

// stepHolds reports whether e may be applied to a balance of credits with holds: a reserve
// needs the credits and no hold of its request yet, a settle needs its reserve's hold.
func stepHolds(holds map[string]hold, credits int64, e *Entry) bool {
	h, held := holds[holdKey("r_", e.RequestID)]
	switch e.Phase {
	case PhaseReserve:
		return !held && credits >= e.Reserved
	case PhaseSettle:
		return held && h.Phase == PhaseReserve && h.Credits == e.Reserved
	}
	return false
}

// applyStep applies a reserve or settle entry to a balance and its holds (what
// journalSubUpdate writes), and returns how to take it back.
func applyStep(holds map[string]hold, credits *int64, e *Entry) (undo func()) {
	key := holdKey("r_", e.RequestID)
	*credits += e.Credits
	old, had := holds[key]
	if e.Phase == PhaseReserve {
		holds[key] = hold{Phase: PhaseReserve, Credits: e.Reserved, At: e.At, RequestID: e.RequestID}
	} else {
		delete(holds, key)
	}
	return func() {
		*credits -= e.Credits
		if had {
			holds[key] = old
		} else {
			delete(holds, key)
		}
	}
}

// applyJournal does steps 2 to 4 of a batch. replay says they may have been done before, in
// part: every write is then checked against what is stored.
func (s *Service) applyJournal(ctx context.Context, doc *journalDoc, replay bool) error {
	if err := s.insertJournaled(ctx, doc.Entries, replay); err != nil {
		return err
	}
	mark := &journalMark{name: s.j.name, seq: doc.Seq, check: replay}
	var order []bson.ObjectID
	byUser := map[bson.ObjectID][]*Entry{}
	for _, e := range doc.Entries {
		if _, ok := byUser[e.UserID]; !ok {
			order = append(order, e.UserID)
		}
		byUser[e.UserID] = append(byUser[e.UserID], e)
	}
	if err := s.writeJournaledSubs(ctx, order, byUser, mark); err != nil {
		return err
	}
	if !doc.Rollups {
		return nil
	}
	b := s.rollupBatch(doc.settles())
	return s.withLock(ctx, store.RollupsLock, func() error { return s.writeDocs(ctx, b, mark) })
}

// insertJournaled stores a batch's entries: one insertMany, or, in a replay, one insert each
// with an entry already there kept.
func (s *Service) insertJournaled(ctx context.Context, entries []*Entry, replay bool) error {
	if len(entries) == 0 {
		return nil
	}
	if err := s.testJournalFault("ledger"); err != nil {
		return err
	}
	if !replay {
		docs := make([]any, len(entries))
		for i, e := range entries {
			docs[i] = e
		}
		err := retryBusy(ctx, func() error { return s.write(func() error { _, err := s.ledger.InsertMany(ctx, docs); return err }) })
		if err != nil {
			return fmt.Errorf("billing: journal: ledger: %w", err)
		}
		return nil
	}
	for _, e := range entries {
		err := retryBusy(ctx, func() error { return s.write(func() error { _, err := s.ledger.InsertOne(ctx, e); return err }) })
		if err == nil || !isDup(err) {
			if err != nil {
				return fmt.Errorf("billing: journal: ledger: %w", err)
			}
			continue
		}
		if n, err := s.ledger.CountDocuments(ctx, bson.D{{Key: "_id", Value: e.ID}}); err != nil {
			return fmt.Errorf("billing: journal: ledger: %w", err)
		} else if n == 0 { // another entry holds (requestId, phase): cannot happen, keep it and say so
			s.log.Error("billing: journal: a ledger entry of the same request and phase exists; kept", "requestId", e.RequestID, "phase", e.Phase)
		}
	}
	return nil
}

// writeJournaledSubs writes each user's part of a batch into their subscription. A replay
// reads and updates them one by one; a flush sends every update in one command (a command
// costs the embedded server about as much as the update it carries), holding the users'
// locks, and keeps the documents as they must now be (the store's only writer knows them).
func (s *Service) writeJournaledSubs(ctx context.Context, order []bson.ObjectID, byUser map[bson.ObjectID][]*Entry, mark *journalMark) error {
	if mark.check {
		for _, u := range order {
			if err := s.replaySub(ctx, u, byUser[u], mark); err != nil {
				return err
			}
		}
		return nil
	}
	sorted := slices.SortedFunc(slices.Values(order), func(a, b bson.ObjectID) int { return bytes.Compare(a[:], b[:]) })
	return s.withUsers(ctx, sorted, func() error {
		models := make([]mongo.WriteModel, 0, len(order))
		afters := make(map[bson.ObjectID]*subDoc, len(order))
		var fault error
		for _, u := range order {
			cur, err := s.currentSub(ctx, u)
			if err != nil {
				return err
			}
			if cur == nil { // deleted since: nothing to hold or return credits to
				s.log.Error("billing: journal: the subscription is gone; its part of the batch is dropped", "user", u.Hex())
				continue
			}
			if fault = s.testJournalFault("sub"); fault != nil {
				break // a test's failure partway: what came before is written
			}
			models = append(models, mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "_id", Value: cur.ID}}).SetUpdate(journalSubUpdate(byUser[u], mark)))
			afters[u] = journaledSub(cur, byUser[u], mark)
		}
		var err error
		if len(models) > 0 {
			// Not retried when busy: the updates before the busy one are written. A failure
			// goes to the replay, which checks every document's marker.
			err = s.write(func() error { _, err := s.subs.BulkWrite(ctx, models); return err })
		}
		if err = errors.Join(err, fault); err != nil {
			for u := range afters {
				s.shadow.Delete(u) // the outcome is unknown: read it next time
			}
			return fmt.Errorf("billing: journal: subscriptions: %w", err)
		}
		for u, after := range afters {
			s.shadow.Store(u, after)
		}
		return nil
	})
}

// withUsers runs f holding the locks of users (sorted, so that two holders of several cannot
// wait for each other).
func (s *Service) withUsers(ctx context.Context, users []bson.ObjectID, f func() error) error {
	if len(users) == 0 {
		return f()
	}
	return s.withLock(ctx, "sub:"+users[0].Hex(), func() error { return s.withUsers(ctx, users[1:], f) })
}

// journaledSub is cur after a batch's entries of its user (journalSubUpdate's effect).
func journaledSub(cur *subDoc, entries []*Entry, mark *journalMark) *subDoc {
	after := *cur
	after.Holds = make(map[string]hold, len(cur.Holds)+len(entries))
	maps.Copy(after.Holds, cur.Holds)
	after.Journal = make(map[string]int64, len(cur.Journal)+1)
	maps.Copy(after.Journal, cur.Journal)
	for _, e := range entries {
		applyStep(after.Holds, &after.Features.AICredits, e)
		if e.Phase == PhaseReserve {
			after.HoldCount++
		} else {
			after.HoldCount--
		}
	}
	after.Journal[mark.name] = mark.seq
	return &after
}

// replaySub writes one user's part of a replayed batch into the subscription, unless its
// marker says it is there: one read and at most one update.
func (s *Service) replaySub(ctx context.Context, user bson.ObjectID, entries []*Entry, mark *journalMark) error {
	upd := journalSubUpdate(entries, mark)
	return s.onSub(ctx, user, func() error {
		cur, err := s.readSub(ctx, user)
		if err != nil {
			return err
		}
		if cur == nil { // deleted since: nothing to hold or return credits to
			s.log.Error("billing: journal: the subscription is gone; its part of the batch is dropped", "user", user.Hex())
			return nil
		}
		if cur.Journal[mark.name] >= mark.seq {
			s.shadow.Store(user, cur)
			return nil
		}
		if err := s.testJournalFault("sub"); err != nil {
			return err
		}
		var after subDoc
		err = s.write(func() error {
			return s.subs.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: cur.ID}}, upd, afterBalance).Decode(&after)
		})
		if err != nil {
			s.shadow.Delete(user) // the outcome is unknown: read it next time
			return fmt.Errorf("billing: journal: subscription: %w", err)
		}
		s.shadow.Store(user, &after)
		return nil
	})
}

// journalSubUpdate is one user's entries of a batch as one update of the subscription: the
// sum of their credits, the holds of the reserves not settled in the batch, the release of
// the holds settled, the count of holds and the journal marker.
func journalSubUpdate(entries []*Entry, mark *journalMark) bson.D {
	var credits, holds int64
	settled := map[string]bool{}
	for _, e := range entries {
		if e.Phase == PhaseSettle {
			settled[holdKey("r_", e.RequestID)] = true
		}
	}
	set := bson.D{{Key: mark.field(), Value: mark.seq}}
	var unset bson.D
	reserved := map[string]bool{}
	for _, e := range entries {
		credits += e.Credits
		key := holdKey("r_", e.RequestID)
		switch e.Phase {
		case PhaseReserve:
			holds++
			reserved[key] = true
			if !settled[key] {
				set = append(set, bson.E{Key: "holds." + key, Value: hold{Phase: PhaseReserve, Credits: e.Reserved, At: e.At, RequestID: e.RequestID}})
			}
		case PhaseSettle:
			holds--
			if !reserved[key] {
				unset = append(unset, bson.E{Key: "holds." + key, Value: ""})
			}
		}
	}
	upd := bson.D{
		{Key: "$inc", Value: bson.D{{Key: "features.aiCredits", Value: credits}, {Key: "holdCount", Value: holds}}},
		{Key: "$set", Value: set},
	}
	if len(unset) > 0 {
		upd = append(upd, bson.E{Key: "$unset", Value: unset})
	}
	return upd
}

// replayJournal writes a batch again where it is not yet: after a crash or a failed flush.
func (s *Service) replayJournal(ctx context.Context, d *journalDoc) error {
	if err := s.applyJournal(ctx, d, true); err != nil {
		return fmt.Errorf("billing: journal: replay of batch %d: %w", d.Seq, err)
	}
	return nil
}

// settlePaired settles, through the journal, a reservation answered early whose write still
// waits for it (pairWait): both go as one step, in one batch. ok is false when the settle must
// go the usual way: the reservation is being written already, or the pair was refused (then
// nothing of it was written, and the reservation's write reports it: reserved again).
func (s *Service) settlePaired(ctx context.Context, res *Reservation, o Outcome) (set *Settlement, ok bool, err error) {
	w := res.written
	if s.j == nil || w == nil || !w.state.CompareAndSwap(writeWaiting, writePaired) {
		return nil, false, nil
	}
	close(w.wake)
	w.settling.Store(true) // this settle is the one
	if err := s.testEarlyFault(w.req); err != nil {
		w.finish(err)
		return nil, false, nil
	}
	e, err := s.settleEntryOf(res, o)
	if err != nil { // cannot price it: the reservation is written alone, the error returned
		w.answer(s.runJournal(w.release, w.entry))
		return nil, true, err
	}
	e.ID, e.Rollup = bson.NewObjectID(), "done"
	err = s.runJournal(w.release, w.entry, e)
	w.answer(err)
	if err != nil {
		if errors.Is(err, errNotWritten) {
			return nil, false, nil
		}
		return nil, true, fmt.Errorf("billing: settle %q: %w", e.RequestID, err)
	}
	s.recordCounters(ctx, e)
	return settlement(e), true, nil
}

// settleBehind settles through the journal a reservation whose write alone is queued there
// (or done): the settle is queued behind it, in the same batch or a later one, without
// waiting for the reservation's answer (a batch more). ok is false when the settle must go
// the usual way (credits.go): the reservation's write failed, another settle of it came
// first, another step of the user's is under way, or the journal refused the settle (nothing
// of it written; a reservation refused by the journal has its settle refused too).
func (s *Service) settleBehind(ctx context.Context, res *Reservation, o Outcome) (set *Settlement, ok bool, err error) {
	w := res.written
	if s.j == nil || w == nil {
		return nil, false, nil
	}
	select {
	case <-w.queued:
	case <-w.done:
		if w.err != nil {
			return nil, false, nil
		}
	case <-ctx.Done():
		return nil, true, fmt.Errorf("billing: settle: waiting for the reservation's write: %w", ctx.Err())
	}
	e, err := s.settleEntryOf(res, o)
	if err != nil {
		return nil, true, err
	}
	if !w.settling.CompareAndSwap(false, true) {
		return nil, false, nil
	}
	u := s.earlyUser(res.UserID)
	u.mu.Lock()
	if u.blocked > 0 {
		u.mu.Unlock()
		return nil, false, nil
	}
	u.inflight++ // until the settle is in the subscription: the user's other steps wait for it
	u.mu.Unlock()
	e.ID, e.Rollup = bson.NewObjectID(), "done" // the journal writes it applied, rollups its own
	if err := s.runJournal(u.done, e); err != nil {
		if errors.Is(err, errNotWritten) {
			return nil, false, nil
		}
		return nil, true, fmt.Errorf("billing: settle %q: %w", e.RequestID, err)
	}
	s.recordCounters(ctx, e)
	return settlement(e), true, nil
}

// testJournalFault, when set by a test, fails the journal's write at step ("journal",
// "ledger", "sub", "rollup").
func (s *Service) testJournalFault(step string) error {
	if s.journalFault == nil {
		return nil
	}
	return s.journalFault(step)
}
