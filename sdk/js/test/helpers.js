// Shared by the tests: the real server's address (set by sdk/jstest's Go test, which starts
// maula-chat with the fake upstream), registration of a fresh user, and the fixtures.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import WS from 'ws';

export const URL_ = process.env.MAULA_TEST_URL;
export const LIMITS_URL = process.env.MAULA_TEST_LIMITS_URL;
export const TEXT = process.env.MAULA_TEST_TEXT; // the exact reply text of the fake upstream
export const CHUNKS = Number(process.env.MAULA_TEST_CHUNKS || 0);
export const skip = URL_ ? false : 'MAULA_TEST_URL not set: run through `go test ./sdk/jstest/`';

const fixtureDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'testdata', 'protocol');
export function fixture(rel) {
  return JSON.parse(readFileSync(join(fixtureDir, rel), 'utf8'));
}

let n = 0;
export async function register(base = URL_) {
  const email = `js${Date.now()}-${process.pid}-${++n}@example.com`;
  const res = await fetch(`${base}/auth/register`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password: 'correct horse battery', name: 'JS test' }),
  });
  if (res.status !== 201) throw new Error(`register: HTTP ${res.status} ${await res.text()}`);
  const body = await res.json();
  const keys = {};
  for (const k of body.apiKeys) keys[k.toolName] = k.key;
  return { token: body.token, keys };
}

// A WebSocket class that remembers its sockets, so a test can cut the network under the SDK.
export function recordingWS() {
  const sockets = [];
  class RecordingWS extends WS {
    constructor(...args) { super(...args); sockets.push(this); }
  }
  return { WebSocket: RecordingWS, sockets };
}

export { WS };
