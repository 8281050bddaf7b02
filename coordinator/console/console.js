// The operator console: plain DOM over the same REST API and tokens as every other client.
// Everything shown is built with textContent, never innerHTML, so no value from the log can inject markup.
const main = document.getElementById('main');
const status = document.getElementById('status');
const tokenInput = document.getElementById('token');
const TOKEN_KEY = 'tpc-token';

tokenInput.value = sessionStorage.getItem(TOKEN_KEY) ?? '';
document.getElementById('token-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, tokenInput.value.trim());
  await renewSession(true);
  route();
});

// The queue dashboard cannot send a header, so it reads a session cookie that POST /v1/session
// issues for the token. The session lasts an hour: it is renewed while the console is in use and
// just before the dashboard is opened, so an operator at work never meets an expired one.
let sessionRenewedAt = 0;
async function renewSession(force = false) {
  if (!sessionStorage.getItem(TOKEN_KEY)) return;
  if (!force && Date.now() - sessionRenewedAt < 300_000) return;
  sessionRenewedAt = Date.now();
  await fetch('../v1/session', { method: 'POST', headers: headers() }).catch(() => {});
}
document.getElementById('queues-link').addEventListener('click', async (e) => {
  e.preventDefault();
  const href = e.currentTarget.href;
  await renewSession(true);
  location.href = href;
});

function headers(json = false) {
  const h = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) h.authorization = `Bearer ${token}`;
  if (json) h['content-type'] = 'application/json';
  return h;
}

async function api(path, options = {}) {
  const res = await fetch(`..${path}`, { ...options, headers: headers(options.body !== undefined) });
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    const err = new Error(body?.detail ?? body?.title ?? `HTTP ${res.status}`);
    err.status = res.status;
    err.problem = body;
    throw err;
  }
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(c ?? ''));
  return node;
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : '—');
const short = (id) => id.slice(0, 8);

function badges(t) {
  return [
    t.inDoubt ? el('span', { class: 'badge warn' }, 'in doubt') : '',
    t.heuristic ? el('span', { class: 'badge bad' }, 'heuristic') : '',
  ];
}

function say(text) {
  status.textContent = text;
}

