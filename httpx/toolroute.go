package httpx

import "net/http"

// ToolRoute is the head every /api/{tool}/... handler shares: identify the caller, look up
// the tool its path names, check that the caller may use that tool, and only then run the
// handler. C is the caller and T the tool, as the mounting package knows them.
//
// Each refusal is written as {"error":{"code","message"}}; a nil one takes the default named
// on its field.
type ToolRoute[C, T any] struct {
	// Identify returns the authenticated caller of r; false: refused with NoCaller.
	Identify func(r *http.Request) (C, bool)
	// Tool looks up the {tool} path value; false: refused with UnknownTool.
	Tool func(name string) (T, bool)
	// Allowed reports whether the caller may use the tool (an API key is scoped to one);
	// false: refused with Forbidden. nil: every caller may, the authentication middleware
	// having checked the key's tool.
	Allowed func(c C, tool string) bool

	NoCaller    *APIError                   // default: 401 unauthorized "authentication required"
	UnknownTool func(name string) *APIError // default: 404 unknown_tool "no tool <name>"
	Forbidden   *APIError                   // default: 403 forbidden "this API key is for another tool"
	// Fail writes the handler's error; nil: Fail.
	Fail func(w http.ResponseWriter, r *http.Request, err error)
}

// Handle returns fn behind the route's checks.
func (tr ToolRoute[C, T]) Handle(fn func(w http.ResponseWriter, r *http.Request, c C, t T) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := tr.Identify(r)
		if !ok {
			writeAPIError(w, tr.NoCaller, http.StatusUnauthorized, "unauthorized", "authentication required")
			return
		}
		name := r.PathValue("tool")
		t, known := tr.Tool(name)
		if !known {
			var e *APIError
			if tr.UnknownTool != nil {
				e = tr.UnknownTool(name)
			}
			writeAPIError(w, e, http.StatusNotFound, "unknown_tool", "no tool "+name)
			return
		}
		if tr.Allowed != nil && !tr.Allowed(c, name) {
			writeAPIError(w, tr.Forbidden, http.StatusForbidden, "forbidden", "this API key is for another tool")
			return
		}
		if err := fn(w, r, c, t); err != nil {
			if tr.Fail != nil {
				tr.Fail(w, r, err)
				return
			}
			Fail(w, r, err)
		}
	})
}

// writeAPIError writes e, or the default status, code and message when e is nil.
func writeAPIError(w http.ResponseWriter, e *APIError, status int, code, message string) {
	if e != nil {
		status, code, message = e.Status, e.Code, e.Message
	}
	WriteError(w, status, code, message)
}
