// Shared by the browser tests: launch Debian's Chromium through playwright-core, collect console
// errors and page errors, and take screenshots into SHOTS_DIR.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

export const BASE = process.env.BASE_URL; // the server's root with its base path, ending in "/"
export const SHOTS = process.env.SHOTS_DIR || 'screenshots';
mkdirSync(SHOTS, { recursive: true });

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}

/**
 * A new context and page that records console errors and uncaught exceptions in errors[].
 * allow(msg) may excuse an expected one (it is then listed in excused[]).
 */
export async function newPage(browser, { viewport = { width: 1280, height: 860 }, allow = () => false } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const errors = [];
  const excused = [];
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const loc = m.location();
    const text = `${m.text()} (${loc.url || '?'})`;
    (allow(text) ? excused : errors).push(text);
  });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('dialog', (d) => { errors.push(`dialog: ${d.message()}`); d.dismiss(); });
  return { context, page, errors, excused };
}

let shotN = 0;
/** Saves a full-page screenshot named NN-name.png. */
export async function shot(page, name) {
  const file = path.join(SHOTS, `${String(++shotN).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  return file;
}

export function log(...a) { console.error('[e2e]', ...a); }

/** Registers a fresh account through the sign-in page and lands on /chat. */
export async function register(page, email, password = 'correct horse battery') {
  await page.goto(BASE);
  await page.getByRole('tab', { name: 'Register' }).click();
  const f = page.locator('#register');
  await f.getByLabel('Name').fill('E2E user');
  await f.getByLabel('Email').fill(email);
  await f.getByLabel('Password').fill(password);
  await f.getByRole('button', { name: 'Create account' }).click();
  await page.locator('#verify-notice').waitFor({ state: 'visible' });
}

/** Waits until the chat page finished wiring itself. */
export async function chatReady(page) {
  await page.waitForSelector('body[data-ready="true"]', { timeout: 30000 });
}

export function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}
