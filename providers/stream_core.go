package providers

import (
	"context"
	"sync"
	"unicode/utf8"
)

// streamCore holds what every adapter's stream shares: the one-terminal-event
// rule, usage known so far, the estimate used when the upstream never sent
// usage, and turning a failure after cancel into a "cancelled" finish.
// It is owned by the goroutine calling Recv, except closeOnce.
type streamCore struct {
	ctx          context.Context
	provider     string
	model        string
	promptTokens int64 // estimated input, used when the upstream reports none
	runes        int64 // characters of text received, for the output estimate

	usage     Usage // as reported by the upstream so far
	haveInput bool  // upstream reported input tokens
	final     bool  // upstream reported its final usage
	done      bool  // terminal event returned

	closeOnce sync.Once
	closeFn   func() error
	closeErr  error
}

func newCore(ctx context.Context, provider, model string, req *Request, closeFn func() error) *streamCore {
	return &streamCore{ctx: ctx, provider: provider, model: model, promptTokens: estimatePrompt(req), closeFn: closeFn}
}

// delta counts text and wraps it in an event.
func (c *streamCore) delta(text string) Event {
	c.runes += int64(utf8.RuneCountInString(text))
	return Event{Type: EventDelta, Text: text}
}

// partialUsage is the usage to bill now: the reported figures, completed by
// estimates when the upstream did not (yet) send its final usage.
func (c *streamCore) partialUsage() Usage {
	u := c.usage
	if c.final {
		return u
	}
	if !c.haveInput {
		u.Input = c.promptTokens
	}
	if est := runesToTokens(c.runes); u.Output < est {
		u.Output = est
	}
	u.Estimated = true
	return u
}

// finish ends the stream normally.
func (c *streamCore) finish(reason string) Event {
	c.terminal()
	return Event{Type: EventFinish, FinishReason: reason, Usage: c.partialUsage(), Provider: c.provider, Model: c.model}
}

// fail ends the stream with an error, unless the caller cancelled, in which
// case the contract is a "cancelled" finish with the usage known so far.
func (c *streamCore) fail(e *Error) Event {
	if c.ctx.Err() != nil {
		return c.finish(FinishCancelled)
	}
	c.terminal()
	return Event{Type: EventError, Err: e, Usage: c.partialUsage(), Provider: c.provider, Model: c.model}
}

// cancelled reports whether ctx is done; Recv checks it first so buffered
// upstream data is not relayed after a cancel.
func (c *streamCore) cancelled() bool { return c.ctx.Err() != nil }

func (c *streamCore) terminal() {
	c.done = true
	_ = c.close()
}

// close releases the upstream response exactly once.
func (c *streamCore) close() error {
	c.closeOnce.Do(func() {
		if c.closeFn != nil {
			c.closeErr = c.closeFn()
		}
	})
	return c.closeErr
}
