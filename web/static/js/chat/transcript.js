// The conversation view: user messages as plain text, assistant replies as sanitised markdown.
// A streaming reply is re-rendered at most once per animation frame however fast deltas come,
// and the time from the first delta's arrival to its paint is recorded as performance
// measures ("maula:first-delta-to-frame" when the DOM is updated in the frame callback,
// "maula:first-delta-to-paint" in the first task after that frame was painted).

import { h } from '../dom.js';
import { renderInto } from '../markdown.js';
import { count, money } from '../format.js';

let replySeq = 0;

export class Transcript {
  constructor(el) { this.el = el; }

  clear(emptyText) {
    this.el.replaceChildren();
    if (emptyText) this.el.append(h('p', { class: 'empty' }, emptyText));
  }

  _add(node) {
    this.el.querySelector('.empty')?.remove();
    const stick = this.atBottom();
    this.el.append(node);
    if (stick) this.scroll();
    return node;
  }

  /** True when the reader is at (or near) the bottom, so new text may scroll the view. */
  atBottom() { return this.el.scrollHeight - this.el.scrollTop - this.el.clientHeight < 80; }
  scroll() { this.el.scrollTop = this.el.scrollHeight; }

  addUser(text) {
    return this._add(h('article', { class: 'msg user', 'aria-label': 'You' }, h('div', { class: 'role' }, 'You'), h('div', { class: 'body' }, text)));
  }

  /** A finished assistant message from history. */
  addAssistantDone(m) {
    const v = new AssistantView(this);
    v.text = m.message || '';
    v.flush();
    v.finish({ usage: m.usage, costMicros: m.costMicros, provider: m.provider, model: m.model, finishReason: m.finishReason });
    return v;
  }

  /** A streaming reply. */
  addAssistant() { return new AssistantView(this); }

  /** Inserts a node before every message (e.g. "Load earlier messages"). */
  prepend(...nodes) { this.el.prepend(...nodes); }
}

/** One assistant reply: streamed text, then its figures or an inline error. */
export class AssistantView {
  constructor(t) {
    this.t = t;
    this.n = ++replySeq;
    this.text = '';
    this.frame = 0;
    this.firstMark = null;
    this.body = h('div', { class: 'body' });
    this.meta = h('div', { class: 'meta' });
    this.el = t._add(h('article', { class: 'msg assistant', 'aria-label': 'Assistant', 'aria-busy': 'true' },
      h('div', { class: 'role' }, 'Assistant'), this.body, this.meta));
  }

  /** Adds streamed text; the DOM catches up on the next animation frame. */
  append(piece) {
    if (!piece) return;
    if (this.firstMark === null) {
      this.firstMark = `maula:first-delta:${this.n}`;
      performance.mark(this.firstMark);
    }
    this.text += piece;
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = 0;
    const stick = this.t.atBottom();
    renderInto(this.body, this.text);
    this.el.dataset.chars = String(this.text.length);
    if (stick) this.t.scroll();
    if (this.firstMark && !this.painted) {
      this.painted = true;
      const start = this.firstMark;
      performance.measure('maula:first-delta-to-frame', start);
      // A task queued from the frame callback runs once this frame is rendered and painted.
      setTimeout(() => performance.measure('maula:first-delta-to-paint', start), 0);
    }
  }

  /** Live running estimate (chat.usage). */
  progress(p) {
    if (!p || !p.usage) return;
    this.meta.textContent = `${count(p.usage.input)} in · ${count(p.usage.output)} out · ~${money(Math.round((p.costUsd || 0) * 1e6))}`;
  }

  /** The reply ended (done or cancelled): final tokens and cost. */
  finish(r) {
    if (this.frame) { cancelAnimationFrame(this.frame); this.flush(); }
    this.el.setAttribute('aria-busy', 'false');
    const u = r.usage || {};
    const parts = [`${count(u.input)} in · ${count(u.output)} out tokens`, money(r.costMicros)];
    if (r.provider) parts.push(`${r.provider}/${r.model}`);
    if (r.cancelled || r.finishReason === 'cancelled') parts.unshift('Stopped');
    else if (r.finishReason && r.finishReason !== 'stop') parts.unshift(`Ended: ${r.finishReason}`);
    this.meta.textContent = parts.join(' · ');
    this.meta.dataset.costMicros = String(r.costMicros || 0);
    this.el.dataset.state = r.cancelled ? 'cancelled' : 'done';
  }

  /** The reply failed: the message inline, with Retry when it can help. */
  fail(message, onRetry) {
    if (this.frame) { cancelAnimationFrame(this.frame); this.flush(); }
    this.el.setAttribute('aria-busy', 'false');
    this.el.dataset.state = 'error';
    const row = h('div', { class: 'inline-error', role: 'alert' }, h('span', {}, message));
    if (onRetry) row.append(h('button', { type: 'button', onclick: onRetry }, 'Retry'));
    this.el.append(row);
  }

  remove() { this.el.remove(); }
}
