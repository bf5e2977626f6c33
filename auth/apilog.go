package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/maula-ai/maula-chat/model"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// toolLog is one queued api_logs document and the tool database it goes to.
type toolLog struct {
	db  string
	doc model.APILog
}

// redacted replaces the value of every sensitive header and query parameter in api_logs.
const redacted = "[REDACTED]"

// sensitiveHeaders are never logged in clear (canonical form).
var sensitiveHeaders = map[string]bool{
	"Authorization": true, "X-Api-Key": true, "Cookie": true, "Set-Cookie": true,
	"Proxy-Authorization": true, "X-Auth-Token": true,
}

// sensitiveParams are query parameters never logged in clear.
var sensitiveParams = map[string]bool{
	"token": true, "key": true, "api_key": true, "apikey": true, "password": true, "code": true, "secret": true,
}

// LogAPIRequest queues an api_logs document for a request an API key authenticated; the flush
// loop writes it to the key's tool database in a batch. It never blocks: when the queue is
// full the entry is dropped and counted.
func (s *Service) LogAPIRequest(p *Principal, r *http.Request, status int, elapsed time.Duration) {
	if !p.ViaAPIKey() {
		return
	}
	t, ok := s.o.Tools.Get(p.Tool)
	if !ok {
		return
	}
	doc := model.APILog{
		ID: bson.NewObjectID(), UserID: p.UserID, APIKeyID: p.APIKeyID,
		Endpoint: r.URL.Path, Method: r.Method,
		Request:   model.APILogRequest{Headers: redactHeaders(r.Header), Params: redactParams(r)},
		Response:  model.APILogResponse{StatusCode: status, ProcessingTime: float64(elapsed.Microseconds()) / 1000},
		IPAddress: clientIP(r), UserAgent: r.UserAgent(), Timestamp: s.now().UTC(),
	}
	select {
	case s.logs <- toolLog{db: t.Database(), doc: doc}:
	default:
		s.droppedLogs.Add(1)
	}
}

// redactHeaders keeps the first value of each header, with secrets replaced. A value that looks
// like an API key is redacted whatever its header's name.
func redactHeaders(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		if len(v) == 0 {
			continue
		}
		val := v[0]
		if sensitiveHeaders[http.CanonicalHeaderKey(k)] || strings.Contains(val, KeyPrefix) {
			val = redacted
		}
		if len(val) > 512 {
			val = val[:512]
		}
		out[k] = val
	}
	return out
}

func redactParams(r *http.Request) map[string]string {
	q := r.URL.Query()
	if len(q) == 0 {
		return nil
	}
	out := make(map[string]string, len(q))
	for k, v := range q {
		val := ""
		if len(v) > 0 {
			val = v[0]
		}
		if sensitiveParams[strings.ToLower(k)] || strings.Contains(val, KeyPrefix) {
			val = redacted
		}
		out[k] = val
	}
	return out
}

// flushLogs drains the queue and inserts each tool's share with one InsertMany.
func (s *Service) flushLogs(ctx context.Context) error {
	byDB := map[string][]any{}
	n := 0
	for n < 10000 {
		select {
		case l := <-s.logs:
			byDB[l.db] = append(byDB[l.db], l.doc)
			n++
			continue
		default:
		}
		break
	}
	if d := s.droppedLogs.Swap(0); d > 0 {
		s.log.Warn("API logs dropped: queue full", "count", d)
	}
	var errs []error
	for db, docs := range byDB {
		if _, err := s.o.Mongo.DB(db).Collection(model.CollAPILogs).InsertMany(ctx, docs, options.InsertMany().SetOrdered(false)); err != nil {
			errs = append(errs, fmt.Errorf("insert %d api_logs into %s: %w", len(docs), db, err))
		}
	}
	return errors.Join(errs...)
}
