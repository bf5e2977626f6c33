// The tool picker: a native <select> grouped by category (keyboard and screen readers handle
// it without help), with a search box that narrows its options to the matching tools.

import { h } from '../dom.js';

/**
 * Fills select with tools grouped by category and wires the search box. onChange(tool) runs
 * when the user picks another tool. Returns { current(), set(id) }.
 */
export function toolPicker({ search, select, desc, tools, initial, onChange }) {
  const byId = new Map(tools.map((t) => [t.id, t]));
  const groups = new Map();
  for (const t of tools) {
    if (!groups.has(t.category)) groups.set(t.category, h('optgroup', { label: t.category }));
    groups.get(t.category).append(h('option', { value: t.id, title: t.description }, t.name));
  }
  select.replaceChildren(...groups.values());
  select.value = byId.has(initial) ? initial : tools[0].id;
  const describe = () => { desc.textContent = byId.get(select.value)?.description || ''; };
  describe();

  select.addEventListener('change', () => { describe(); onChange(byId.get(select.value)); });

  const matches = (t, q) => [t.id, t.name, t.category, t.description].some((s) => s.toLowerCase().includes(q));
  search.addEventListener('input', () => {
    const q = search.value.trim().toLowerCase();
    let shown = 0;
    for (const g of select.querySelectorAll('optgroup')) {
      let any = false;
      for (const o of g.querySelectorAll('option')) {
        o.hidden = q !== '' && !matches(byId.get(o.value), q);
        if (!o.hidden) { any = true; shown++; }
      }
      g.hidden = !any;
    }
    search.setAttribute('aria-description', `${shown} matching tools`);
  });
  // Enter in the search box picks the first match, so a keyboard user can type and go.
  search.addEventListener('keydown', (e) => {
    if (e.key !== 'Enter') return;
    e.preventDefault();
    const first = select.querySelector('option:not([hidden])');
    if (first && first.value !== select.value) {
      select.value = first.value;
      select.dispatchEvent(new Event('change'));
    }
    select.focus();
  });

  return { current: () => byId.get(select.value), set: (id) => { if (byId.has(id)) { select.value = id; describe(); } } };
}
