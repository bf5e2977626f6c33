package providers

import (
	"context"
	"io"
	"strings"
	"time"
)

// DefaultEchoDelay is the pause between echo words: about the pace of a
// fast hosted model, so demos and load tests look realistic.
const DefaultEchoDelay = 20 * time.Millisecond

// EchoPrefix starts every echo reply so nobody mistakes it for a model.
const EchoPrefix = "[maula offline echo provider] No AI provider is configured, so this is a canned reply. You said:"

// echoProvider is the offline provider: a deterministic reply built from
// the prompt, streamed a word at a time. It costs nothing (its price entry
// is zero) and its usage is counted with EstimateTokens.
type echoProvider struct {
	delay        time.Duration
	defaultModel string
}

func newEcho(pc ProviderConfig, delay time.Duration) *echoProvider {
	if delay == 0 {
		delay = DefaultEchoDelay
	}
	if delay < 0 {
		delay = 0
	}
	return &echoProvider{delay: delay, defaultModel: pc.DefaultModel}
}

// Name returns "echo".
func (p *echoProvider) Name() string { return "echo" }

// DefaultModel returns "echo-1" unless configured otherwise.
func (p *echoProvider) DefaultModel() string { return p.defaultModel }

// EchoReply is the full text the echo provider streams for req.
func EchoReply(req *Request) string {
	last := ""
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role == RoleUser {
			last = req.Messages[i].Content
			break
		}
	}
	last = strings.Join(strings.Fields(last), " ")
	if last == "" {
		last = "(nothing)"
	}
	return EchoPrefix + " " + last
}

// Stream starts streaming the echo reply.
func (p *echoProvider) Stream(ctx context.Context, req *Request) (Stream, error) {
	model := req.Model
	if model == "" {
		model = p.defaultModel
	}
	reply := EchoReply(req)
	s := &echoStream{rest: reply, delay: p.delay}
	s.core = newCore(ctx, "echo", model, req, nil)
	if max := req.MaxTokens; max > 0 && EstimateTokens(reply) > int64(max) {
		s.rest = string([]rune(reply)[:max*4])
		s.truncated = true
	}
	s.core.usage = Usage{Input: s.core.promptTokens, Output: EstimateTokens(s.rest)}
	s.core.haveInput = true
	return s, nil
}

// echoStream emits one word (with its leading space) per delay.
type echoStream struct {
	core      *streamCore
	rest      string
	delay     time.Duration
	timer     *time.Timer
	started   bool
	truncated bool
}

// Recv returns the next word, or the finish after the last one.
func (s *echoStream) Recv() (Event, error) {
	c := s.core
	if c.done {
		return Event{}, io.EOF
	}
	if c.cancelled() {
		return s.cancel(), nil
	}
	if s.rest == "" {
		c.final = true
		if s.truncated {
			return c.finish(FinishLength), nil
		}
		return c.finish(FinishStop), nil
	}
	if s.started && s.delay > 0 {
		if s.timer == nil {
			s.timer = time.NewTimer(s.delay)
		} else {
			s.timer.Reset(s.delay)
		}
		select {
		case <-c.ctx.Done():
			return s.cancel(), nil
		case <-s.timer.C:
		}
	}
	s.started = true
	i := strings.IndexByte(s.rest[1:], ' ') + 1
	if i <= 0 {
		i = len(s.rest)
	}
	word := s.rest[:i]
	s.rest = s.rest[i:]
	return c.delta(word), nil
}

// cancel reports the words sent so far, exactly: echo knows its own counts.
func (s *echoStream) cancel() Event {
	s.core.usage.Output = runesToTokens(s.core.runes)
	s.core.final = true
	return s.core.finish(FinishCancelled)
}

// Close is a no-op: echo holds no connection, and its timer belongs to the
// Recv goroutine (unreferenced timers are collected since Go 1.23).
func (s *echoStream) Close() error { return nil }
