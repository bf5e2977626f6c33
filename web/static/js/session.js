// The signed-in user of a page: loads /auth/me, sends visitors without a session to the
// sign-in page, applies the theme and wires the header (admin link, theme, sign out).

import { api, ApiError, url } from './api.js';
import { applyTheme, themeToggle } from './theme.js';

/** Resolves with /auth/me's answer, or redirects to the sign-in page and never resolves. */
export async function requireUser() {
  try {
    const me = await api('auth/me');
    applyTheme(me.user.preferences && me.user.preferences.theme);
    wireHeader(me);
    return me;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      const next = location.pathname.split('/').pop() || 'chat';
      location.replace(url('./?next=' + encodeURIComponent(next)));
      return new Promise(() => {});
    }
    throw err;
  }
}

function wireHeader(me) {
  if (me.user.role === 'admin') document.querySelectorAll('[data-admin-only]').forEach((el) => { el.hidden = false; });
  const t = document.getElementById('theme-toggle');
  if (t) themeToggle(t);
  const out = document.getElementById('signout');
  if (out) {
    out.addEventListener('click', async () => {
      try { await api('auth/logout', { method: 'POST' }); } catch { /* signed out either way */ }
      location.replace(url('./'));
    });
  }
}
