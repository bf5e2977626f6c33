import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  connect, InsufficientCreditsError, RateLimitError, UnauthorizedError, ForbiddenError, ProviderError, ClosedError,
} from '../src/index.js';
import { skip, URL_, LIMITS_URL, TEXT, CHUNKS, register, recordingWS, WS } from './helpers.js';

// Against the real server with the fake upstream (started by sdk/jstest's Go test).

test('three chats at once, one cancelled', { skip }, async () => {
  const { token } = await register();
  const c = await connect(URL_, { token, WebSocket: WS });
  const ac = new AbortController();
  const replies = [0, 1, 2].map((i) => c.chat({ tool: 'ipintel', provider: 'claude', message: `question ${i}` },
    i === 1 ? { signal: ac.signal } : {}));
  const texts = await Promise.all(replies.map(async (r, i) => {
    let s = '';
    for await (const t of r) {
      s += t;
      if (i === 1) ac.abort(); // after the first delta: mid-reply
    }
    return s;
  }));
  for (const [i, r] of replies.entries()) {
    const res = await r.result;
    if (i === 1) {
      assert.equal(res.cancelled, true);
      assert.ok(texts[1].length > 0 && texts[1].length < TEXT.length && TEXT.startsWith(texts[1]), `cancelled text ${texts[1].length} bytes`);
      assert.ok(res.usage.output > 0 && res.costMicros > 0, 'the cancelled part is billed');
      continue;
    }
    assert.equal(texts[i], TEXT);
    assert.equal(res.finishReason, 'stop');
    assert.equal(res.seq, CHUNKS);
    assert.ok(res.sessionId && res.messageId && res.costMicros > 0 && res.creditsLeft > 0, JSON.stringify(res));
  }
  const first = await replies[0].result;
  const list = await c.sessions('ipintel');
  assert.ok(list.sessions.some((s) => s.sessionId === first.sessionId));
  const h = await c.history('ipintel', first.sessionId, { limit: 10 });
  assert.equal(h.messages.length, 2);
  assert.equal(h.messages[1].message, TEXT);
  // Continue the conversation.
  const more = c.chat({ tool: 'ipintel', provider: 'gpt', message: 'and then?', sessionId: first.sessionId });
  assert.equal(await more.text(), TEXT);
  assert.equal((await more.result).sessionId, first.sessionId);
  await c.close();
  const late = c.chat({ tool: 'ipintel', provider: 'claude', message: 'x' });
  await assert.rejects(late.result, ClosedError);
});

test('a dropped connection mid-reply is resumed: the text arrives whole, once', { skip }, async () => {
  const { token } = await register();
  const { WebSocket, sockets } = recordingWS();
  const c = await connect(URL_, { token, WebSocket });
  const a = c.chat({ tool: 'ipintel', provider: 'claude', message: 'first' });
  const b = c.chat({ tool: 'fraudguard', provider: 'mistral', message: 'second' });
  let s = '';
  let cut = false;
  for await (const t of a) {
    s += t;
    if (!cut && s.length >= 18) { cut = true; sockets[0].terminate(); } // the network drops
  }
  assert.equal(s, TEXT);
  assert.equal(await b.text(), TEXT);
  assert.equal((await a.result).seq, CHUNKS);
  assert.equal((await b.result).seq, CHUNKS);
  assert.equal(c.reconnects, 1);
  await c.close();
});

test('refused credentials and a key of another tool', { skip }, async () => {
  await assert.rejects(connect(URL_, { token: 'not-a-token', WebSocket: WS }), UnauthorizedError);
  const { keys } = await register();
  const c = await connect(URL_, { apiKey: keys.fraudguard, WebSocket: WS });
  await assert.rejects(c.chat({ tool: 'ipintel', provider: 'claude', message: 'x' }).result, ForbiddenError);
  await assert.rejects(c.chat({ tool: 'fraudguard', provider: 'nosuch', message: 'x' }).result,
    (err) => err instanceof ProviderError && err.code === 'provider_unavailable');
  assert.ok(await c.ping() >= 0);
  await c.close();
});

test('insufficient credits and rate limits surface as typed errors', { skip: LIMITS_URL ? false : 'MAULA_TEST_LIMITS_URL not set' }, async () => {
  const { token } = await register(LIMITS_URL);
  const c = await connect(LIMITS_URL, { token, WebSocket: WS });
  const ask = () => c.chat({ tool: 'ipintel', provider: 'claude', message: 'hello' });
  const first = await ask().result;
  assert.equal(first.creditsLeft, 0);
  await assert.rejects(ask().result, InsufficientCreditsError);
  await assert.rejects(ask().result, (err) => err instanceof RateLimitError && err.retryAfterMs > 0 && err.retryAfterMs <= 60000);
  await c.close();
});
