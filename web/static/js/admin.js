// The admin cost dashboard: every figure comes from GET admin/costs (docs: billing package).
// A chart of cost per day stacked by provider, totals, top users, and sortable breakdowns by
// provider, model, tool and user with their CSV export, for a chosen UTC date range.

import { api, ApiError, url } from './api.js';
import { $, h } from './dom.js';
import { count, money, utcDay } from './format.js';
import { requireUser } from './session.js';
import { costTable } from './admin/table.js';
import { drawCostChart } from './admin/chart.js';

const BREAKDOWNS = [
  { id: 'provider', label: 'Provider', groupBy: 'provider', keys: [{ key: 'provider', label: 'Provider' }] },
  { id: 'model', label: 'Model', groupBy: 'provider,model', keys: [{ key: 'provider', label: 'Provider' }, { key: 'model', label: 'Model' }] },
  { id: 'tool', label: 'Tool', groupBy: 'tool', keys: [{ key: 'tool', label: 'Tool' }] },
  { id: 'user', label: 'User', groupBy: 'user', keys: [{ key: 'user', label: 'User' }] },
];

const form = $('#range');
const errorEl = $('#admin-error');
let reports = {};
let selected = 'provider';

function costs(from, to, groupBy, extra = '') {
  return api(`admin/costs?from=${from}&to=${to}&groupBy=${groupBy}${extra}`);
}

function csvLink(b, from, to) {
  return h('a', { class: 'csv', href: url(`admin/costs?from=${from}&to=${to}&groupBy=${b.groupBy}&format=csv`), download: `costs-${b.id}-${from}-${to}.csv` }, `Export ${b.label.toLowerCase()} CSV`);
}

function showBreakdown(from, to) {
  const b = BREAKDOWNS.find((x) => x.id === selected);
  for (const tab of document.querySelectorAll('#breakdown-tabs [role=tab]')) {
    const on = tab.dataset.id === selected;
    tab.setAttribute('aria-selected', String(on));
    tab.tabIndex = on ? 0 : -1;
  }
  $('#breakdown').replaceChildren(csvLink(b, from, to), costTable(reports[b.id].rows, b.keys, `Cost by ${b.label.toLowerCase()}`));
}

async function load() {
  const from = form.elements.from.value;
  const to = form.elements.to.value;
  errorEl.textContent = '';
  try {
    const [byDay, top, ...parts] = await Promise.all([
      costs(from, to, 'day,provider'), costs(from, to, 'user', '&limit=10'), ...BREAKDOWNS.map((b) => costs(from, to, b.groupBy)),
    ]);
    reports = Object.fromEntries(BREAKDOWNS.map((b, i) => [b.id, parts[i]]));
    const t = reports.provider.totals;
    $('#totals').replaceChildren(...[
      ['Cost', money(t.costMicros)], ['Requests', count(t.requests)], ['Input tokens', count(t.input)],
      ['Output tokens', count(t.output)], ['Cache read', count(t.cacheRead)],
    ].map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))));
    $('#totals').dataset.costMicros = String(t.costMicros);
    drawCostChart($('#chart'), byDay.rows, from, to);
    $('#top-users').replaceChildren(costTable(top.rows, [{ key: 'user', label: 'User' }], 'Top users by cost'));
    showBreakdown(from, to);
    document.body.dataset.loaded = `${from}..${to}`; // for the browser tests
  } catch (err) {
    errorEl.textContent = err instanceof ApiError && err.status === 403 ? 'Admins only.' : `Could not load costs: ${err.message}`;
  }
}

const me = await requireUser();
if (me.user.role !== 'admin') {
  errorEl.textContent = 'This page is for admins only.';
  $('#range').hidden = true;
} else {
  const today = new Date();
  form.elements.to.value = utcDay(today);
  form.elements.from.value = utcDay(new Date(today.getTime() - 29 * 86400e3));
  const tabs = $('#breakdown-tabs');
  for (const b of BREAKDOWNS) {
    tabs.append(h('button', { role: 'tab', type: 'button', dataset: { id: b.id }, 'aria-controls': 'breakdown',
      onclick: () => { selected = b.id; showBreakdown(form.elements.from.value, form.elements.to.value); } }, b.label));
  }
  tabs.addEventListener('keydown', (e) => {
    if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') return;
    const i = BREAKDOWNS.findIndex((b) => b.id === selected);
    selected = BREAKDOWNS[(i + (e.key === 'ArrowRight' ? 1 : BREAKDOWNS.length - 1)) % BREAKDOWNS.length].id;
    showBreakdown(form.elements.from.value, form.elements.to.value);
    tabs.querySelector('[aria-selected=true]').focus();
  });
  form.addEventListener('submit', (e) => { e.preventDefault(); load(); });
  await load();
}
