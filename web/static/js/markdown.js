// Model text to safe HTML. marked turns the markdown into HTML (raw HTML escaped, see below); DOMPurify (loaded as a
// classic script before the modules, so it is on globalThis) then removes everything that
// could run or load: scripts, event handlers, javascript: URLs, forms, styles, iframes. The
// page's Content-Security-Policy (no inline script) is the second fence behind it.

import { Marked } from '../vendor/marked.esm.js';

const marked = new Marked({ gfm: true, breaks: true, async: false });

const escapeHTML = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

// HTML a model writes is shown as the text it is, never parsed: "<script>" in a reply reads as
// "<script>". Images become links, so a reply cannot load anything by itself.
marked.use({
  renderer: {
    html: (token) => escapeHTML(token.text),
    image: (token) => `<a href="${escapeHTML(token.href)}">${escapeHTML(token.text || token.href)}</a>`,
  },
});

const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select', 'iframe', 'object', 'embed', 'svg', 'math'],
  FORBID_ATTR: ['style', 'class', 'id', 'name'],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|#)/i,
};

let hooked = false;
function purifier() {
  const p = globalThis.DOMPurify;
  if (!p) throw new Error('DOMPurify not loaded');
  if (!hooked) {
    hooked = true;
    // Links from a model open in a new tab and pass no referrer or opener to the target.
    p.addHook('afterSanitizeAttributes', (node) => {
      if (node.tagName === 'A' && node.hasAttribute('href')) {
        node.setAttribute('target', '_blank');
        node.setAttribute('rel', 'noopener noreferrer nofollow');
      }
    });
  }
  return p;
}

/** Returns sanitised HTML for markdown text. */
export function renderMarkdown(text) {
  const html = marked.parse(text || '');
  return purifier().sanitize(html, PURIFY);
}

/** Renders markdown into el and adds a Copy button to each code block. */
export function renderInto(el, text) {
  el.innerHTML = renderMarkdown(text);
  for (const pre of el.querySelectorAll('pre')) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'copy-code';
    b.textContent = 'Copy';
    b.setAttribute('aria-label', 'Copy code');
    b.addEventListener('click', () => navigator.clipboard?.writeText(pre.querySelector('code')?.textContent || pre.textContent));
    pre.append(b);
  }
}
