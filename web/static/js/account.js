// The account page: plan and credits, API keys (list, create with the key text shown once,
// rotate, revoke), signed-in sessions with sign-out, and two-factor set-up.

import { api, ApiError, url } from './api.js';
import { $, h } from './dom.js';
import { count, when } from './format.js';
import { requireUser } from './session.js';

const errorEl = $('#account-error');

function report(err) {
  errorEl.textContent = err instanceof ApiError ? err.message : `Something went wrong: ${err.message}`;
}

/** Runs an action, showing its error at the top of the page. */
async function act(fn) {
  errorEl.textContent = '';
  try { await fn(); } catch (err) { report(err); }
}

async function loadPlan() {
  const s = await api('auth/subscription');
  $('#plan').replaceChildren(...[
    ['Plan', s.plan], ['Credits left', count(s.balance)], ['Credits per period', count(s.creditsPerPeriod)],
    ['Renews', when(s.periodEnd)], ['Status', s.status],
  ].map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v || '—'))));
}

function showKey(key) {
  $('#key-text').textContent = key.key;
  $('#key-shown').hidden = false;
  $('#key-copy').focus();
}
$('#key-copy').addEventListener('click', () => navigator.clipboard?.writeText($('#key-text').textContent));

async function loadKeys() {
  const { apiKeys } = await api('auth/api-keys');
  const rows = apiKeys.map((k) => h('tr', { dataset: { id: k.id } },
    h('td', {}, k.toolName), h('td', {}, k.name || ''), h('td', {}, h('code', {}, `${k.prefix}…`)),
    h('td', {}, (k.permissions || []).join(', ')), h('td', {}, count(k.usage && k.usage.totalRequests)),
    h('td', {}, when(k.createdAt)),
    h('td', {},
      h('button', { type: 'button', 'aria-label': `Rotate ${k.name || k.prefix}`, onclick: () => act(async () => {
        const res = await api(`auth/api-keys/${k.id}/rotate`, { method: 'POST' });
        showKey(res.apiKey);
      }) }, 'Rotate'), ' ',
      h('button', { type: 'button', class: 'danger', 'aria-label': `Revoke ${k.name || k.prefix}`, onclick: () => act(async () => {
        if (!confirm(`Revoke ${k.name || k.prefix}? Programs using it stop working at once.`)) return;
        await api(`auth/api-keys/${k.id}`, { method: 'DELETE' });
        await loadKeys();
      }) }, 'Revoke'))));
  $('#keys tbody').replaceChildren(...rows);
}

async function loadSessions() {
  const { sessions } = await api('auth/sessions');
  $('#sessions').replaceChildren(...sessions.map((s) => h('li', {},
    h('span', {}, `${(s.device && s.device.platform) || 'device'} · ${(s.device && s.device.ip) || ''} · last active ${when(s.lastActiveAt)}`),
    s.current ? h('strong', {}, '(this browser)') : null,
    h('button', { type: 'button', onclick: () => act(async () => {
      await api(`auth/sessions/${s.id}`, { method: 'DELETE' });
      if (s.current) location.replace(url('./'));
      else await loadSessions();
    }) }, 'Sign out'))));
}

function renderTwoFactor(enabled) {
  const box = $('#tfa');
  const codeInput = () => h('input', { name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code', maxlength: 6, pattern: '[0-9]{6}', required: true });
  if (enabled) {
    const f = h('form', { class: 'inline-form' }, h('p', {}, 'Two-factor authentication is on.'),
      h('label', {}, 'Code to turn it off', codeInput()), h('button', { type: 'submit' }, 'Turn off'));
    f.addEventListener('submit', (e) => { e.preventDefault(); act(async () => {
      await api('auth/2fa/disable', { method: 'POST', body: { code: f.elements.code.value.trim() } });
      renderTwoFactor(false);
    }); });
    box.replaceChildren(f);
    return;
  }
  const start = h('button', { type: 'button', class: 'primary' }, 'Set up two-factor authentication');
  start.addEventListener('click', () => act(async () => {
    const s = await api('auth/2fa/setup', { method: 'POST' });
    const f = h('form', { class: 'inline-form' },
      h('p', {}, 'Add this secret to your authenticator app (or open the link on your phone), then enter the code it shows.'),
      h('p', {}, h('code', {}, s.secret)), h('p', {}, h('a', { href: s.otpauthUri }, 'Open in authenticator app')),
      h('label', {}, 'Code', codeInput()), h('button', { type: 'submit', class: 'primary' }, 'Turn on'));
    f.addEventListener('submit', (e) => { e.preventDefault(); act(async () => {
      await api('auth/2fa/enable', { method: 'POST', body: { code: f.elements.code.value.trim() } });
      renderTwoFactor(true);
    }); });
    box.replaceChildren(f);
  }));
  box.replaceChildren(h('p', {}, 'Two-factor authentication is off.'), start);
}

const me = await requireUser();
const create = $('#key-create');
const { tools } = await api('api/tools');
create.elements.toolName.replaceChildren(...tools.map((t) => h('option', { value: t.id }, t.name)));
create.addEventListener('submit', (e) => {
  e.preventDefault();
  act(async () => {
    const body = { toolName: create.elements.toolName.value };
    if (create.elements.name.value) body.name = create.elements.name.value;
    if (create.elements.readOnly.checked) body.permissions = ['read'];
    const res = await api('auth/api-keys', { method: 'POST', body });
    showKey(res.apiKey);
    create.reset();
    await loadKeys();
  });
});
renderTwoFactor(me.user.twoFactorEnabled);
await Promise.all([act(loadPlan), act(loadKeys), act(loadSessions)]);
document.body.dataset.ready = 'true';
