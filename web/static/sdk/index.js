// @maula/chat: the JavaScript client of maula-chat's WebSocket protocol v1 (docs/protocol.md).
//
// One Client holds one WebSocket to GET /ai/chat and runs any number of replies on it at
// once. Like the Go SDK it cancels with an AbortSignal, redials after a drop with backoff and
// jitter and resumes every running reply from the last seq it delivered (no lost or doubled
// text), and turns chat.error frames into typed errors. No runtime dependency: it uses the
// global WebSocket (browsers, Node 22+) or the implementation passed as `WebSocket`.

/** The WebSocket subprotocol of protocol v1. */
export const SUBPROTOCOL = 'maula.v1';

/** Base class of every error the SDK raises. `code` is the protocol's error code. */
export class MaulaError extends Error {
  constructor(message, { code = 'internal', retryable = false, retryAfterMs = 0, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'MaulaError';
    this.code = code;
    this.retryable = retryable;
    this.retryAfterMs = retryAfterMs;
  }
}

/** No AI credits left on the plan (insufficient_credits). */
export class InsufficientCreditsError extends MaulaError {
  constructor(message, o) { super(message, o); this.name = 'InsufficientCreditsError'; }
}

/** The plan's message rate was reached (rate_limited); retry after `retryAfterMs`. */
export class RateLimitError extends MaulaError {
  constructor(message, o) { super(message, o); this.name = 'RateLimitError'; }
}

/** The upstream failed (provider_error) or the provider/model is not available (provider_unavailable). */
export class ProviderError extends MaulaError {
  constructor(message, o) { super(message, o); this.name = 'ProviderError'; }
}

/** Credentials refused (close 4401 or the unauthorized code). */
export class UnauthorizedError extends MaulaError {
  constructor(message, o) { super(message, { code: 'unauthorized', ...o }); this.name = 'UnauthorizedError'; }
}

/** Authenticated but not allowed, e.g. an API key of another tool (close 4403 or forbidden). */
export class ForbiddenError extends MaulaError {
  constructor(message, o) { super(message, { code: 'forbidden', ...o }); this.name = 'ForbiddenError'; }
}

/** Any other chat.error: bad_request, not_found, duplicate_id, too_many_requests, ... */
export class ProtocolError extends MaulaError {
  constructor(message, o) { super(message, o); this.name = 'ProtocolError'; }
}

/** The connection dropped and could not be re-established (or closed with a give-up code). */
export class ConnectionLostError extends MaulaError {
  constructor(message, o) { super(message, { code: 'connection_lost', retryable: true, ...o }); this.name = 'ConnectionLostError'; }
}

/** The client was closed. */
export class ClosedError extends MaulaError {
  constructor(message = 'client closed') { super(message, { code: 'closed' }); this.name = 'ClosedError'; }
}

/** Turns a chat.error frame into its typed error. */
export function errorFromFrame(f) {
  const o = { code: f.code, retryable: !!f.retryable, retryAfterMs: f.retryAfterMs || 0 };
  const msg = `${f.code}: ${f.message || ''}`;
  switch (f.code) {
    case 'insufficient_credits': return new InsufficientCreditsError(msg, o);
    case 'rate_limited': return new RateLimitError(msg, o);
    case 'provider_error':
    case 'provider_unavailable': return new ProviderError(msg, o);
    case 'unauthorized': return new UnauthorizedError(msg, o);
    case 'forbidden': return new ForbiddenError(msg, o);
    default: return new ProtocolError(msg, o);
  }
}

/** Encoders of the frames the SDK sends (held to testdata/protocol/client by the tests). */
export const frames = {
  auth: (token) => ({ type: 'auth', token }),
  chatSend: (id, req) => strip({
    type: 'chat.send', id, tool: req.tool, sessionId: req.sessionId, provider: req.provider, model: req.model,
    message: req.message, analysisId: req.analysisId, maxTokens: req.maxTokens, temperature: req.temperature,
    cancelOnDisconnect: req.cancelOnDisconnect || undefined,
  }),
  cancel: (id) => ({ type: 'chat.cancel', id }),
  resume: (id, afterSeq) => strip({ type: 'chat.resume', id, afterSeq: afterSeq || undefined }),
  historyGet: (id, tool, sessionId, page = {}) => strip({ type: 'history.get', id, tool, sessionId, before: isoOf(page.before), limit: page.limit }),
  sessionsList: (id, tool, page = {}) => strip({ type: 'sessions.list', id, tool, before: isoOf(page.before), limit: page.limit }),
  ping: (id) => ({ type: 'ping', id }),
};

function strip(o) {
  for (const k of Object.keys(o)) if (o[k] === undefined || o[k] === '' || o[k] === null) delete o[k];
  return o;
}

function isoOf(t) {
  if (t === undefined || t === null || t === '') return undefined;
  return t instanceof Date ? t.toISOString().replace('.000Z', 'Z') : String(t);
}

/** Maps http(s) URLs to ws(s) and appends /ai/chat when the path lacks it. */
export function chatURL(raw) {
  const u = new URL(raw);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  else if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new TypeError(`bad server URL ${raw}: scheme must be http, https, ws or wss`);
  if (!u.pathname.endsWith('/ai/chat')) u.pathname = u.pathname.replace(/\/+$/, '') + '/ai/chat';
  return u.toString();
}

// Close codes after which a redial cannot succeed with the same credentials.
const GIVE_UP = new Set([4401, 4403, 1008]);

const decoder = new TextDecoder();
function textOf(data) {
  if (typeof data === 'string') return data;
  if (data instanceof ArrayBuffer) return decoder.decode(new Uint8Array(data));
  if (ArrayBuffer.isView(data)) return decoder.decode(data);
  return String(data);
}

let clientSeq = 0;
function randomPrefix() {
  const b = new Uint8Array(6);
  globalThis.crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/**
 * Connects to the chat hub. `url` is the server ("https://chat.maula.ai") or the socket URL.
 * Options: token (session JWT) or apiKey (mk_ key), sent in the first frame so browsers can
 * use them too (without either, a browser's session cookie authenticates); WebSocket (an
 * implementation, e.g. the `ws` package, where there is no global one); maxReconnectAttempts
 * (10; 0 disables), reconnectBackoffMs (100), maxReconnectBackoffMs (5000), cancelTimeoutMs
 * (10000). Rejects with UnauthorizedError when the credentials are refused.
 */
export async function connect(url, options = {}) {
  const c = new Client(url, options);
  await c._open();
  return c;
}

/** A connection to the chat hub, redialled when it drops. Create it with connect(). */
export class Client {
  constructor(url, o = {}) {
    this._url = chatURL(url);
    this._o = {
      maxReconnectAttempts: 10, reconnectBackoffMs: 100, maxReconnectBackoffMs: 5000, cancelTimeoutMs: 10000, ...o,
    };
    this._WS = o.WebSocket || globalThis.WebSocket;
    if (!this._WS) throw new TypeError('no WebSocket implementation: pass { WebSocket } (e.g. from the "ws" package) on Node < 22');
    this._credential = o.token || o.apiKey || '';
    this._prefix = `${randomPrefix()}-${++clientSeq}`;
    this._next = 0;
    this._ws = null; // the open, authenticated socket; null while redialling
    this._streams = new Map(); // running replies by id
    this._calls = new Map(); // pending history/sessions/ping by id
    this._outbox = []; // frames waiting for a connection
    this._closed = false;
    this._error = null; // why the client stopped
    this.reconnects = 0;
  }

  _id(kind) { return `${kind}-${this._prefix}-${++this._next}`; }

  // Opens one socket and authenticates it; resolves with it or rejects.
  _dial() {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new this._WS(this._url, SUBPROTOCOL);
      } catch (err) {
        reject(new ConnectionLostError(`dial ${this._url}: ${err.message}`, { cause: err }));
        return;
      }
      let settled = false;
      const fail = (err) => { if (!settled) { settled = true; try { ws.close(); } catch { /* already closed */ } reject(err); } };
      const ok = () => {
        if (settled) return;
        settled = true;
        ws.onmessage = (ev) => this._onMessage(ws, ev);
        ws.onclose = (ev) => this._onClose(ws, ev);
        ws.onerror = () => {};
        resolve(ws);
      };
      ws.onerror = () => {};
      ws.onclose = (ev) => {
        if (ev.code === 4401) fail(new UnauthorizedError(`authentication failed: ${ev.reason || ev.code}`));
        else if (ev.code === 4403) fail(new ForbiddenError(`not allowed: ${ev.reason || ev.code}`));
        else fail(new ConnectionLostError(`dial ${this._url}: closed ${ev.code} ${ev.reason || ''}`.trim(), { code: 'connection_lost' }));
      };
      ws.onopen = () => {
        if (!this._credential) { ok(); return; }
        ws.onmessage = (ev) => {
          let f;
          try { f = JSON.parse(textOf(ev.data)); } catch { return; }
          if (f.type === 'auth.ok') ok();
          else if (f.type === 'chat.error') fail(errorFromFrame(f));
        };
        ws.send(JSON.stringify(frames.auth(this._credential)));
      };
    });
  }

  async _open() {
    const ws = await this._dial();
    this._attach(ws);
  }

  // Makes ws the current socket: re-subscribes what was running, then flushes the outbox.
  _attach(ws) {
    this._ws = ws;
    for (const [id, s] of this._streams) {
      if (!s.sent) continue; // its chat.send is in the outbox and goes out below
      s.resuming = true;
      ws.send(JSON.stringify(frames.resume(id, s.lastSeq)));
      if (s.cancelled) ws.send(JSON.stringify(frames.cancel(id)));
    }
    for (const call of this._calls.values()) ws.send(call.data);
    const out = this._outbox;
    this._outbox = [];
    for (const item of out) this._send(item.frame, item.stream);
  }

  // Sends a frame now or, while redialling, when the next socket is up.
  _send(frame, stream) {
    const data = typeof frame === 'string' ? frame : JSON.stringify(frame);
    if (this._ws && this._ws.readyState === 1) {
      if (stream) stream.sent = true;
      this._ws.send(data);
    } else {
      this._outbox.push({ frame: data, stream });
    }
  }

  _onMessage(ws, ev) {
    if (ws !== this._ws) return;
    let f;
    try { f = JSON.parse(textOf(ev.data)); } catch { return; }
    const s = this._streams.get(f.id);
    if (s) { s._handle(f); return; }
    const call = this._calls.get(f.id);
    if (call) call.settle(f);
  }

  _onClose(ws, ev) {
    if (ws !== this._ws) return;
    this._ws = null;
    if (this._closed) return;
    if (GIVE_UP.has(ev.code)) {
      const Err = ev.code === 4401 ? UnauthorizedError : ev.code === 4403 ? ForbiddenError : ConnectionLostError;
      this._stop(new Err(`connection closed: ${ev.code} ${ev.reason || ''}`.trim()));
      return;
    }
    if (!this._o.maxReconnectAttempts) {
      this._stop(new ConnectionLostError(`connection closed: ${ev.code}`));
      return;
    }
    this._redial();
  }

  async _redial() {
    let delay = this._o.reconnectBackoffMs;
    let last;
    for (let attempt = 0; attempt < this._o.maxReconnectAttempts; attempt++) {
      // Full jitter first, half jitter after: clients dropped together do not return together.
      const wait = attempt === 0 ? Math.random() * delay : delay / 2 + Math.random() * delay / 2;
      await new Promise((r) => { this._timer = setTimeout(r, wait); });
      if (this._closed) return;
      try {
        const ws = await this._dial();
        if (this._closed) { ws.close(1000); return; }
        this.reconnects++;
        this._attach(ws);
        return;
      } catch (err) {
        last = err;
        if (err instanceof UnauthorizedError || err instanceof ForbiddenError) break;
      }
      delay = Math.min(delay * 2, this._o.maxReconnectBackoffMs);
    }
    this._stop(last instanceof UnauthorizedError || last instanceof ForbiddenError ? last
      : new ConnectionLostError(`connection lost: ${last ? last.message : 'no attempt'}`, { cause: last }));
  }

  // Ends the client for good: every reply and call fails with err.
  _stop(err) {
    this._error = err;
    this._closed = true;
    clearTimeout(this._timer);
    for (const s of [...this._streams.values()]) s._finish(null, err);
    for (const call of [...this._calls.values()]) call.fail(err);
    this._calls.clear();
    this._outbox = [];
  }

  /**
   * Starts a reply. req: { tool, provider, message, model?, sessionId?, analysisId?,
   * maxTokens?, temperature?, cancelOnDisconnect?, id? }. opts.signal cancels it: the server
   * stops the upstream, bills what was produced, and `result` resolves with cancelled: true.
   */
  chat(req, { signal } = {}) {
    if (!req || !req.tool || !req.provider || !req.message) throw new TypeError('chat needs tool, provider and message');
    const id = req.id || this._id('c');
    if (this._streams.has(id)) throw new ProtocolError(`a chat with id ${id} is running`, { code: 'duplicate_id' });
    const reply = new Reply(this, id, frames.chatSend(id, req), signal);
    if (this._error) { reply._finish(null, this._error); return reply; }
    if (signal && signal.aborted) { reply._finish(null, signal.reason); return reply; }
    this._streams.set(id, reply);
    this._send(reply._sendFrame, reply);
    return reply;
  }

  _call(id, frame) {
    if (this._error) return Promise.reject(this._error);
    return new Promise((resolve, reject) => {
      const data = JSON.stringify(frame);
      const call = {
        data,
        settle: (f) => { this._calls.delete(id); if (f.type === 'chat.error') reject(errorFromFrame(f)); else resolve(f); },
        fail: (err) => { this._calls.delete(id); reject(err); },
      };
      this._calls.set(id, call);
      this._send(data);
    });
  }

  /** A page of a conversation's messages, oldest first: { tool, sessionId, messages, hasMore }. */
  history(tool, sessionId, page = {}) {
    const id = this._id('h');
    return this._call(id, frames.historyGet(id, tool, sessionId, page));
  }

  /** A page of the user's conversations with a tool, newest first: { tool, sessions, hasMore }. */
  sessions(tool, page = {}) {
    const id = this._id('s');
    return this._call(id, frames.sessionsList(id, tool, page));
  }

  /** Round trip to the hub, in milliseconds. */
  async ping() {
    const id = this._id('p');
    const t0 = Date.now();
    await this._call(id, frames.ping(id));
    return Date.now() - t0;
  }

  /** Says goodbye (close 1000); running replies end with ClosedError. */
  close() {
    if (this._closed && !this._ws) return Promise.resolve();
    const ws = this._ws;
    this._stop(new ClosedError());
    this._ws = null;
    if (!ws || ws.readyState >= 2) return Promise.resolve();
    return new Promise((resolve) => {
      ws.onclose = () => resolve();
      ws.close(1000);
    });
  }
}

