package store

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// countingValue counts how often a handler resolves it, i.e. formats the attribute.
type countingValue struct{ n *int }

func (v countingValue) LogValue() slog.Value { *v.n++; return slog.StringValue("big-document") }

// FerretDB attaches every SQL statement's arguments with logger.With and then logs at debug:
// below the floor that must cost no formatting, while a record that passes keeps its
// attributes and groups in order.
func TestLevelFloorFormatsOnlyWrittenRecords(t *testing.T) {
	cases := []struct {
		name      string
		log       func(*slog.Logger)
		formatted int
		want      string // substring of the output; "" means no output
	}{
		{"debug with attrs is dropped unformatted", func(l *slog.Logger) { l.With("args", nil).Debug("q") }, 0, ""},
		{"warn below the floor is dropped", func(l *slog.Logger) { l.With("args", nil).Warn("q") }, 0, ""},
		{"error keeps attrs and groups", func(l *slog.Logger) { l.WithGroup("g").With("args", nil).Error("boom", "k", 1) }, 1, "msg=boom g.args=big-document g.k=1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			n := 0
			base := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})
			l := slog.New(levelFloor{Handler: base, min: slog.LevelError})
			c.log(slog.New(countingHandler{l.Handler(), countingValue{&n}}))
			if n != c.formatted {
				t.Errorf("attribute formatted %d times, want %d", n, c.formatted)
			}
			out := buf.String()
			if c.want == "" && out != "" {
				t.Errorf("wrote %q, want nothing", out)
			}
			if c.want != "" && !strings.Contains(out, c.want) {
				t.Errorf("wrote %q, want it to contain %q", out, c.want)
			}
		})
	}
}

// countingHandler substitutes v for the value of every "args" attribute, so that the cases
// above can say With("args", nil).
type countingHandler struct {
	slog.Handler
	v countingValue
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		if a.Key == "args" {
			a.Value = slog.AnyValue(h.v)
		}
		out[i] = a
	}
	return countingHandler{h.Handler.WithAttrs(out), h.v}
}

func (h countingHandler) WithGroup(g string) slog.Handler {
	return countingHandler{h.Handler.WithGroup(g), h.v}
}
