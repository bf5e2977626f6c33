// The conversations of the current tool, newest first, paged with "Older conversations".
// Opening one loads its history on demand (the transcript does that).

import { h } from '../dom.js';
import { when } from '../format.js';

export class Sidebar {
  constructor({ list, more, onOpen }) {
    this.list = list;
    this.more = more;
    this.onOpen = onOpen;
    this.current = null;
    this.more.addEventListener('click', () => this._page(true));
  }

  /** Reloads the first page for tool through the SDK client. */
  async load(client, tool) {
    this.client = client;
    this.tool = tool;
    this.oldest = undefined;
    this.list.replaceChildren();
    await this._page(false);
  }

  async _page(older) {
    const tool = this.tool;
    let res;
    try {
      res = await this.client.sessions(tool, { limit: 30, before: older ? this.oldest : undefined });
    } catch (err) {
      this.list.replaceChildren(h('li', { class: 'muted small' }, `Could not load conversations: ${err.message}`));
      return;
    }
    if (tool !== this.tool) return; // the user switched tools meanwhile
    for (const s of res.sessions) {
      this.oldest = s.lastMessageAt;
      const b = h('button', { type: 'button', dataset: { session: s.sessionId }, onclick: () => this.onOpen(s.sessionId) },
        s.preview || 'Conversation', h('span', { class: 'when' }, `${when(s.lastMessageAt)} · ${s.messages} messages`));
      this.list.append(h('li', {}, b));
    }
    if (!this.list.children.length) this.list.append(h('li', { class: 'muted small' }, 'No conversations with this tool yet.'));
    this.more.hidden = !res.hasMore;
    this.mark(this.current);
  }

  /** Highlights the open conversation. */
  mark(sessionId) {
    this.current = sessionId;
    for (const b of this.list.querySelectorAll('button[data-session]')) {
      if (b.dataset.session === sessionId) b.setAttribute('aria-current', 'true');
      else b.removeAttribute('aria-current');
    }
  }
}
