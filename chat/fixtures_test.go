package chat

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/maula-ai/maula-chat/protocol"
)

// The protocol fixtures in ../testdata/protocol are shared with the Go and JS SDKs' tests;
// here they are held to the protocol types and replayed against the hub.

const fixtureDir = "../testdata/protocol"

// serverTypes maps each server frame type to its protocol struct.
var serverTypes = map[string]func() any{
	protocol.TypeAuthOK:        func() any { return new(protocol.Pong) }, // {"type"} only
	protocol.TypeChatStarted:   func() any { return new(protocol.Started) },
	protocol.TypeChatDelta:     func() any { return new(protocol.Delta) },
	protocol.TypeChatUsage:     func() any { return new(protocol.UsageFrame) },
	protocol.TypeChatDone:      func() any { return new(protocol.Done) },
	protocol.TypeChatCancelled: func() any { return new(protocol.Cancelled) },
	protocol.TypeChatError:     func() any { return new(protocol.Error) },
	protocol.TypeHistory:       func() any { return new(protocol.History) },
	protocol.TypeSessions:      func() any { return new(protocol.Sessions) },
	protocol.TypePong:          func() any { return new(protocol.Pong) },
}

var clientTypes = []string{protocol.TypeAuth, protocol.TypeChatSend, protocol.TypeChatCancel, protocol.TypeChatResume,
	protocol.TypeHistoryGet, protocol.TypeSessionsList, protocol.TypePing}

func readFixture(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir, rel))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(b)
}

// strictRoundTrip decodes data into v with unknown fields refused and checks that encoding v
// gives the same JSON value back: the fixture has no field the type lacks, and the type
// drops nothing of it.
func strictRoundTrip(t *testing.T, name string, data []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s does not decode strictly into %T: %v", name, v, err)
	}
	again, _ := json.Marshal(v)
	var a, b any
	_ = json.Unmarshal(data, &a)
	_ = json.Unmarshal(again, &b)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("%s changes through %T:\n fixture %s\n encoded %s", name, v, data, again)
	}
}

func TestFixturesMatchProtocolTypes(t *testing.T) {
	for _, typ := range clientTypes {
		data := readFixture(t, "client/"+typ+".json")
		var f protocol.ClientFrame
		strictRoundTrip(t, "client/"+typ, data, &f)
		if f.Type != typ {
			t.Errorf("client/%s.json has type %q", typ, f.Type)
		}
	}
	for typ, mk := range serverTypes {
		data := readFixture(t, "server/"+typ+".json")
		strictRoundTrip(t, "server/"+typ, data, mk())
		var head struct{ Type string }
		_ = json.Unmarshal(data, &head)
		if head.Type != typ {
			t.Errorf("server/%s.json has type %q", typ, head.Type)
		}
	}
	// Every fixture file is one of the known types: a new file means a new type here too.
	for _, dir := range []string{"client", "server"} {
		files, _ := filepath.Glob(filepath.Join(fixtureDir, dir, "*.json"))
		for _, f := range files {
			typ := strings.TrimSuffix(filepath.Base(f), ".json")
			_, isServer := serverTypes[typ]
			if (dir == "server" && !isServer) || (dir == "client" && !contains(clientTypes, typ)) {
				t.Errorf("%s/%s: unknown frame type", dir, typ)
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

type invalidCase struct {
	Name  string `json:"name"`
	Frame string `json:"frame"`
	Code  string `json:"code"`
}

// Every invalid frame gets its code, its id echoed, and the connection stays up.
func TestFixturesInvalidFrames(t *testing.T) {
	var file struct {
		Cases []invalidCase `json:"cases"`
	}
	if err := json.Unmarshal(readFixture(t, "invalid.json"), &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Cases) == 0 {
		t.Fatal("no cases in invalid.json")
	}
	r := newRig(t, rigConfig{mock: paced})
	_, tok := newUser()
	c := r.dial(t, tok)
	for _, tc := range file.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			c.mu.Lock()
			seen := len(c.all)
			c.mu.Unlock()
			if err := c.sendRaw([]byte(tc.Frame)); err != nil {
				t.Fatal(err)
			}
			var head struct{ ID string }
			_ = json.Unmarshal([]byte(tc.Frame), &head)
			// Wait for the next error frame after the ones already seen.
			var got map[string]any
			deadline := time.After(5 * time.Second)
			for got == nil {
				c.mu.Lock()
				for _, f := range c.all[seen:] {
					if f["type"] == protocol.TypeChatError {
						got = f
						break
					}
				}
				c.mu.Unlock()
				if got != nil {
					break
				}
				select {
				case <-c.wake:
				case <-c.done:
					t.Fatalf("%s: the connection closed", tc.Name)
				case <-deadline:
					t.Fatalf("%s: no chat.error", tc.Name)
				}
			}
			if got["code"] != tc.Code {
				t.Errorf("%s: code %v, want %s (%v)", tc.Name, got["code"], tc.Code, got)
			}
			if id, _ := got["id"].(string); id != head.ID {
				t.Errorf("%s: id %q echoed, want %q", tc.Name, id, head.ID)
			}
			assertKeysWithin(t, got)
		})
	}
	c.send(protocol.ClientFrame{Type: protocol.TypePing, ID: "still-up"})
	c.waitFor("still-up", 5*time.Second, "pong", func(fs []map[string]any) bool { return len(fs) > 0 })
}

// fixtureKeys is the set of keys of server/<type>.json (and of its nested objects, as
// "usage.input", "messages.role", ...).
func fixtureKeys(t *testing.T, typ string) map[string]bool {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(readFixture(t, "server/"+typ+".json"), &m); err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	collectKeys("", m, keys)
	return keys
}

func collectKeys(prefix string, v any, into map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, sub := range x {
			into[prefix+k] = true
			collectKeys(prefix+k+".", sub, into)
		}
	case []any:
		for _, sub := range x {
			collectKeys(prefix, sub, into)
		}
	}
}

