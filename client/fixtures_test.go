package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/protocol"
)

// The shared protocol fixtures (../testdata/protocol, also read by the hub's and the JS SDK's
// tests): what the SDK sends must equal the client fixtures, and the server fixtures must
// come out as the SDK's results and typed errors.

func fixture(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "protocol", rel))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(b)
}

func sameJSON(t *testing.T, name string, got, want []byte) {
	t.Helper()
	var a, b any
	if err := json.Unmarshal(got, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(want, &b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Errorf("%s:\n sdk sends %s\n fixture   %s", name, got, want)
	}
}

func TestFixturesClientFrames(t *testing.T) {
	temp := 0.3
	before, _ := time.Parse(time.RFC3339, "2026-11-27T10:00:00Z")
	page := Page{Before: before, Limit: 50}
	for name, got := range map[string][]byte{
		"chat.send": sendFrame("r1", ChatRequest{Tool: "ipintel", SessionID: "65f0c2a1b2c3d4e5f6a7b8c9", Provider: "claude",
			Model: "claude-sonnet-4-5", Message: "Why is 203.0.113.7 high risk?", MaxTokens: 1024, Temperature: &temp}),
		"chat.cancel":   cancelFrame("r1"),
		"chat.resume":   resumeFrame("r1", 17),
		"history.get":   historyFrame("h1", "ipintel", "65f0c2a1b2c3d4e5f6a7b8c9", page),
		"sessions.list": sessionsFrame("s1", "ipintel", page),
		"ping":          pingFrame("p1"),
	} {
		sameJSON(t, name, got, fixture(t, "client/"+name+".json"))
	}
}

func decodeFixture(t *testing.T, typ string) *frame {
	t.Helper()
	f := new(frame)
	if err := json.Unmarshal(fixture(t, "server/"+typ+".json"), f); err != nil {
		t.Fatal(err)
	}
	return f
}

// newTestStream is a Stream on a Client with no connection, fed frames by hand.
func newTestStream(id string) *Stream {
	c := &Client{streams: map[string]*Stream{}, calls: map[string]*call{}}
	c.o.defaults()
	s := &Stream{c: c, id: id, ctx: t0ctx, wake: make(chan struct{}, 1), finished: make(chan struct{})}
	c.streams[id] = s
	return s
}

func TestFixturesServerFramesDone(t *testing.T) {
	s := newTestStream("r1")
	for _, typ := range []string{"chat.started", "chat.delta", "chat.usage", "chat.done"} {
		s.handle(decodeFixture(t, typ), nil)
	}
	if text, ok := s.Next(); !ok || text != "The address " {
		t.Fatalf("delta %q %v", text, ok)
	}
	if p := s.Progress(); p.Usage.Output != 40 || !p.Usage.Estimated || p.CreditsLeft != 99 {
		t.Fatalf("progress %+v", p)
	}
	res, err := s.Result()
	if err != nil {
		t.Fatal(err)
	}
	want := Result{ID: "r1", SessionID: "65f0c2a1b2c3d4e5f6a7b8c9", MessageID: "65f0c3a1b2c3d4e5f6a7b8c9", Provider: "claude",
		Model: "claude-sonnet-4-5", FinishReason: "stop", Usage: protocol.Usage{Input: 812, Output: 301, CacheRead: 640},
		CostUSD: 0.007113, CostMicros: 7113, CreditsLeft: 99, Seq: 64}
	if *res != want {
		t.Fatalf("result\n got %+v\nwant %+v", *res, want)
	}
}

func TestFixturesServerFramesCancelledAndError(t *testing.T) {
	s := newTestStream("r1")
	s.handle(decodeFixture(t, "chat.cancelled"), nil)
	res, err := s.Result()
	if !errors.Is(err, ErrCancelled) || !res.Cancelled || res.CostMicros != 2616 || res.Seq != 12 || !res.Usage.Estimated {
		t.Fatalf("cancelled: %+v %v", res, err)
	}
	s = newTestStream("r1")
	s.handle(decodeFixture(t, "chat.error"), nil)
	_, err = s.Result()
	var rl *RateLimitError
	if !errors.As(err, &rl) || rl.RetryAfter != 12*time.Second {
		t.Fatalf("error fixture: %v", err)
	}
	// Every code maps to its documented error type.
	for code, check := range map[string]func(error) bool{
		protocol.CodeInsufficientCredits: func(err error) bool { return errors.Is(err, ErrInsufficientCredits) },
		protocol.CodeUnauthorized:        func(err error) bool { return errors.Is(err, ErrUnauthorized) },
		protocol.CodeForbidden:           func(err error) bool { return errors.Is(err, ErrForbidden) },
		protocol.CodeProviderError: func(err error) bool {
			var pe *ProviderError
			return errors.As(err, &pe) && pe.Retryable && pe.RetryAfter == 12*time.Second
		},
		protocol.CodeBadRequest: func(err error) bool {
			var pe *ProtocolError
			return errors.As(err, &pe) && pe.Code == protocol.CodeBadRequest && !errors.Is(err, ErrInsufficientCredits)
		},
	} {
		f := decodeFixture(t, "chat.error")
		f.Code = code
		if err := errorFromFrame(f); !check(err) {
			t.Errorf("code %s became %T %v", code, err, err)
		}
	}
}

func TestFixturesServerFramesHistory(t *testing.T) {
	h := decodeFixture(t, "history")
	if len(h.Messages) != 2 || h.Messages[1].Usage == nil || h.Messages[1].CostMicros != 7113 || h.HasMore {
		t.Fatalf("history %+v", h)
	}
	s := decodeFixture(t, "sessions")
	if len(s.Sessions) != 1 || s.Sessions[0].Messages != 4 {
		t.Fatalf("sessions %+v", s)
	}
}

var t0ctx = context.Background()
