// A sortable table of cost rows: click (or Enter/Space on) a column header to sort by it;
// aria-sort tells screen readers the order.

import { h } from '../dom.js';
import { count, money } from '../format.js';

/**
 * Renders rows into a new <table>. keys: the grouping columns ([{ key, label }]). Sorted by
 * cost, highest first, until the user picks another column.
 */
export function costTable(rows, keys, caption) {
  const cols = [
    ...keys.map((k) => ({ ...k, text: true, get: (r) => r[k.key] || '—' })),
    { key: 'requests', label: 'Requests', get: (r) => r.requests, show: count },
    { key: 'input', label: 'Input tokens', get: (r) => r.input, show: count },
    { key: 'output', label: 'Output tokens', get: (r) => r.output, show: count },
    { key: 'cacheRead', label: 'Cache read', get: (r) => r.cacheRead, show: count },
    { key: 'costMicros', label: 'Cost', get: (r) => r.costMicros, show: money },
  ];
  let sortBy = 'costMicros';
  let dir = -1;
  const tbody = h('tbody');
  const heads = cols.map((c) => h('th', { scope: 'col', class: c.text ? '' : 'num' },
    h('button', { type: 'button', onclick: () => { dir = sortBy === c.key ? -dir : (c.text ? 1 : -1); sortBy = c.key; draw(); } }, c.label)));
  const table = h('table', { class: 'data' }, h('caption', { class: 'visually-hidden' }, caption),
    h('thead', {}, h('tr', {}, heads)), tbody);

  function draw() {
    const col = cols.find((c) => c.key === sortBy);
    const sorted = [...rows].sort((a, b) => {
      const x = col.get(a), y = col.get(b);
      return (typeof x === 'string' ? x.localeCompare(y) : x - y) * dir;
    });
    cols.forEach((c, i) => {
      if (c.key === sortBy) heads[i].setAttribute('aria-sort', dir > 0 ? 'ascending' : 'descending');
      else heads[i].removeAttribute('aria-sort');
    });
    tbody.replaceChildren(...sorted.map((r) => h('tr', { dataset: { key: keys.map((k) => r[k.key]).join('/'), costMicros: r.costMicros } },
      cols.map((c, i) => (i < keys.length ? h('th', { scope: 'row' }, c.get(r)) : h('td', { class: 'num' }, c.show(c.get(r))))))));
    if (!sorted.length) tbody.append(h('tr', {}, h('td', { colspan: cols.length, class: 'muted' }, 'No usage in this range.')));
  }
  draw();
  return h('div', { class: 'table-wrap' }, table);
}
