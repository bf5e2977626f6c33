package billing

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/maula-ai/maula-chat/model"
	"github.com/maula-ai/maula-chat/store"
)

// Rollup levels. Each settled turn is $inc-ed into one document of each level, so that every
// groupBy of the cost report reads the smallest collection that has its dimensions and never
// scans raw messages:
//
//	levelFull  cost_rollups        day, provider, model, tool, userId  (user × provider/model/tool, per-user usage)
//	levelTool  cost_rollups_tool   day, provider, model, tool          (tool groupings)
//	levelModel cost_rollups_model  day, provider, model                (provider, model, day)
//	levelUser  cost_rollups_user   day, userId                         (user, user × day: top users)
const (
	levelFull = iota
	levelTool
	levelModel
	levelUser
	numLevels
)

var levelColl = [numLevels]string{model.CollCostRollups, "cost_rollups_tool", "cost_rollups_model", "cost_rollups_user"}

// Rollup is one document of a rollup level: integer micro-dollars and token counts.
type Rollup struct {
	Day        string        `bson:"day" json:"day"`
	Provider   string        `bson:"provider,omitempty" json:"provider,omitempty"`
	Model      string        `bson:"model,omitempty" json:"model,omitempty"`
	Tool       string        `bson:"tool,omitempty" json:"tool,omitempty"`
	UserID     bson.ObjectID `bson:"userId,omitempty" json:"userId,omitempty"`
	Requests   int64         `bson:"requests" json:"requests"`
	Messages   int64         `bson:"messages" json:"messages"`
	Input      int64         `bson:"input" json:"input"`
	Output     int64         `bson:"output" json:"output"`
	CacheRead  int64         `bson:"cacheRead" json:"cacheRead"`
	CacheWrite int64         `bson:"cacheWrite" json:"cacheWrite"`
	Reasoning  int64         `bson:"reasoning" json:"reasoning"`
	CostMicros int64         `bson:"costMicros" json:"costMicros"`
}

// rollupKey is the filter of e's document at level l.
func rollupKey(l int, e *Entry) bson.D {
	return levelKeyOf(l, e.Day, e.Provider, e.Model, e.Tool, e.UserID)
}

// levelKeyOf is the key fields of a level's document: the filter that finds it, and (joined by
// rollupID) its _id. Every writer and reader of rollup _ids goes through it.
func levelKeyOf(l int, day, provider, model, tool string, user bson.ObjectID) bson.D {
	switch l {
	case levelFull:
		return bson.D{{Key: "day", Value: day}, {Key: "provider", Value: provider}, {Key: "model", Value: model}, {Key: "tool", Value: tool}, {Key: "userId", Value: user}}
	case levelTool:
		return bson.D{{Key: "day", Value: day}, {Key: "provider", Value: provider}, {Key: "model", Value: model}, {Key: "tool", Value: tool}}
	case levelModel:
		return bson.D{{Key: "day", Value: day}, {Key: "provider", Value: provider}, {Key: "model", Value: model}}
	default:
		return bson.D{{Key: "day", Value: day}, {Key: "userId", Value: user}}
	}
}

func rollupInc(e *Entry) bson.D {
	var msgs int64
	if e.Output {
		msgs = 1
	}
	u := e.Usage
	if u == nil {
		u = &UsageDoc{}
	}
	return bson.D{{Key: "requests", Value: int64(1)}, {Key: "messages", Value: msgs},
		{Key: "input", Value: u.Input}, {Key: "output", Value: u.Output}, {Key: "cacheRead", Value: u.CacheRead},
		{Key: "cacheWrite", Value: u.CacheWrite}, {Key: "reasoning", Value: u.Reasoning}, {Key: "costMicros", Value: e.CostMicros}}
}

// upsertByID applies update (a $inc, possibly with a $set) to the document whose key fields
// are key, addressed by an _id derived from them (store.UpsertByID): FerretDB answers only
// {_id: v} filters without scanning the whole collection, which for rollups grows every day.
// Two first writers of the same key race on the unique index; the loser's retry finds the
// document.
func upsertByID(ctx context.Context, ms *store.Store, c *mongo.Collection, id any, key, update bson.D) error {
	for attempt := 0; ; attempt++ {
		// Busy means not committed: retrying cannot count twice.
		err := retryBusy(ctx, func() error {
			return ms.Write(c.Database().Name(), func() error { return store.UpsertByID(ctx, c, id, key, update).Err() })
		})
		if err == nil || !isDup(err) || attempt == 3 {
			if err != nil {
				return fmt.Errorf("billing: upsert %s: %w", c.Name(), err)
			}
			return nil
		}
	}
}

// rollupID is the _id of a rollup document: its key fields joined by '|', a user as hex.
func rollupID(key bson.D) string {
	var id strings.Builder
	for i, f := range key {
		if i > 0 {
			id.WriteByte('|')
		}
		switch v := f.Value.(type) {
		case bson.ObjectID:
			id.WriteString(v.Hex())
		case string:
			id.WriteString(v)
		default:
			fmt.Fprint(&id, v)
		}
	}
	return id.String()
}

