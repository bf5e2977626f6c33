package httpx

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

// testCaller is scoped to one tool, or to every tool when scope is "".
type testCaller struct{ scope string }

func TestToolRoute(t *testing.T) {
	toolIDs := map[string]int{"ipintel": 1, "dnsx": 2}
	identify := func(r *http.Request) (testCaller, bool) {
		s, ok := r.Header["X-Caller"]
		if !ok {
			return testCaller{}, false
		}
		return testCaller{scope: s[0]}, true
	}
	lookup := func(name string) (int, bool) { id, ok := toolIDs[name]; return id, ok }
	scoped := func(c testCaller, tool string) bool { return c.scope == "" || c.scope == tool }
	custom := ToolRoute[testCaller, int]{Identify: identify, Tool: lookup, Allowed: scoped,
		NoCaller:    Errorf(http.StatusUnauthorized, "unauthorized", "sign in first"),
		UnknownTool: func(string) *APIError { return Errorf(http.StatusNotFound, "not_found", "unknown tool") },
		Forbidden:   Errorf(http.StatusForbidden, "wrong_tool", "not yours"),
		Fail: func(w http.ResponseWriter, r *http.Request, err error) {
			WriteError(w, http.StatusTeapot, "custom", err.Error())
		}}
	plain := ToolRoute[testCaller, int]{Identify: identify, Tool: lookup}
	withScope := plain
	withScope.Allowed = scoped

	cases := []struct {
		name     string
		route    ToolRoute[testCaller, int]
		caller   *string // nil: no caller
		tool     string
		fails    error // what the handler returns
		status   int
		code     string
		message  string
		wantCall bool // the handler ran
	}{
		{name: "no caller", route: plain, tool: "ipintel",
			status: 401, code: "unauthorized", message: "authentication required"},
		{name: "no caller, custom", route: custom, tool: "ipintel",
			status: 401, code: "unauthorized", message: "sign in first"},
		{name: "no caller before unknown tool", route: plain, tool: "nope",
			status: 401, code: "unauthorized", message: "authentication required"},
		{name: "a session", route: custom, caller: ptr(""), tool: "dnsx",
			status: 200, wantCall: true},
		{name: "unknown tool", route: plain, caller: ptr(""), tool: "nope",
			status: 404, code: "unknown_tool", message: "no tool nope"},
		{name: "unknown tool, custom", route: custom, caller: ptr(""), tool: "nope",
			status: 404, code: "not_found", message: "unknown tool"},
		{name: "unknown tool before scope", route: withScope, caller: ptr("dnsx"), tool: "nope",
			status: 404, code: "unknown_tool", message: "no tool nope"},
		{name: "no scope check: middleware did it", route: plain, caller: ptr("dnsx"), tool: "ipintel",
			status: 200, wantCall: true},
		{name: "another tool's key", route: withScope, caller: ptr("dnsx"), tool: "ipintel",
			status: 403, code: "forbidden", message: "this API key is for another tool"},
		{name: "another tool's key, custom", route: custom, caller: ptr("dnsx"), tool: "ipintel",
			status: 403, code: "wrong_tool", message: "not yours"},
		{name: "the tool's key", route: withScope, caller: ptr("ipintel"), tool: "ipintel",
			status: 200, wantCall: true},
		{name: "handler's API error", route: plain, caller: ptr(""), tool: "ipintel", fails: Errorf(409, "conflict", "taken"),
			status: 409, code: "conflict", message: "taken", wantCall: true},
		{name: "handler's other error", route: plain, caller: ptr(""), tool: "ipintel", fails: errors.New("disk on fire"),
			status: 500, code: "internal", message: "internal error; the request id is ", wantCall: true},
		{name: "handler's error, custom Fail", route: custom, caller: ptr(""), tool: "ipintel", fails: errors.New("boom"),
			status: http.StatusTeapot, code: "custom", message: "boom", wantCall: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var called bool
			var got struct {
				c    testCaller
				tool int
			}
			mux := http.NewServeMux()
			mux.Handle("GET /api/{tool}/things", tc.route.Handle(func(w http.ResponseWriter, r *http.Request, c testCaller, tool int) error {
				called = true
				got.c, got.tool = c, tool
				if tc.fails != nil {
					return tc.fails
				}
				w.WriteHeader(http.StatusOK)
				return nil
			}))
			req := httptest.NewRequest("GET", "/api/"+tc.tool+"/things", nil)
			if tc.caller != nil {
				req.Header["X-Caller"] = []string{*tc.caller}
			}
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, req)

			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tc.status, rec.Body)
			}
			if called != tc.wantCall {
				t.Fatalf("handler ran: %v, want %v", called, tc.wantCall)
			}
			if called && (got.c.scope != *tc.caller || got.tool != toolIDs[tc.tool]) {
				t.Fatalf("handler got caller %+v and tool %d", got.c, got.tool)
			}
			if tc.code == "" {
				return
			}
			var body ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", rec.Body, err)
			}
			if body.Error.Code != tc.code || body.Error.Message != tc.message {
				t.Fatalf("error %+v, want %s %q", body.Error, tc.code, tc.message)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
}

func ptr(s string) *string { return &s }