/**
 * One running reply: an async iterable of its text pieces (each exactly once, in order), with
 * `result`, a promise of how it ended. Iterating throws the reply's error, if any.
 */
export class Reply {
  constructor(client, id, sendFrame, signal) {
    this.id = id;
    this.sessionId = undefined; // known once chat.started arrived
    this.progress = undefined; // the latest chat.usage estimate
    this._c = client;
    this._sendFrame = sendFrame;
    this._signal = signal;
    this.lastSeq = 0;
    this.started = false;
    this.resuming = false;
    this.resends = 0;
    this.sent = false;
    this.cancelled = false;
    this._queue = [];
    this._waiter = null;
    this._ended = false;
    this._error = null;
    this._meta = {};
    this.result = new Promise((resolve, reject) => { this._resolve = resolve; this._reject = reject; });
    this.result.catch(() => {}); // a caller that only iterates must not get an unhandled rejection
    if (signal) {
      this._onAbort = () => this.cancel();
      signal.addEventListener('abort', this._onAbort, { once: true });
    }
  }

  /** Asks the server to stop the reply (what an AbortSignal does). */
  cancel() {
    if (this._ended || this.cancelled) return;
    this.cancelled = true;
    this._cancelTimer = setTimeout(() => {
      this._finish({ ...this._meta, id: this.id, cancelled: true, finishReason: 'cancelled', seq: this.lastSeq }, null);
    }, this._c._o.cancelTimeoutMs);
    this._c._send(frames.cancel(this.id));
  }

