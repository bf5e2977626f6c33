import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, frames, RateLimitError } from '../src/index.js';
import { fixture, skip, URL_, register, WS } from './helpers.js';

// The shared protocol fixtures (testdata/protocol): what the SDK sends equals the client
// fixtures; the server fixtures come out as its results and typed errors; every invalid frame
// gets its code from the real hub.

test('client frames equal the fixtures', () => {
  const page = { before: new Date('2026-11-27T10:00:00Z'), limit: 50 };
  const got = {
    'auth': frames.auth('eyJhbGciOiJIUzI1NiIsImtpZCI6IjEifQ.e30.sig'),
    'chat.send': frames.chatSend('r1', {
      tool: 'ipintel', sessionId: '65f0c2a1b2c3d4e5f6a7b8c9', provider: 'claude', model: 'claude-sonnet-4-5',
      message: 'Why is 203.0.113.7 high risk?', maxTokens: 1024, temperature: 0.3,
    }),
    'chat.cancel': frames.cancel('r1'),
    'chat.resume': frames.resume('r1', 17),
    'history.get': frames.historyGet('h1', 'ipintel', '65f0c2a1b2c3d4e5f6a7b8c9', page),
    'sessions.list': frames.sessionsList('s1', 'ipintel', page),
    'ping': frames.ping('p1'),
  };
  for (const [type, frame] of Object.entries(got)) {
    assert.deepEqual(frame, fixture(`client/${type}.json`), type);
  }
});

// A WebSocket that plays the server fixtures: chat.send gets started, delta, usage, done (or
// the error fixture when the message says so).
class FixtureWS extends EventTarget {
  constructor() {
    super();
    this.readyState = 0;
    setTimeout(() => { this.readyState = 1; this.onopen && this.onopen({}); });
  }
  send(data) {
    const f = JSON.parse(data);
    const reply = (frame) => setTimeout(() => this.onmessage && this.onmessage({ data: JSON.stringify({ ...frame, id: f.id }) }));
    if (f.type === 'auth') { setTimeout(() => this.onmessage({ data: JSON.stringify(fixture('server/auth.ok.json')) })); return; }
    if (f.type === 'ping') reply(fixture('server/pong.json'));
    if (f.type === 'history.get') reply(fixture('server/history.json'));
    if (f.type === 'sessions.list') reply(fixture('server/sessions.json'));
    if (f.type === 'chat.send') {
      if (f.message === 'error') { reply(fixture('server/chat.error.json')); return; }
      const end = f.message === 'cancel' ? 'chat.cancelled' : 'chat.done';
      for (const t of ['chat.started', 'chat.delta', 'chat.usage', end]) reply(fixture(`server/${t}.json`));
    }
  }
  close() { this.readyState = 3; setTimeout(() => this.onclose && this.onclose({ code: 1000, reason: '' })); }
}

test('server frames become results and typed errors', async () => {
  const c = await connect('http://fixtures.invalid', { token: 't', WebSocket: FixtureWS });
  const reply = c.chat({ tool: 'ipintel', provider: 'claude', message: 'hi' });
  assert.equal(await reply.text(), 'The address ');
  const done = fixture('server/chat.done.json');
  const started = fixture('server/chat.started.json');
  assert.deepEqual(await reply.result, {
    id: reply.id, sessionId: started.sessionId, messageId: started.messageId, provider: started.provider, model: started.model,
    finishReason: 'stop', cancelled: false, usage: done.usage, costUsd: done.costUsd, costMicros: done.costMicros,
    creditsLeft: done.creditsLeft, seq: done.seq,
  });
  assert.equal(reply.progress.usage.estimated, true);

  const cancelled = c.chat({ tool: 'ipintel', provider: 'claude', message: 'cancel' });
  const r = await cancelled.result;
  assert.equal(r.cancelled, true);
  assert.equal(r.costMicros, fixture('server/chat.cancelled.json').costMicros);

  const failed = c.chat({ tool: 'ipintel', provider: 'claude', message: 'error' });
  await assert.rejects(failed.result, (err) => err instanceof RateLimitError && err.retryAfterMs === 12000 && err.retryable);
  await assert.rejects(failed.text(), RateLimitError);

  assert.deepEqual((await c.history('ipintel', 'x')).messages, fixture('server/history.json').messages);
  assert.deepEqual((await c.sessions('ipintel')).sessions, fixture('server/sessions.json').sessions);
  await c.close();
});

test('invalid frames get their codes from the real hub', { skip }, async () => {
  const { token } = await register();
  const ws = new WS(`${URL_.replace('http', 'ws')}/ai/chat`, 'maula.v1', { headers: { authorization: `Bearer ${token}` } });
  const inbox = [];
  let wake = () => {};
  ws.on('message', (data) => { inbox.push(JSON.parse(data.toString())); wake(); });
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  const next = async () => {
    while (!inbox.length) await new Promise((r) => { wake = r; });
    return inbox.shift();
  };
  for (const tc of fixture('invalid.json').cases) {
    ws.send(tc.frame);
    const got = await next();
    let id = '';
    try { id = JSON.parse(tc.frame).id || ''; } catch { /* not JSON */ }
    assert.equal(got.type, 'chat.error', tc.name);
    assert.equal(got.code, tc.code, tc.name);
    assert.equal(got.id || '', id, tc.name);
  }
  ws.send(JSON.stringify(frames.ping('still-up')));
  assert.deepEqual(await next(), { type: 'pong', id: 'still-up' });
  ws.close();
});
