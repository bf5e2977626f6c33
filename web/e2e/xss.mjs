// A model reply carrying markup must be shown as text and never run. The echo provider
// repeats the user's message in its reply, so the message is the payload: raw HTML with an
// onerror handler, a <script>, a javascript: link and a remote image.

import { BASE, launch, newPage, shot, log, register, chatReady, assert } from './lib.mjs';

const PAYLOAD = [
  '<img src=x onerror="window.__pwned=1">',
  '<script>window.__pwned=2</script>',
  '[click me](javascript:window.__pwned=3)',
  '![beacon](http://203.0.113.9/pixel.png)',
  '<a href="#" onclick="window.__pwned=4">x</a>',
  '```html\n<script>window.__pwned=5</script>\n```',
].join('\n\n');

const allow = (text) => /status of 404/.test(text) && /\/analyses/.test(text);
const browser = await launch();
try {
  const { page, errors } = await newPage(browser, { allow });
  log('register and send the payload through the echo provider');
  await register(page, `xss${Date.now()}@example.com`);
  await page.getByRole('link', { name: 'Continue to chat' }).click();
  await chatReady(page);
  await page.locator('#provider').selectOption('echo');
  const box = page.getByRole('textbox', { name: 'Message' });
  await box.fill(PAYLOAD);
  await box.press('Enter');
  await page.waitForSelector('article.assistant[data-state="done"]', { timeout: 30000 });
  await page.waitForTimeout(300); // give any injected handler the chance to fire
  const r = await page.evaluate(() => {
    const a = document.querySelector('article.assistant');
    const body = a.querySelector('.body');
    return {
      pwned: window.__pwned, text: body.textContent,
      imgs: document.querySelectorAll('#transcript img').length,
      scripts: document.querySelectorAll('#transcript script').length,
      handlers: [...document.querySelectorAll('#transcript *')].filter((el) => [...el.attributes].some((x) => x.name.startsWith('on'))).length,
      jsLinks: [...document.querySelectorAll('#transcript a')].filter((l) => /^javascript:/i.test(l.getAttribute('href') || '')).length,
      codeBlocks: body.querySelectorAll('pre code').length,
    };
  });
  await shot(page, 'xss-inert');
  assert(r.pwned === undefined, `script ran: __pwned=${r.pwned}`);
  assert(r.imgs === 0 && r.scripts === 0 && r.handlers === 0 && r.jsLinks === 0, `active markup in the transcript: ${JSON.stringify(r)}`);
  assert(r.text.includes('<img src=x onerror="window.__pwned=1">'), 'the <img onerror> is shown as text');
  assert(r.text.includes('<script>window.__pwned=2</script>'), 'the <script> is shown as text');
  assert(r.codeBlocks === 0 && r.text.includes('window.__pwned=5'), 'fenced code stays text (the echo provider joins lines, so it renders inline)');
  assert(errors.length === 0, `console errors: ${errors.join('\n')}`);
  console.log(JSON.stringify({ xss: r }));
} finally {
  await browser.close();
}