  _handle(f) {
    switch (f.type) {
      case 'chat.started':
        this.resuming = false;
        if (this.started) return; // replayed by a resume from seq 0
        this.started = true;
        this.sessionId = f.sessionId;
        this._meta = { sessionId: f.sessionId, messageId: f.messageId, provider: f.provider, model: f.model };
        return;
      case 'chat.delta':
        this.resuming = false;
        if (f.seq <= this.lastSeq) return; // delivered before the connection dropped
        this.lastSeq = f.seq;
        this._push(f.text);
        return;
      case 'chat.usage':
        this.progress = { usage: f.usage, costUsd: f.costUsd, creditsLeft: f.creditsLeft };
        return;
      case 'chat.done':
      case 'chat.cancelled': {
        const cancelled = f.type === 'chat.cancelled';
        this._finish({
          id: this.id, ...this._meta, finishReason: cancelled ? 'cancelled' : f.finishReason, cancelled,
          usage: f.usage, costUsd: f.costUsd, costMicros: f.costMicros, creditsLeft: f.creditsLeft, seq: f.seq,
        }, null);
        return;
      }
      case 'chat.error':
        if (this.resuming && f.code === 'not_found' && !this.started && this.resends < 3) {
          // The chat.send was lost with the old socket: the server never saw it. Send it again.
          this.resends++;
          this.resuming = false;
          this._c._send(this._sendFrame, this);
          return;
        }
        if (f.code === 'duplicate_id' && this.resends > 0) {
          this.resuming = true;
          this._c._send(frames.resume(this.id, this.lastSeq));
          return;
        }
        this._finish(null, errorFromFrame(f));
    }
  }

  _push(text) {
    if (this._waiter) { const w = this._waiter; this._waiter = null; w.resolve({ value: text, done: false }); return; }
    this._queue.push(text);
  }

  _finish(result, err) {
    if (this._ended) return;
    this._ended = true;
    clearTimeout(this._cancelTimer);
    if (this._signal && this._onAbort) this._signal.removeEventListener('abort', this._onAbort);
    if (this._c._streams.get(this.id) === this) this._c._streams.delete(this.id);
    this._error = err;
    if (err) this._reject(err); else this._resolve(result);
    if (this._waiter) {
      const w = this._waiter;
      this._waiter = null;
      if (err) w.reject(err); else w.resolve({ value: undefined, done: true });
    }
  }

  [Symbol.asyncIterator]() {
    return {
      next: () => {
        if (this._queue.length) return Promise.resolve({ value: this._queue.shift(), done: false });
        if (this._ended) return this._error ? Promise.reject(this._error) : Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => { this._waiter = { resolve, reject }; });
      },
      return: () => Promise.resolve({ value: undefined, done: true }),
      [Symbol.asyncIterator]() { return this; },
    };
  }

  /** The whole text, once the reply ended. */
  async text() {
    let s = '';
    for await (const t of this) s += t;
    return s;
  }
}