// RollupID is the _id billing gives the rollup document whose key fields are key (in the
// order of the level's key: day, provider, model, tool, userId, those the level has): for a
// tool that writes such documents directly, as the admin benchmark's seeder does.
func RollupID(key bson.D) string { return rollupID(key) }

// record writes a settled turn into the four rollup levels, the tool's analytics document of
// the day and the realtime counters. Turns settled concurrently are written together
// (groupCommit): their increments are merged per document, so a batch costs one write per
// distinct document instead of five writes per turn, all under the one rollup lock that the
// embedded server's non-atomic $inc needs.
func (s *Service) record(ctx context.Context, e *Entry) error {
	err := s.rollupQ.do(e, func(batch []*Entry) error {
		// The batch carries other callers' turns: the leader's cancellation must not fail them.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		// $inc upserts are read-modify-write on FerretDB: one writer at a time across instances.
		return s.withLock(fctx, store.RollupsLock, func() error { return s.recordDocs(fctx, batch) })
	})
	if err != nil {
		return err
	}
	s.recordCounters(ctx, e)
	return nil
}

// docInc is one document's merged increments in a batch.
type docInc struct {
	coll *mongo.Collection
	id   any
	key  bson.D // the key fields it is created with
	inc  bson.D // int64 increments in first-seen order
}

// docBatch merges increments per document, in the order documents were first touched.
type docBatch struct {
	byID map[string]*docInc
	list []*docInc
}

func (b *docBatch) add(coll *mongo.Collection, id any, key, inc bson.D) {
	k := coll.Database().Name() + "." + coll.Name() + "/" + fmt.Sprint(id)
	d := b.byID[k]
	if d == nil {
		d = &docInc{coll: coll, id: id, key: key}
		b.byID[k] = d
		b.list = append(b.list, d)
	}
next:
	for _, f := range inc {
		for i := range d.inc {
			if d.inc[i].Key == f.Key {
				d.inc[i].Value = d.inc[i].Value.(int64) + f.Value.(int64)
				continue next
			}
		}
		d.inc = append(d.inc, f)
	}
}

func (s *Service) recordDocs(ctx context.Context, batch []*Entry) error {
	return s.writeDocs(ctx, s.rollupBatch(batch), nil)
}

// rollupBatch merges the increments of settled turns per document: the four rollup levels
// and the tool's analytics document of the user's day.
func (s *Service) rollupBatch(batch []*Entry) *docBatch {
	b := &docBatch{byID: map[string]*docInc{}}
	for _, e := range batch {
		for l := range numLevels {
			key := rollupKey(l, e)
			inc := rollupInc(e)
			if l == levelUser { // and split by provider, model and tool (userusage.go)
				inc = append(inc, byInc(e)...)
			}
			b.add(s.rollups[l], rollupID(key), key, inc)
		}
		if e.Tool != "" {
			day := midnight(e.At)
			b.add(s.o.Mongo.DB(e.Tool+"-db").Collection(model.CollAnalytics), store.AnalyticsID(e.UserID, day),
				bson.D{{Key: "userId", Value: e.UserID}, {Key: "date", Value: day}}, analyticsInc(e))
		}
	}
	return b
}

// writeDocs writes a batch's merged increments, one upsert per document. mark, when set, is
// the journal's marker, $set in the same update (journal.go); a document whose marker says
// it already has them is left alone. The tools' analytics documents are written beside the
// rollups: another database is another SQLite file, with a writer of its own.
func (s *Service) writeDocs(ctx context.Context, b *docBatch, mark *journalMark) error {
	var auth, tools []*docInc
	for _, d := range b.list {
		if d.coll.Database().Name() == model.AuthDB {
			auth = append(auth, d)
		} else {
			tools = append(tools, d)
		}
	}
	var toolErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		toolErr = s.writeDocList(ctx, tools, mark)
	}()
	err := s.writeDocList(ctx, auth, mark)
	<-done
	return errors.Join(err, toolErr)
}

// writeDocList writes docs one after the other: the embedded server answers concurrent
// writes to one SQLite file with SQLITE_BUSY, and the retries cost far more than the writes.
// A journal's batch (mark set, not a replay) sends each collection's upserts in one command.
func (s *Service) writeDocList(ctx context.Context, docs []*docInc, mark *journalMark) error {
	if mark != nil && !mark.check {
		return s.writeDocsBulk(ctx, docs, mark)
	}
	for _, d := range docs {
		update := bson.D{{Key: "$inc", Value: docIncWithUSD(d.inc)}}
		if mark != nil {
			if done, err := mark.has(ctx, d.coll, d.id, d.key); err != nil {
				return err
			} else if done {
				continue
			}
			update = append(update, mark.set())
			if err := s.testJournalFault("rollup"); err != nil {
				return err
			}
		}
		if err := upsertByID(ctx, s.o.Mongo, d.coll, d.id, d.key, update); err != nil {
			return err
		}
	}
	return nil
}

