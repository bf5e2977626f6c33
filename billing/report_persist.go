package billing

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/maula-ai/maula-chat/model"
)

// Day summaries: the report cache's closed days, kept across restarts.
//
// Why: the day views (report.go, "The report cache") live in memory, so the first report of a
// level after a start scanned the whole level: 5.7 s for the tool level and 52 s for the user
// level at 1,000,000 turns over 30 days. A closed day's view is now also written to
// maula-auth-db.cost_report_days as one summary document per level and day, _id
// "<level>|<day>" (level: model, tool or user), so that a later process reads it by _id.
//
// What: the view's rows (key fields and the 8 integer counts) and the fingerprint it agreed
// with (the day's model-level documents), encoded together in one binary value (encodeView:
// varints and a table of the provider, model and tool names; about 30 bytes per user-level
// row, so 10,000 users a day are ~300 KB) with its SHA-256. A view larger than summaryChunk
// (4 MB, well below BSON's 16 MB once FerretDB has turned it into base64 JSON) continues in
// chunk documents "<level>|<day>|1", "|2", ... which are written first; the summary, written
// last, names how many there are, so a reader that finds chunks of another write sees the
// hash disagree and ignores the summary. A kept view has at most reportMaxRows rows (~20 MB
// encoded, about 5 chunks); summaryMaxChunks only bounds what a reader accepts, and a view that
// would need more is not persisted.
//
// When written: whenever a report keeps the view of a closed day that is not yet in the store
// in that form: after the scan that built it, after following its changes, or after a recheck
// of the model level found it changed. Not only once the day's model level has been read for
// the last time ("final", recheckDue): that read happens only when a report runs an hour after
// the day's close and the process's start, which a process restarted more often, or asked
// less often, never reaches; and writing earlier is safe, because what makes a summary usable
// is not when it was written but the check below. A day changed after it was written (a late
// recovery) costs one more write, when its view is rebuilt.
//
// When used: on a cache miss of a closed day, before scanning. A summary is used only if it
// decodes, its hash and the level and day it names are right, its rows agree with its own
// fingerprint (agrees), and that fingerprint equals the day's model-level documents read by
// _id now (for the model level: lookupModel, after learning the pairs the summary names; for
// the tool and user levels: the model view the report just checked). That is the check the
// memory cache makes of a view it holds, with the same reasoning: every settled turn adds 1 to
// requests and its figures to one document of each level, so a late settle, a recovery, or
// anything that deletes or rewrites the day's model-level documents makes them differ, and the
// day is scanned and its summary replaced. In particular, were the retention sweeper (or
// anyone) to delete a day's rollups, the mismatched fingerprint already protects: the day's
// model level reads as empty or changed, and its summary, an orphan then, is never used (a
// sweep deleting rollups must still include the model level, or call ForgetCostCache).
// Anything else (a summary of another day or level, a foreign document, a missing chunk, a bit
// flipped) is ignored the same way.
//
// What the check cannot see, as for the memory cache: a correction written into the tool or
// user level alone, which leaves the model level as it was (reconcile reports such levels as
// disagreeing). Before, a restart forgot such a day; now the summary outlives the process, so
// ForgetCostCache drops the whole collection too (and every instance sharing the store should
// be told, as for their memory). fresh=1 does use a summary: it promises that every day is
// checked against its model level now, and a summary is used only after exactly that check.
//
// Writes go through the store's write gate of maula-auth-db like every billing write, with
// their own timeout rather than the request's, and a failed write is logged, not returned:
// the report itself is exact either way.

const reportDaysColl = "cost_report_days"

var (
	// summaryChunk is the most bytes of a view one document holds.
	summaryChunk = 4 << 20
	// summaryMaxChunks bounds the chunk documents of one summary.
	summaryMaxChunks = 16
)

// summaryLevel names a level in the summaries' _id.
var summaryLevel = [numLevels]string{levelFull: "full", levelTool: "tool", levelModel: "model", levelUser: "user"}

func summaryID(lvl int, day string) string { return summaryLevel[lvl] + "|" + day }