async function showList() {
  const gen = generation;
  const params = new URLSearchParams(location.hash.split('?')[1] ?? '');
  const statusFilter = params.get('status') ?? '';
  const resourceFilter = params.get('resource') ?? '';
  const cursor = params.get('cursor') ?? '';
  const limit = params.get('limit') ?? '100';
  const query = new URLSearchParams({ limit });
  if (statusFilter) query.set('status', statusFilter);
  if (resourceFilter) query.set('resource', resourceFilter);
  if (cursor) query.set('cursor', cursor);
  // The in-doubt ones head the first page only; later pages continue the list where it stopped.
  const [inDoubt, all] = await Promise.all([cursor ? { items: [] } : api('/v1/transactions?inDoubt=true&limit=100'), api(`/v1/transactions?${query}`)]);
  const seen = new Set(inDoubt.items.map((t) => t.id));
  // In-doubt transactions first: they are the ones waiting for a human.
  const rows = [...inDoubt.items, ...all.items.filter((t) => !seen.has(t.id))];

  const statusSelect = el('select', { id: 'filter-status', name: 'status' },
    ...['', 'active', 'preparing', 'committing', 'aborting', 'committed', 'aborted'].map((s) => el('option', { value: s, selected: s === statusFilter }, s || 'any')));
  const resourceInput = el('input', { id: 'filter-resource', name: 'resource', value: resourceFilter, placeholder: 'any' });
  const filters = el('form', { class: 'filters', onsubmit: (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (params.get('limit')) q.set('limit', params.get('limit'));
    if (statusSelect.value) q.set('status', statusSelect.value);
    if (resourceInput.value.trim()) q.set('resource', resourceInput.value.trim());
    location.hash = `#/?${q}`;
  } },
  el('label', {}, 'Status', statusSelect), el('label', {}, 'Resource', resourceInput), el('button', { type: 'submit' }, 'Filter'));

  const table = el('table', {},
    el('thead', {}, el('tr', {}, ...['Transaction', 'Status', 'Flags', 'Resources', 'Created', 'Attempts', 'Last error'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, ...rows.map((t) => el('tr', { class: t.heuristic ? 'heuristic' : t.inDoubt ? 'in-doubt' : undefined },
      el('td', {}, el('a', { href: `#/tx/${t.id}` }, el('code', {}, short(t.id)))),
      el('td', {}, t.status),
      el('td', {}, ...badges(t)),
      el('td', {}, t.resources.join(', ')),
      el('td', {}, when(t.createdAt)),
      el('td', {}, String(t.attempts)),
      el('td', {}, t.lastError?.message ?? '')))));
  const pageLink = (c) => {
    const q = new URLSearchParams(params);
    if (c) q.set('cursor', c); else q.delete('cursor');
    return `#/?${q}`;
  };
  const paging = el('p', { class: 'paging' },
    cursor ? el('a', { href: pageLink(null), id: 'first-page' }, '← newest') : '',
    cursor && all.next ? ' · ' : '',
    all.next ? el('a', { href: pageLink(all.next), id: 'next-page' }, 'older →') : '');
  if (gen !== generation) return; // a later navigation has taken the page
  main.replaceChildren(el('h2', {}, cursor ? 'Transactions (older)' : `Transactions (${inDoubt.items.length} in doubt)`), filters,
    rows.length ? table : el('p', {}, 'No transactions match.'), paging);
  say(`${rows.length} transactions`);
}

/**
 * A modal that asks for a reason (every operator action is audited with one), runs `act` with it
 * and hands its outcome, or the refusal, to `onDone`.
 */
function reasonDialog({ id, reasonId, title, intro = [], extra = [], submit, act, onDone }) {
  const reason = el('textarea', { id: reasonId, name: 'reason', required: true, rows: 3 });
  const dialog = el('dialog', { 'aria-labelledby': `${id}-title` });
  const close = () => { dialog.close(); dialog.remove(); };
  const form = el('form', { method: 'dialog', onsubmit: async (e) => {
    e.preventDefault();
    close();
    try {
      onDone(el('div', { class: 'ok', role: 'alert' }, await act(reason.value)));
    } catch (err) {
      onDone(el('div', { class: 'refusal', role: 'alert' }, el('strong', {}, `Refused (${err.status}): `), err.message));
    }
  } },
  el('h3', { id: `${id}-title` }, title), ...intro,
  el('label', { for: reasonId }, 'Reason (recorded in the audit trail)'), reason, ...extra,
  el('div', { class: 'actions' }, el('button', { type: 'submit' }, submit), el('button', { type: 'button', onclick: close }, 'Cancel')));
  dialog.append(form);
  document.body.append(dialog);
  dialog.showModal();
  reason.focus();
}

function resolveDialog(id, outcome, onDone) {
  const force = el('input', { id: 'force', type: 'checkbox', name: 'force' });
  reasonDialog({
    id: 'resolve',
    reasonId: 'reason',
    title: `${outcome === 'commit' ? 'Commit' : 'Abort'} transaction ${short(id)}`,
    extra: [el('label', {}, force, ' Force against a written decision (records a heuristic outcome)')],
    submit: 'Resolve',
    onDone,
    act: async (reason) => {
      const r = await api(`/v1/transactions/${id}/resolve`, { method: 'POST', body: JSON.stringify({ outcome, reason, force: force.checked }) });
      return `Resolved (${r.action}): ${r.result}; the transaction is now ${r.transaction.status}.`;
    },
  });
}

async function showTransaction(id) {
  const gen = generation;
  const t = await api(`/v1/transactions/${id}`);
  const outcomeBox = el('div', { id: 'outcome' });
  const live = (b) => {
    if (!b.live) return '—';
    if (!b.live.reachable) return `unreachable: ${b.live.error}`;
    return b.live.prepared ? `prepared since ${when(b.live.preparedAt)}, ${b.live.locks} lock(s)` : 'not prepared';
  };
  const details = t.branchDetails ?? [];
  const branches = el('table', { id: 'branches' },
    el('thead', {}, el('tr', {}, ...['Resource', 'In the log', 'Live on its database', 'xid', 'Last error', 'Heuristic'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, ...t.branches.map((b, i) => el('tr', {},
      el('td', {}, b.resource),
      el('td', {}, b.status + (b.readOnly ? ' (read-only)' : '')),
      el('td', {}, live(details[i] ?? {})),
      el('td', {}, details[i]?.xid ?? '—'),
      el('td', {}, details[i]?.lastError?.message ?? ''),
      el('td', {}, details[i]?.heuristic ?? '')))));
  const timeline = el('ol', { class: 'timeline', id: 'events' }, ...t.events.map((e) => el('li', {},
    el('time', { datetime: e.at }, when(e.at)), ' ', el('strong', {}, e.kind), e.actor ? ` by ${e.actor}` : '',
    ' ', el('code', {}, JSON.stringify(e.detail)))));
  const finished = t.status === 'committed' || t.status === 'aborted';
  const reload = (box) => showTransaction(id).then(() => document.getElementById('outcome')?.replaceChildren(box));
  if (gen !== generation) return;
  main.replaceChildren(
    el('p', {}, el('a', { href: '#/' }, '← all transactions')),
    el('h2', {}, 'Transaction ', el('code', {}, t.id)),
    el('p', {}, el('strong', {}, t.status), ' ', ...badges(t), ` — deadline ${when(t.deadline)}, decided ${when(t.decidedAt)}, completed ${when(t.completedAt)}, attempts ${t.attempts}`),
    t.error ? el('p', {}, `Error: ${t.error.code} — ${t.error.message}`) : '',
    el('h3', {}, 'Branches'), branches,
    finished ? '' : el('div', { class: 'actions' },
      el('button', { id: 'resolve-commit', onclick: () => resolveDialog(id, 'commit', reload) }, 'Commit…'),
      el('button', { id: 'resolve-abort', onclick: () => resolveDialog(id, 'abort', reload) }, 'Abort…')),
    outcomeBox,
    el('h3', {}, 'Events'), timeline);
  say(`transaction ${short(id)}: ${t.status}`);
}

function orphanDialog(o, onDone) {
  reasonDialog({
    id: 'orphan',
    reasonId: 'orphan-reason',
    title: `Roll back ${o.gid}`,
    intro: [el('p', {}, `A branch prepared on ${o.resource} that the log does not know. Reconciliation rolls it back once it is older than the longest deadline; this does it now.`)],
    submit: 'Roll back',
    onDone,
    act: async (reason) => {
      const r = await api('/v1/orphans/resolve', { method: 'POST', body: JSON.stringify({ resource: o.resource, gid: o.gid, outcome: 'abort', reason }) });
      return `Rolled back ${o.gid} on ${o.resource}: ${r.result}.`;
    },
  });
}

// Each participant database as the coordinator sees it, and the prepared branches nobody owns.
async function showResources() {
  const gen = generation;
  const [resources, orphans] = await Promise.all([api('/v1/resources'), api('/v1/orphans')]);
  const yes = (v) => (v ? 'yes' : el('span', { class: 'badge bad' }, 'no'));
  const table = el('table', { id: 'resources' },
    el('thead', {}, el('tr', {}, ...['Resource', 'Kind', 'Reachable', 'Usable', 'Prepared', 'Oldest (s)', 'Message'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, ...resources.items.map((r) => el('tr', {},
      el('td', {}, el('a', { href: `#/?resource=${encodeURIComponent(r.resource)}` }, r.resource)),
      el('td', {}, r.kind), el('td', {}, yes(r.reachable)), el('td', {}, yes(r.usable)),
      el('td', {}, r.prepared ?? '—'), el('td', {}, r.oldestPreparedSeconds ?? '—'), el('td', {}, r.message ?? '')))));
  const outcomeBox = el('div', { id: 'orphan-outcome' });
  const reload = (box) => showResources().then(() => document.getElementById('orphan-outcome')?.replaceChildren(box));
  const orphanTable = el('table', { id: 'orphans' },
    el('thead', {}, el('tr', {}, ...['Resource', 'Gid', 'Prepared', 'Age (s)', ''].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, ...orphans.items.map((o) => el('tr', {},
      el('td', {}, o.resource), el('td', {}, el('code', {}, o.gid)), el('td', {}, when(o.preparedAt)), el('td', {}, String(o.ageSeconds)),
      el('td', {}, el('button', { class: 'orphan-rollback', onclick: () => orphanDialog(o, reload) }, 'Roll back…'))))));
  if (gen !== generation) return;
  main.replaceChildren(
    el('p', {}, el('a', { href: '#/' }, '← all transactions')),
    el('h2', {}, 'Resources'), table,
    el('h2', {}, `Orphans (${orphans.items.length})`),
    orphans.unreachable.length ? el('p', { class: 'refusal' }, `Not checked, unreachable: ${orphans.unreachable.join(', ')}`) : '',
    orphans.items.length ? orphanTable : el('p', {}, 'No prepared branch of this namespace is unknown to the log.'),
    outcomeBox);
  say(`${resources.items.length} resources, ${orphans.items.length} orphans`);
}

/*
 * Each navigation has a number; a view renders only if no later navigation has begun. Otherwise a
 * slow answer for an earlier one (the list fetched at sign-in, say) lands after the newer view and
 * replaces it: seen on a loaded machine as a paged list overwritten by the first page.
 */
let generation = 0;

async function route() {
  const mine = ++generation;
  const hash = location.hash || '#/';
  renewSession();
  try {
    const m = /^#\/tx\/([0-9a-f-]{36})/.exec(hash);
    if (m) await showTransaction(m[1]);
    else if (hash.startsWith('#/resources')) await showResources();
    else await showList();
  } catch (err) {
    if (mine !== generation) return;
    main.replaceChildren(el('div', { class: 'refusal', role: 'alert' },
      err.status === 401 ? 'Enter an API token above (scope read to look, operate to act).' : `Could not load: ${err.message}`));
  }
}

window.addEventListener('hashchange', route);
route();
