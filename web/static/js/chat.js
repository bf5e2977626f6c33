// The chat page: wires the pickers, the conversations sidebar, the transcript and the composer
// to one JS SDK client (the same @maula/chat third parties use). The SDK owns the protocol:
// cancel, typed errors, and the redial + resume after a dropped connection that keeps a reply's
// text whole and single.

import { connect, ConnectionLostError, ClosedError, InsufficientCreditsError, RateLimitError } from '../sdk/index.js';
import { api, serverURL } from './api.js';
import { $, h } from './dom.js';
import { count } from './format.js';
import { requireUser } from './session.js';
import { toolPicker } from './chat/tool-picker.js';
import { modelPicker } from './chat/model-picker.js';
import { loadAnalyses } from './chat/analyses.js';
import { Sidebar } from './chat/sidebar.js';
import { Transcript } from './chat/transcript.js';
import { Composer } from './chat/composer.js';

const transcript = new Transcript($('#transcript'));
const creditsEl = $('#credits');
const state = { tool: null, sessionId: null, running: null };
let client = null;

function setCredits(n) {
  if (n === undefined || n === null) return;
  creditsEl.textContent = `${count(n)} credits`;
  creditsEl.classList.toggle('low', n < 10);
}

/** The SDK client, (re)connected when a previous one gave up. */
async function getClient() {
  if (!client) client = connect(serverURL()).catch((err) => { client = null; throw err; });
  return client;
}

/** Keeps ?tool=&session= in the address bar so a reload reopens the same conversation. */
function saveLocation() {
  const q = new URLSearchParams();
  q.set('tool', state.tool);
  if (state.sessionId) q.set('session', state.sessionId);
  history.replaceState(null, '', `chat?${q}`);
  localStorage.setItem('maula.tool', state.tool);
}

function errorText(err) {
  if (err instanceof InsufficientCreditsError) return 'You have no AI credits left on your plan.';
  if (err instanceof RateLimitError) return `Too many messages: try again in ${Math.ceil((err.retryAfterMs || 1000) / 1000)} s.`;
  if (err instanceof ConnectionLostError) return 'The connection to the server was lost.';
  return err && err.message ? err.message : String(err);
}

async function openSession(sessionId) {
  if (state.running) return;
  state.sessionId = sessionId;
  sidebar.mark(sessionId);
  closeDrawer();
  saveLocation();
  transcript.clear();
  await loadHistory(sessionId);
}

/** Loads a page of history (oldest messages last page first) and offers the earlier ones. */
async function loadHistory(sessionId, before) {
  let page;
  try {
    page = await (await getClient()).history(state.tool, sessionId, { limit: 50, before });
  } catch (err) {
    transcript.clear(`Could not load the conversation: ${errorText(err)}`);
    return;
  }
  if (sessionId !== state.sessionId) return;
  const prevHeight = transcript.el.scrollHeight;
  const holder = document.createDocumentFragment();
  const tmp = new Transcript(holder);
  for (const m of page.messages) {
    if (m.role === 'user') tmp.addUser(m.message);
    else tmp.addAssistantDone(m);
  }
  transcript.el.querySelector('.load-earlier')?.remove();
  transcript.prepend(holder);
  if (page.hasMore && page.messages.length) {
    const oldest = page.messages[0].timestamp;
    transcript.prepend(h('button', { type: 'button', class: 'link-button load-earlier', onclick: () => loadHistory(sessionId, oldest) }, 'Load earlier messages'));
  }
  if (before) transcript.el.scrollTop = transcript.el.scrollHeight - prevHeight;
  else transcript.scroll();
}

function newConversation() {
  if (state.running) return;
  state.sessionId = null;
  sidebar.mark(null);
  saveLocation();
  transcript.clear(`Ask ${tools.current().name} anything. Enter sends; Shift+Enter adds a line.`);
  closeDrawer();
  $('#composer-input').focus();
}

async function send(message, retryView) {
  if (retryView) retryView.remove();
  else transcript.addUser(message);
  const view = transcript.addAssistant();
  const { provider, model } = models.current();
  const ac = new AbortController();
  state.running = { ac, view };
  composer.setRunning(true);
  let timer;
  try {
    const c = await getClient();
    const reply = c.chat({ tool: state.tool, provider, model, message, sessionId: state.sessionId || undefined,
      analysisId: $('#analysis').value || undefined }, { signal: ac.signal });
    timer = setInterval(() => {
      if (reply.progress) { view.progress(reply.progress); setCredits(reply.progress.creditsLeft); }
    }, 500);
    for await (const piece of reply) {
      if (!state.sessionId && reply.sessionId) { state.sessionId = reply.sessionId; saveLocation(); }
      view.append(piece);
    }
    const r = await reply.result;
    view.finish(r);
    setCredits(r.creditsLeft);
    if (!state.sessionId) { state.sessionId = r.sessionId; saveLocation(); }
    sidebar.load(c, state.tool).then(() => sidebar.mark(state.sessionId));
  } catch (err) {
    if (err instanceof ConnectionLostError || err instanceof ClosedError) client = null; // dial afresh next time
    const retry = err instanceof InsufficientCreditsError ? null : () => send(message, view);
    view.fail(errorText(err), retry);
  } finally {
    clearInterval(timer);
    state.running = null;
    composer.setRunning(false);
  }
}

function closeDrawer() {
  $('#sidebar').classList.remove('open');
  $('#sidebar-toggle').setAttribute('aria-expanded', 'false');
}

$('#sidebar-toggle').addEventListener('click', () => {
  const open = $('#sidebar').classList.toggle('open');
  $('#sidebar-toggle').setAttribute('aria-expanded', String(open));
  if (open) $('#new-chat').focus();
});
$('#new-chat').addEventListener('click', newConversation);

const composer = new Composer({
  form: $('#composer'), input: $('#composer-input'), send: $('#send'), stop: $('#stop'),
  onSend: (text) => send(text),
  onStop: () => state.running && state.running.ac.abort(),
});
const sidebar = new Sidebar({ list: $('#sessions'), more: $('#more-sessions'), onOpen: openSession });

// Start: who is signed in, then the tools, providers and balance together.
const me = await requireUser();
const [toolRes, provRes, sub] = await Promise.all([
  api('api/tools'), api('api/providers'), api('auth/subscription').catch(() => null),
]);
if (sub) setCredits(sub.balance);
const params = new URLSearchParams(location.search);
const tools = toolPicker({
  search: $('#tool-search'), select: $('#tool'), desc: $('#tool-desc'), tools: toolRes.tools,
  initial: params.get('tool') || localStorage.getItem('maula.tool') || 'ipintel',
  onChange: (t) => switchTool(t.id),
});
const models = modelPicker({ providerSelect: $('#provider'), modelSelect: $('#model'), providers: provRes.providers,
  preferred: me.user.preferences && me.user.preferences.defaultLLM });
if (!models.available()) transcript.clear('No AI provider is available on this server.');

async function switchTool(id, sessionId = null) {
  if (state.running) state.running.ac.abort();
  state.tool = id;
  loadAnalyses($('#analysis'), id);
  const c = await getClient();
  await sidebar.load(c, id);
  if (sessionId) await openSession(sessionId);
  else newConversation();
}

try {
  await switchTool(tools.current().id, params.get('session'));
} catch (err) {
  // E.g. the socket could not be opened: say so where the reply would be; sending retries.
  transcript.clear(`Could not reach the chat server: ${errorText(err)}`);
}
document.body.dataset.ready = 'true'; // for the browser tests: the page is wired