// summaryDoc is a persisted day view; chunkDoc one of its further chunks.
type summaryDoc struct {
	ID     string    `bson:"_id"`
	Level  string    `bson:"level"`
	Day    string    `bson:"day"`
	Rows   int64     `bson:"rows"`   // for people reading the collection
	Size   int64     `bson:"size"`   // bytes of the encoded view
	Chunks int64     `bson:"chunks"` // chunk documents after this one
	Sum    []byte    `bson:"sum"`    // SHA-256 of the encoded view
	Data   []byte    `bson:"data"`   // its first summaryChunk bytes
	At     time.Time `bson:"at"`     // when written
}

type chunkDoc struct {
	ID   string `bson:"_id"`
	Data []byte `bson:"data"`
}

const summaryFormat = 1

// encodeView encodes a view of level lvl: format, level, day, a string table, the
// fingerprint (sorted) and the rows (the model level's rows are its fingerprint: none).
func encodeView(lvl int, day string, v *dayView) []byte {
	var body []byte
	index := map[string]uint64{}
	var table []string
	str := func(x string) {
		i, ok := index[x]
		if !ok {
			i = uint64(len(table))
			index[x] = i
			table = append(table, x)
		}
		body = binary.AppendUvarint(body, i)
	}
	nums := func(n *counts) {
		for _, x := range n {
			body = binary.AppendVarint(body, x)
		}
	}
	pairs := slices.SortedFunc(maps.Keys(v.fp), comparePairs)
	body = binary.AppendUvarint(body, uint64(len(pairs)))
	for _, p := range pairs {
		str(p.provider)
		str(p.model)
		n := v.fp[p]
		nums(&n)
	}
	rows := v.rows
	if lvl == levelModel {
		rows = nil
	}
	body = binary.AppendUvarint(body, uint64(len(rows)))
	for i := range rows {
		r := &rows[i]
		switch lvl {
		case levelTool:
			str(r.provider)
			str(r.model)
			str(r.tool)
		case levelUser:
			body = append(body, r.user[:]...)
		}
		nums(&r.n)
	}
	b := make([]byte, 0, len(body)+64+16*len(table))
	b = append(b, summaryFormat, byte(lvl))
	b = appendString(b, day)
	b = binary.AppendUvarint(b, uint64(len(table)))
	for _, s := range table {
		b = appendString(b, s)
	}
	return append(b, body...)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// decoder reads what encodeView wrote; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("bad %s", what)
	}
}

