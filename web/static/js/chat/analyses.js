// "Attach analysis": the user's recent analyses of the tool (GET api/{tool}/analyses, newest
// first). Without a choice the server attaches the three most recent itself. A server without
// the route (404) simply offers no list.

import { api, ApiError } from '../api.js';
import { h } from '../dom.js';
import { when } from '../format.js';

/** Refills select with the tool's analyses; never throws. */
export async function loadAnalyses(select, tool) {
  select.replaceChildren(h('option', { value: '' }, 'Recent analyses (automatic)'));
  let list = [];
  try {
    const res = await api(`api/${encodeURIComponent(tool)}/analyses?limit=10`);
    list = Array.isArray(res) ? res : (res && res.analyses) || [];
  } catch (err) {
    if (!(err instanceof ApiError)) console.warn('analyses:', err);
    return; // 404 (route not deployed) or no access: keep the automatic choice only
  }
  for (const a of list.slice(0, 10)) {
    if (!a || !a.id) continue;
    select.append(h('option', { value: a.id }, describe(a)));
  }
}

function describe(a) {
  const parts = [when(a.createdAt)];
  if (a.ipAddress) parts.push(a.ipAddress);
  const r = a.result || {};
  if (r.riskScore !== undefined) parts.push(`risk ${r.riskScore}`);
  if (r.threatLevel) parts.push(r.threatLevel);
  return parts.filter(Boolean).join(' · ') || a.id;
}
