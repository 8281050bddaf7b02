// The operator console: plain DOM modules over the same REST API and tokens as every other client,
// all served by the coordinator (no external script, font or style).
import { renewSession, token } from './api.js';
import { el } from './dom.js';
import { listView } from './list-view.js';
import { resourcesView } from './resources-view.js';
import { transactionView } from './transaction-view.js';

// Two seconds: a new in-doubt transaction shows while the operator is still looking, for one count
// and two list pages per tick per open console (none while hidden, paused or in a dialog).
const REFRESH_MS = 2000;

const main = document.getElementById('main');
const status = document.getElementById('status');
const banner = document.getElementById('banner');
const tokenInput = document.getElementById('token');
const liveBox = document.getElementById('live');
const liveState = document.getElementById('live-state');

const say = (text) => {
  status.textContent = text;
};

tokenInput.value = token.get();
document.getElementById('token-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  token.set(tokenInput.value.trim());
  await renewSession(true);
  route();
});
document.getElementById('queues-link').addEventListener('click', async (e) => {
  e.preventDefault();
  const href = e.currentTarget.href;
  await renewSession(true);
  location.href = href;
});

function showError(err) {
  banner.replaceChildren(
    el(
      'div',
      { class: 'refusal', role: 'alert' },
      err.status === 401 ? 'Enter an API token above (scope read to look, operate to act).' : `Could not load: ${err.message}`,
    ),
  );
}

/*
 * Each navigation has a number; a view's answer is shown only if no later navigation has begun.
 * Otherwise a slow answer for an earlier one (the list fetched at sign-in, say) lands after the
 * newer view and replaces it: seen on a loaded machine as a paged list overwritten by the first page.
 */
let generation = 0;
let current = null;
let refreshing = false;
let refreshes = 0;

async function run(view, mine) {
  refreshing = true;
  try {
    await view.refresh();
    if (mine !== generation) return;
    banner.replaceChildren();
    refreshes += 1;
    document.body.dataset.refreshes = String(refreshes);
    liveState.textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    if (mine === generation) showError(err);
  } finally {
    refreshing = false;
  }
}

function route() {
  const mine = ++generation;
  const hash = location.hash || '#/';
  renewSession();
  const m = /^#\/tx\/([^/?]+)/.exec(hash);
  const view = m ? transactionView(decodeURIComponent(m[1]).toLowerCase(), say) : hash.startsWith('#/resources') ? resourcesView(say) : listView(say);
  current = view;
  main.replaceChildren(view.root);
  return run(view, mine);
}

/** Why the live refresh waits, or null when it may run. */
function pausedBecause() {
  if (!liveBox.checked) return 'paused';
  if (document.querySelector('dialog[open]')) return 'paused while a dialog is open';
  if (document.hidden) return 'paused while the tab is hidden';
  return null;
}

setInterval(() => {
  if (!current?.live || refreshing) return;
  const why = pausedBecause();
  if (why) {
    liveState.textContent = why;
    return;
  }
  run(current, generation);
}, REFRESH_MS);

liveBox.addEventListener('change', () => {
  liveState.textContent = liveBox.checked ? 'live' : 'paused';
});
window.addEventListener('hashchange', route);
route();