func (d *decoder) uvarint(what string) uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n uint64, what string) []byte {
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail(what)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

// count reads a number of items taking at least min bytes each: never more than remain.
func (d *decoder) count(min int, what string) int {
	n := d.uvarint(what)
	if n > uint64(len(d.b)/min) {
		d.fail(what)
		return 0
	}
	return int(n)
}

func (d *decoder) nums(n *counts) {
	for i := range n {
		v, k := binary.Varint(d.b)
		if k <= 0 {
			d.fail("count")
			return
		}
		n[i] = v
		d.b = d.b[k:]
	}
}

// decodeView is the inverse of encodeView, for a view of lvl and day: anything else is an
// error.
func decodeView(lvl int, day string, b []byte) (*dayView, error) {
	d := &decoder{b: b}
	if head := d.bytes(2, "header"); d.err != nil || head[0] != summaryFormat || int(head[1]) != lvl {
		return nil, errors.New("not a summary of this format and level")
	}
	if got := string(d.bytes(d.uvarint("day"), "day")); d.err != nil || got != day {
		return nil, fmt.Errorf("a summary of day %q", got)
	}
	table := make([]string, d.count(1, "string table"))
	for i := range table {
		table[i] = string(d.bytes(d.uvarint("string"), "string"))
	}
	str := func() string {
		i := d.uvarint("string index")
		if i >= uint64(len(table)) {
			d.fail("string index")
			return ""
		}
		return table[i]
	}
	v := &dayView{fp: map[pairKey]counts{}}
	for range d.count(10, "fingerprint") {
		p := pairKey{str(), str()}
		var n counts
		d.nums(&n)
		if _, dup := v.fp[p]; dup {
			d.fail("fingerprint")
		}
		v.fp[p] = n
	}
	n := d.count(8, "rows")
	if lvl == levelModel && n != 0 {
		d.fail("rows")
	}
	v.rows = make([]viewRow, 0, n)
	for range n {
		var r viewRow
		switch lvl {
		case levelTool:
			r.provider, r.model, r.tool = str(), str(), str()
		case levelUser:
			copy(r.user[:], d.bytes(12, "user"))
		}
		d.nums(&r.n)
		v.rows = append(v.rows, r)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("end")
	}
	if d.err != nil {
		return nil, d.err
	}
	if lvl == levelModel {
		for _, p := range slices.SortedFunc(maps.Keys(v.fp), comparePairs) {
			v.rows = append(v.rows, viewRow{provider: p.provider, model: p.model, n: v.fp[p]})
		}
	}
	if !agrees(lvl, v.rows, v.fp) {
		return nil, errors.New("rows that do not add up to the fingerprint")
	}
	return v, nil
}

// summaries returns the collection of the day summaries, made ready (created, its _id
// lookups indexed) once per cache, or nil when they are not to be used: ForgetCostCache could
// not drop them, or the collection cannot be made ready.
func (c *reportCache) summaries(ctx context.Context, s *Service) *mongo.Collection {
	c.sumMu.Lock()
	defer c.sumMu.Unlock()
	if c.sumDrop && !c.dropSummaries(ctx, s) {
		return nil
	}
	if !c.sumReady && !c.readySummaries(ctx, s) {
		return nil
	}
	return s.o.Mongo.DB(model.AuthDB).Collection(reportDaysColl)
}

// readySummaries creates the collection of the summaries and indexes its _id lookups. Called
// with sumMu held.
func (c *reportCache) readySummaries(ctx context.Context, s *Service) bool {
	// A lookup by _id scans the table until the index on FerretDB's expression exists
	// (store/idindex.go), and a summary can be megabytes: index before the first read.
	if err := s.createIndexed(ctx, reportDaysColl); err != nil {
		s.log.Warn("billing: cost report summaries", "err", err)
		return false
	}
	c.sumReady = true
	return true
}

// createIndexed creates a collection of maula-auth-db that billing addresses by _id, and
// indexes its _id lookups (store/idindex.go) when it is new; one that exists already was
// indexed by New (or, made since by another instance, will be by the sweeper).
func (s *Service) createIndexed(ctx context.Context, coll string) error {
	db := s.o.Mongo.DB(model.AuthDB)
	err := s.o.Mongo.Write(model.AuthDB, func() error { return db.CreateCollection(ctx, coll) })
	var ce mongo.CommandError
	if errors.As(err, &ce) && ce.Code == 48 { // NamespaceExists
		return nil
	}
	if err != nil {
		return fmt.Errorf("create collection %s: %w", coll, err)
	}
	if _, err := s.o.Mongo.IndexIDs(ctx); err != nil {
		return fmt.Errorf("index _id of %s: %w", coll, err)
	}
	return nil
}

// dropSummaries drops the collection of the summaries (ForgetCostCache), and makes it ready
// again at once, so that no writer recreates it without its index; until the drop succeeds,
// summaries are neither read nor written. Called with sumMu held.
func (c *reportCache) dropSummaries(ctx context.Context, s *Service) bool {
	c.sumDrop = true
	coll := s.o.Mongo.DB(model.AuthDB).Collection(reportDaysColl)
	if err := s.o.Mongo.Write(model.AuthDB, func() error { return coll.Drop(ctx) }); err != nil {
		s.log.Warn("billing: cost report summaries: drop", "err", err)
		return false
	}
	c.sumDrop, c.sumReady = false, false
	c.readySummaries(ctx, s)
	return true
}

// loadView reads the summary of (lvl, day), nil when there is none or it is unusable (logged).
// Whether its fingerprint is current is for the caller to check.
func (c *reportCache) loadView(ctx context.Context, s *Service, coll *mongo.Collection, lvl int, day string, rd *ReadStats) (*dayView, error) {
	id := summaryID(lvl, day)
	raw, err := findRaw(ctx, coll, id, rd)
	if raw == nil || err != nil {
		return nil, err
	}
	ignore := func(why error) (*dayView, error) {
		s.log.Warn("billing: cost report summary ignored", "id", id, "err", why)
		return nil, nil
	}
	var h summaryDoc
	if err := bson.Unmarshal(raw, &h); err != nil {
		return ignore(err)
	}
	if h.ID != id || h.Level != summaryLevel[lvl] || h.Day != day || h.Chunks < 0 || h.Chunks > int64(summaryMaxChunks) ||
		len(h.Sum) != sha256.Size || h.Size < 0 || h.Size > int64(summaryMaxChunks+1)*int64(summaryChunk) {
		return ignore(errors.New("not a summary of this day and level"))
	}
	blob := make([]byte, 0, h.Size)
	blob = append(blob, h.Data...)
	for i := int64(1); i <= h.Chunks; i++ {
		raw, err := findRaw(ctx, coll, fmt.Sprintf("%s|%d", id, i), rd)
		if err != nil {
			return nil, err
		}
		var ch chunkDoc
		if raw == nil {
			return ignore(fmt.Errorf("chunk %d missing", i))
		}
		if err := bson.Unmarshal(raw, &ch); err != nil {
			return ignore(err)
		}
		blob = append(blob, ch.Data...)
	}
	if sum := sha256.Sum256(blob); int64(len(blob)) != h.Size || !bytes.Equal(sum[:], h.Sum) {
		return ignore(errors.New("size or hash differs"))
	}
	v, err := decodeView(lvl, day, blob)
	if err != nil {
		return ignore(err)
	}
	v.saved = true
	return v, nil
}

// findRaw reads one document by _id; nil when there is none.
func findRaw(ctx context.Context, coll *mongo.Collection, id string, rd *ReadStats) (bson.Raw, error) {
	rd.Lookups++
	raw, err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	return raw, err
}

// saveView persists v, a view of closed day at level lvl that agrees with the model level, and
// marks it saved; a failure is logged (the view is not written again until it changes).
func (c *reportCache) saveView(ctx context.Context, s *Service, lvl int, day string, v *dayView) {
	v.saved = true
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	coll := c.summaries(ctx, s)
	if coll == nil {
		return
	}
	if err := writeSummary(ctx, s, coll, lvl, day, v, s.now()); err != nil {
		s.log.Warn("billing: cost report summary not written", "id", summaryID(lvl, day), "err", err)
	}
}

func writeSummary(ctx context.Context, s *Service, coll *mongo.Collection, lvl int, day string, v *dayView, now time.Time) error {
	id := summaryID(lvl, day)
	blob := encodeView(lvl, day, v)
	chunks := (max(len(blob), 1) - 1) / summaryChunk
	if chunks > summaryMaxChunks {
		return fmt.Errorf("%d bytes: too big to persist", len(blob))
	}
	sum := sha256.Sum256(blob)
	replace := func(id string, doc any) error {
		return retryBusy(ctx, func() error {
			return s.o.Mongo.Write(model.AuthDB, func() error {
				_, err := coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}}, doc, options.Replace().SetUpsert(true))
				if isDup(err) { // another instance inserted it first: replace what it wrote
					_, err = coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}}, doc)
				}
				return err
			})
		})
	}
	part := func(i int) []byte { return blob[i*summaryChunk : min((i+1)*summaryChunk, len(blob))] }
	for i := 1; i <= chunks; i++ {
		if err := replace(fmt.Sprintf("%s|%d", id, i), chunkDoc{ID: fmt.Sprintf("%s|%d", id, i), Data: part(i)}); err != nil {
			return err
		}
	}
	h := summaryDoc{ID: id, Level: summaryLevel[lvl], Day: day, Rows: int64(len(v.rows)), Size: int64(len(blob)),
		Chunks: int64(chunks), Sum: sum[:], Data: part(0), At: now}
	if err := replace(id, h); err != nil {
		return err
	}
	// Chunks of an earlier, longer summary of the day are of no use now.
	for i := chunks + 1; i <= summaryMaxChunks; i++ {
		var n int64
		err := s.o.Mongo.Write(model.AuthDB, func() error {
			r, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: fmt.Sprintf("%s|%d", id, i)}})
			if r != nil {
				n = r.DeletedCount
			}
			return err
		})
		if err != nil || n == 0 {
			return err
		}
	}
	return nil
}