// assertKeysWithin fails when a frame from the hub has a key its fixture lacks: the fixture
// (and so the SDKs' tests) would not know the field.
func assertKeysWithin(t *testing.T, f map[string]any) {
	t.Helper()
	typ, _ := f["type"].(string)
	if _, ok := serverTypes[typ]; !ok {
		t.Errorf("the hub sent a frame type with no fixture: %v", f)
		return
	}
	want := fixtureKeys(t, typ)
	got := map[string]bool{}
	collectKeys("", f, got)
	var extra []string
	for k := range got {
		if !want[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	if len(extra) > 0 {
		t.Errorf("%s from the hub has fields missing from testdata/protocol/server/%s.json: %v", typ, typ, extra)
	}
}

// The client fixtures replayed against the hub: each is accepted, and every frame the hub
// answers with has the shape of its server fixture.
func TestFixturesReplayed(t *testing.T) {
	r := newRig(t, rigConfig{mock: paced})
	_, tok := newUser()

	// auth: a socket with no credentials authenticates with the first frame.
	ws, err := dialWS(r.srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	a := startClient(t, ws)
	var auth map[string]any
	_ = json.Unmarshal(readFixture(t, "client/auth.json"), &auth)
	auth["token"] = tok // the fixture's token is a placeholder
	a.send(auth)
	fs := a.waitFor("", 5*time.Second, "auth.ok", func(fs []map[string]any) bool { return len(fs) > 0 })
	if fs[0]["type"] != protocol.TypeAuthOK {
		t.Fatalf("auth answered %v", fs[0])
	}
	assertKeysWithin(t, fs[0])

	c := r.dial(t, tok)
	raw := func(rel string, edit func(map[string]any)) {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal(readFixture(t, rel), &m); err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			edit(m)
		}
		c.send(m)
	}
	raw("client/ping.json", nil)
	fs = c.waitFor("p1", 5*time.Second, "pong", func(fs []map[string]any) bool { return len(fs) > 0 })
	assertKeysWithin(t, fs[0])

	raw("client/chat.send.json", nil)
	fs, end := c.terminal("r1")
	if end["type"] != protocol.TypeChatDone {
		t.Fatalf("chat.send fixture ended with %v", end)
	}
	for _, f := range fs {
		assertKeysWithin(t, f)
	}
	// resume after the end replays the rest: deltas after 17 and chat.done.
	c.mu.Lock()
	before := len(c.byID["r1"])
	c.mu.Unlock()
	raw("client/chat.resume.json", nil)
	fs = c.waitFor("r1", 5*time.Second, "the replay", func(fs []map[string]any) bool { return len(fs) > before && hasTerminal(fs) })
	replay := fs[before:]
	if replay[0]["type"] != protocol.TypeChatDelta || replay[0]["seq"].(float64) != 18 {
		t.Fatalf("resume after 17 replayed %v first", replay[0])
	}

	// history.get and sessions.list of that conversation ("before" dropped: it is a fixed
	// date in the fixture).
	raw("client/history.get.json", func(m map[string]any) { delete(m, "before") })
	fs = c.waitFor("h1", 10*time.Second, "history", func(fs []map[string]any) bool { return len(fs) > 0 })
	if fs[0]["type"] != protocol.TypeHistory || len(fs[0]["messages"].([]any)) != 2 {
		t.Fatalf("history.get answered %v", fs[0])
	}
	assertKeysWithin(t, fs[0])
	raw("client/sessions.list.json", func(m map[string]any) { delete(m, "before") })
	fs = c.waitFor("s1", 10*time.Second, "sessions", func(fs []map[string]any) bool { return len(fs) > 0 })
	if fs[0]["type"] != protocol.TypeSessions || len(fs[0]["sessions"].([]any)) == 0 {
		t.Fatalf("sessions.list answered %v", fs[0])
	}
	assertKeysWithin(t, fs[0])

	// chat.cancel mid-reply.
	raw("client/chat.send.json", func(m map[string]any) { m["id"] = "r2" })
	c.waitFor("r2", 10*time.Second, "a delta", func(fs []map[string]any) bool {
		return len(fs) > 1 && fs[1]["type"] == protocol.TypeChatDelta
	})
	raw("client/chat.cancel.json", func(m map[string]any) { m["id"] = "r2" })
	_, end = c.terminal("r2")
	if end["type"] != protocol.TypeChatCancelled {
		t.Fatalf("chat.cancel fixture ended the reply with %v", end)
	}
	assertKeysWithin(t, end)
}
