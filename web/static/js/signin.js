// The sign-in page: sign in (with the TOTP step when the account has two-factor on), register,
// and the verify-email notice after registering.

import { api, ApiError, url } from './api.js';
import { applyTheme } from './theme.js';
import { $ } from './dom.js';

applyTheme();

const signin = $('#signin');
const register = $('#register');
const notice = $('#verify-notice');

/** Where to go after signing in: ?next= when it is one of our pages, else the chat. */
function next() {
  const n = new URLSearchParams(location.search).get('next');
  return ['chat', 'admin', 'account'].includes(n) ? n : 'chat';
}

// Tabs (WAI-ARIA tabs pattern: arrow keys move between them).
const tabs = [$('#tab-signin'), $('#tab-register')];
function select(tab) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute('aria-selected', String(on));
    t.tabIndex = on ? 0 : -1;
    document.getElementById(t.getAttribute('aria-controls')).hidden = !on;
  }
  notice.hidden = true;
  tab.focus();
}
for (const t of tabs) {
  t.addEventListener('click', () => select(t));
  t.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowRight' || e.key === 'ArrowLeft') select(tabs[(tabs.indexOf(t) + 1) % tabs.length]);
  });
}

function fail(form, err) {
  form.querySelector('[data-error]').textContent = err instanceof ApiError ? err.message : 'Something went wrong; try again.';
}

function busy(form, on) {
  for (const b of form.querySelectorAll('button')) b.disabled = on;
}

signin.addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = new FormData(signin);
  const body = { email: f.get('email'), password: f.get('password') };
  if (!$('#totp-step').hidden) body.code = String(f.get('code') || '').trim();
  busy(signin, true);
  try {
    await api('auth/login', { method: 'POST', body });
    location.assign(url(next()));
  } catch (err) {
    if (err instanceof ApiError && err.code === 'totp_required') {
      $('#totp-step').hidden = false;
      signin.querySelector('[data-error]').textContent = '';
      signin.elements.code.focus();
    } else {
      fail(signin, err);
    }
  } finally {
    busy(signin, false);
  }
});

register.addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = new FormData(register);
  const body = { email: f.get('email'), password: f.get('password') };
  if (f.get('name')) body.name = f.get('name');
  busy(register, true);
  try {
    const res = await api('auth/register', { method: 'POST', body });
    register.hidden = true;
    notice.hidden = false;
    notice.querySelector('[data-email]').textContent = res.user.email;
    notice.querySelector('a').focus();
  } catch (err) {
    fail(register, err);
  } finally {
    busy(register, false);
  }
});

signin.elements.email.focus();