// loadModel answers from their summaries the closed days (sorted) that have no model view, and
// returns the others, sorted: a summary is used when the day's model-level documents, read by
// _id now, are those it names. held: a model-level report, which counts them.
func (c *reportCache) loadModel(ctx context.Context, s *Service, days []string, got map[string]*dayView, held bool, now time.Time, rd *ReadStats) ([]string, error) {
	var rest, closed []string
	for _, d := range days {
		if now.Before(s.closes(d)) {
			rest = append(rest, d)
		} else {
			closed = append(closed, d)
		}
	}
	if len(closed) == 0 {
		return days, nil
	}
	coll := c.summaries(ctx, s)
	if coll == nil {
		return days, nil
	}
	found := map[string]*dayView{}
	for _, d := range closed {
		v, err := c.loadView(ctx, s, coll, levelModel, d, rd)
		if err != nil {
			return nil, err
		}
		if v == nil {
			rest = append(rest, d)
			continue
		}
		found[d] = v
		c.mu.Lock()
		for p := range v.fp { // a pair no longer priced is read too
			c.pairs[p] = true
		}
		c.mu.Unlock()
	}
	for _, d := range closed {
		v := found[d]
		if v == nil {
			continue
		}
		fp, err := c.lookupModel(ctx, s, d, rd)
		if err != nil {
			return nil, err
		}
		if !equalFP(fp, v.fp) {
			rest = append(rest, d) // the day changed since: scanned, and its summary replaced
			continue
		}
		v.checked = now
		got[d] = v
		c.put(levelModel, d, v)
		if held {
			rd.StoredDays++
		}
	}
	slices.Sort(rest)
	return rest, nil
}