// writeDocsBulk writes a journal batch's documents, one unordered bulk write per collection.
// A statement refused as a duplicate (a document written before its _id was derived, see
// store.UpsertByID) is written again alone, by its key fields. Any other failure is returned:
// some statements may be written, and the journal's replay, which checks every document's
// marker, completes the rest exactly.
func (s *Service) writeDocsBulk(ctx context.Context, docs []*docInc, mark *journalMark) error {
	var order []*mongo.Collection
	byColl := map[*mongo.Collection][]*docInc{}
	for _, d := range docs {
		if _, ok := byColl[d.coll]; !ok {
			order = append(order, d.coll)
		}
		byColl[d.coll] = append(byColl[d.coll], d)
	}
	for _, c := range order {
		list := byColl[c]
		models := make([]mongo.WriteModel, 0, len(list))
		var fault error
		for _, d := range list {
			if fault = s.testJournalFault("rollup"); fault != nil {
				break // a test's failure partway: what came before is written
			}
			update := bson.D{{Key: "$inc", Value: docIncWithUSD(d.inc)}, mark.set(), {Key: "$setOnInsert", Value: d.key}}
			models = append(models, mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "_id", Value: d.id}}).SetUpdate(update).SetUpsert(true))
		}
		var err error
		if len(models) > 0 {
			err = s.o.Mongo.Write(c.Database().Name(), func() error {
				_, err := c.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
				return err
			})
		}
		var bwe mongo.BulkWriteException
		if errors.As(err, &bwe) && bwe.WriteConcernError == nil {
			err = nil
			for _, we := range bwe.WriteErrors {
				if !mongo.IsDuplicateKeyError(we) || we.Index >= len(list) {
					err = errors.Join(err, we)
					continue
				}
				d := list[we.Index]
				err = errors.Join(err, upsertByID(ctx, s.o.Mongo, d.coll, d.id, d.key,
					bson.D{{Key: "$inc", Value: docIncWithUSD(d.inc)}, mark.set()}))
			}
		}
		if err = errors.Join(err, fault); err != nil {
			return fmt.Errorf("billing: upsert %s: %w", c.Name(), err)
		}
	}
	return nil
}

// docIncWithUSD is a document's increments with the analytics' aiUsage.totalCost, the seed's
// USD figure, derived from the exact micro-dollars.
func docIncWithUSD(inc bson.D) bson.D {
	for _, f := range inc {
		if f.Key == "aiUsage.totalCostMicros" {
			return append(inc[:len(inc):len(inc)], bson.E{Key: "aiUsage.totalCost", Value: float64(f.Value.(int64)) / 1e6})
		}
	}
	return inc
}

// analyticsInc is what a settled turn adds to the seed's Analytics document of the user's day
// in the tool's database: metrics.totalRequests/successfulRequests/failedRequests and aiUsage
// (aiUsage.totalCost, in USD, is derived from totalCostMicros when written).
func analyticsInc(e *Entry) bson.D {
	u := e.Usage
	if u == nil {
		u = &UsageDoc{}
	}
	inc := bson.D{{Key: "metrics.totalRequests", Value: int64(1)}}
	if e.Status == StatusFailed {
		inc = append(inc, bson.E{Key: "metrics.failedRequests", Value: int64(1)})
	} else {
		inc = append(inc, bson.E{Key: "metrics.successfulRequests", Value: int64(1)})
	}
	if e.Output {
		inc = append(inc, bson.E{Key: "aiUsage.totalMessages", Value: int64(1)},
			bson.E{Key: "aiUsage.providerBreakdown." + e.Provider, Value: int64(1)})
	}
	return append(inc,
		bson.E{Key: "aiUsage.totalTokens", Value: u.Input + u.Output + u.CacheRead + u.CacheWrite},
		bson.E{Key: "aiUsage.totalCostMicros", Value: e.CostMicros})
}

// counterTTL keeps a day's realtime counters a little past the day.
const counterTTL = 48 * time.Hour

// recordCounters bumps the realtime analytics:{userId}:{date} hash. Counters are a cache of
// the day (the analytics documents are the record), so a failure is logged, not returned.
func (s *Service) recordCounters(ctx context.Context, e *Entry) {
	if s.o.KV == nil {
		return
	}
	key := "analytics:" + e.UserID.Hex() + ":" + e.Day
	u := e.Usage
	if u == nil {
		u = &UsageDoc{}
	}
	fields := []struct {
		f string
		n int64
	}{{"totalRequests", 1}, {"aiTokens", u.Input + u.Output + u.CacheRead + u.CacheWrite}, {"aiCostMicros", e.CostMicros}}
	if e.Output {
		fields = append(fields, struct {
			f string
			n int64
		}{"aiMessages", 1})
	}
	for _, f := range fields {
		if _, err := s.o.KV.HIncrBy(ctx, key, f.f, f.n, counterTTL); err != nil {
			s.log.Warn("billing: realtime counter", "key", key, "err", err)
			return
		}
	}
}
