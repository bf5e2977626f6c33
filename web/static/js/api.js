// HTTP helpers shared by the pages. Every path is relative ("auth/me", never "/auth/me") so
// that it resolves against the page's <base href>, which the server sets to MAULA_BASE_PATH:
// the same code works at the root, on another port and behind a path prefix.

/** An HTTP error answer, with the server's {"error":{"code","message"}} fields. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.code = code || 'http_' + status;
  }
}

/** Resolves a relative path against the base path. */
export function url(path) {
  return new URL(path, document.baseURI).href;
}

/**
 * Calls a JSON route. body (an object) is sent as JSON. Resolves with the parsed answer (or
 * null for an empty one); rejects with ApiError for a non-2xx answer.
 */
export async function api(path, { method = 'GET', body, signal } = {}) {
  const init = { method, credentials: 'same-origin', signal, headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url(path), init);
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const e = (data && data.error) || {};
    throw new ApiError(res.status, e.code, e.message);
  }
  return data;
}

/** The server's root URL (with the base path), as the JS SDK's connect() wants it. */
export function serverURL() {
  return url('./');
}