// loadLevel answers from their summaries the closed days that have no view at level lvl (tool
// or user), given their current model views, and returns the others. Beyond reportMaxRows rows
// in the answer, a summary is summed into agg and not kept, as a scan would be.
func (c *reportCache) loadLevel(ctx context.Context, s *Service, lvl int, days []string, model, out map[string]*dayView, agg *costAgg, rd *ReadStats) ([]string, error) {
	now := s.now()
	var rest []string
	var coll *mongo.Collection
	room := reportMaxRows
	for _, v := range out {
		room -= len(v.rows)
	}
	for _, d := range days {
		if now.Before(s.closes(d)) {
			rest = append(rest, d)
			continue
		}
		if coll == nil {
			if coll = c.summaries(ctx, s); coll == nil {
				return days, nil
			}
		}
		v, err := c.loadView(ctx, s, coll, lvl, d, rd)
		if err != nil {
			return nil, err
		}
		if v == nil || !equalFP(v.fp, model[d].fp) {
			rest = append(rest, d)
			continue
		}
		rd.StoredDays++
		c.learn(lvl, v.rows)
		if len(v.rows) > room {
			for i := range v.rows {
				agg.add(d, &v.rows[i])
			}
			continue
		}
		room -= len(v.rows)
		out[d] = v
		c.put(lvl, d, v)
	}
	return rest, nil
}

// learn adds the pairs and tools of rows to those read by _id, as a scan of them would.
func (c *reportCache) learn(lvl int, rows []viewRow) {
	if lvl != levelTool {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range rows {
		c.pairs[rows[i].pair()] = true
		c.tools[rows[i].tool] = true
	}
}

// saveClosed persists the views of the closed days of views that are not yet persisted and
// agree with their model views (model: nil for the model level itself). The caller holds
// level[lvl].
func (c *reportCache) saveClosed(ctx context.Context, s *Service, lvl int, days []string, views, model map[string]*dayView) {
	now := s.now()
	for _, d := range days {
		v := views[d]
		if v == nil || v.saved || now.Before(s.closes(d)) {
			continue
		}
		if model != nil && (model[d] == nil || !equalFP(v.fp, model[d].fp) || !agrees(lvl, v.rows, v.fp)) {
			continue // not kept: a scan's answer only
		}
		c.saveView(ctx, s, lvl, d, v)
	}
}

func comparePairs(a, b pairKey) int {
	return cmp.Or(strings.Compare(a.provider, b.provider), strings.Compare(a.model, b.model))
}
