import { api, canonicalIdPrefix } from './api.js';
import { STATUSES, el, elapsed, flagBadges, lastErrorInWords, reasonInWords, short, statusBadge, timeEl } from './dom.js';

const WINDOWS = { '15m': 15 * 60_000, '1h': 3_600_000, '24h': 86_400_000, '7d': 7 * 86_400_000 };
const WINDOW_LABELS = { '': 'any time', '15m': 'last 15 min', '1h': 'last hour', '24h': 'last 24 h', '7d': 'last 7 days' };
const FILTER_KEYS = ['id', 'status', 'inDoubt', 'resource', 'window', 'from', 'to', 'limit'];

/** since/before for the API: a preset slides with the clock (recomputed at each refresh); from/to are fixed. */
function timeWindow(p) {
  const w = {};
  if (WINDOWS[p.get('window')]) w.since = new Date(Date.now() - WINDOWS[p.get('window')]).toISOString();
  const from = p.get('from') && new Date(p.get('from'));
  const to = p.get('to') && new Date(p.get('to'));
  if (from && !Number.isNaN(from.getTime())) w.since = from.toISOString();
  if (to && !Number.isNaN(to.getTime())) w.before = to.toISOString();
  return w;
}

function row(t) {
  const finished = t.status === 'committed' || t.status === 'aborted';
  // lastError is the latest failed phase-2 attempt: news only while the transaction is unfinished.
  const reason = t.error ? reasonInWords(t.error) : !finished && t.lastError ? `Retrying: ${lastErrorInWords(t.lastError)}` : '';
  const cell = (label, ...content) => el('td', { 'data-label': label }, ...content);
  return el(
    'tr',
    { class: t.heuristic ? 'heuristic' : t.inDoubt ? 'in-doubt' : undefined, 'data-id': t.id },
    cell('Transaction', el('a', { href: `#/tx/${t.id}`, title: t.id }, el('code', {}, short(t.id)))),
    cell('Status', statusBadge(t.status), ' ', ...flagBadges(t)),
    cell('Resources', t.resources.join(', ')),
    cell('Created', timeEl(t.createdAt)),
    cell('Duration', elapsed(t)),
    cell('Attempts', String(t.attempts)),
    cell('Reason', reason ? el('span', { class: 'reason' }, reason) : ''),
  );
}

function table(rows) {
  return el(
    'table',
    { class: 'cards', id: 'transactions' },
    el(
      'thead',
      {},
      el('tr', {}, ...['Transaction', 'Status', 'Resources', 'Created', 'Duration', 'Attempts', 'Reason'].map((h) => el('th', { scope: 'col' }, h))),
    ),
    el('tbody', {}, ...rows.map(row)),
  );
}

/** The list: built once per navigation; refresh() replaces the counts and rows only, so typing in the filters is never lost. */
export function listView(say) {
  const params = new URLSearchParams(location.hash.split('?')[1] ?? '');
  const hashWith = (changes) => {
    const q = new URLSearchParams();
    for (const k of FILTER_KEYS) if (params.get(k)) q.set(k, params.get(k));
    for (const [k, v] of Object.entries(changes))
      if (v) q.set(k, v);
      else q.delete(k);
    return `#/?${q}`;
  };

  const idInput = el('input', {
    id: 'filter-id',
    name: 'id',
    value: params.get('id') ?? '',
    placeholder: 'e.g. 3f2a9c01',
    autocomplete: 'off',
    spellcheck: 'false',
    maxlength: 36,
  });
  const statusSelect = el(
    'select',
    { id: 'filter-status', name: 'status' },
    ...['', ...STATUSES].map((s) => el('option', { value: s, selected: s === (params.get('status') ?? '') }, s || 'any')),
  );
  const resourceInput = el('input', { id: 'filter-resource', name: 'resource', value: params.get('resource') ?? '', placeholder: 'any', maxlength: 63 });
  const windowSelect = el(
    'select',
    { id: 'filter-window', name: 'window' },
    ...Object.entries(WINDOW_LABELS).map(([v, label]) => el('option', { value: v, selected: v === (params.get('window') ?? '') }, label)),
  );
  const fromInput = el('input', { id: 'filter-from', name: 'from', type: 'datetime-local', step: 1, value: params.get('from') ?? '' });
  const toInput = el('input', { id: 'filter-to', name: 'to', type: 'datetime-local', step: 1, value: params.get('to') ?? '' });
  const idHelp = el('span', { class: 'help', id: 'filter-id-help' }, '');
  const filters = el(
    'form',
    {
      class: 'filters',
      role: 'search',
      onsubmit: (e) => {
        e.preventDefault();
        const id = idInput.value.trim();
        if (id && !canonicalIdPrefix(id)) {
          idHelp.textContent = 'An id or its first 4 or more hex digits (dashes only where an id has them).';
          idInput.focus();
          return;
        }
        location.hash = hashWith({
          id: id.toLowerCase(),
          status: statusSelect.value,
          resource: resourceInput.value.trim(),
          window: windowSelect.value,
          from: fromInput.value,
          to: toInput.value,
          cursor: '',
          inDoubt: '',
        });
      },
    },
    el('label', {}, 'Id or prefix', idInput),
    el('label', {}, 'Status', statusSelect),
    el('label', {}, 'Resource', resourceInput),
    el('label', {}, 'Created', windowSelect),
    el('label', {}, 'From', fromInput),
    el('label', {}, 'To', toInput),
    el('div', { class: 'filter-buttons' }, el('button', { type: 'submit' }, 'Search'), el('a', { href: '#/', id: 'clear-filters' }, 'clear')),
    idHelp,
  );

  const heading = el('h2', {}, 'Transactions');
  const counts = el('ul', { class: 'counts', id: 'counts', 'aria-label': 'Transactions per status' });
  const body = el('div', { id: 'list-body' }, el('p', {}, 'Loading…'));
  const root = el('section', {}, heading, counts, filters, body);

  function showCounts(c) {
    // The API filters by status and in-doubt, not by heuristic: that chip only counts.
    const chip = (label, n, href, cls) =>
      el('li', {}, el(href ? 'a' : 'span', { href, class: `count ${cls}`, 'data-status': label }, el('span', {}, label), ' ', el('strong', {}, String(n))));
    counts.replaceChildren(
      ...STATUSES.map((s) => chip(s, c.byStatus[s] ?? 0, hashWith({ status: s, cursor: '', inDoubt: '', id: '' }), `status-${s}`)),
      chip('in doubt', c.inDoubt, hashWith({ inDoubt: 'true', status: '', cursor: '', id: '' }), 'flag-warn'),
      chip('heuristic', c.heuristic, null, 'flag-bad'),
      chip('total', c.total, hashWith({ status: '', inDoubt: '', cursor: '', id: '' }), 'total'),
    );
  }

  async function searchById(prefix) {
    const canonical = canonicalIdPrefix(prefix);
    if (!canonical) {
      body.replaceChildren(el('p', { class: 'refusal', role: 'alert' }, `"${prefix}" is not an id nor its start: 4 or more hex digits.`));
      return;
    }
    let found;
    try {
      found = await api(`/v1/transactions/lookup?${new URLSearchParams({ id: canonical })}`);
    } catch (err) {
      if (err.status !== 404) throw err;
      heading.textContent = 'Transactions';
      body.replaceChildren(el('p', { id: 'no-match' }, `No transaction id starts with ${canonical}.`));
      say('no match');
      return;
    }
    // A unique prefix (or a whole id) opens the transaction, as the CLI's `tx show` does.
    if (found.unique) {
      location.replace(`#/tx/${found.items[0].id}`);
      return;
    }
    heading.textContent = `${found.items.length}${found.more ? '+' : ''} transactions start with ${canonical}`;
    body.replaceChildren(table(found.items), found.more ? el('p', {}, 'More match: type more of the id.') : '');
    say(`${found.items.length} candidates`);
  }

  async function refresh() {
    if (params.get('id')) return searchById(params.get('id'));
    const win = timeWindow(params);
    const cursor = params.get('cursor') ?? '';
    const query = new URLSearchParams({ limit: params.get('limit') ?? '100', ...win });
    for (const k of ['status', 'resource', 'inDoubt', 'cursor']) if (params.get(k)) query.set(k, params.get(k));
    const countQuery = new URLSearchParams(win);
    if (params.get('resource')) countQuery.set('resource', params.get('resource'));
    // In-doubt ones head the first page unless a filter asks otherwise: they are the ones waiting for a human.
    const inDoubtFirst = !cursor && !params.get('status') && !params.get('inDoubt');
    const inDoubtQuery = new URLSearchParams({ inDoubt: 'true', limit: '100', ...win });
    if (params.get('resource')) inDoubtQuery.set('resource', params.get('resource'));
    const [c, inDoubt, all] = await Promise.all([
      api(`/v1/transactions/counts?${countQuery}`),
      inDoubtFirst ? api(`/v1/transactions?${inDoubtQuery}`) : { items: [] },
      api(`/v1/transactions?${query}`),
    ]);
    const seen = new Set(inDoubt.items.map((t) => t.id));
    const rows = [...inDoubt.items, ...all.items.filter((t) => !seen.has(t.id))];
    showCounts(c);
    heading.textContent = cursor ? 'Transactions (older)' : `Transactions (${c.inDoubt} in doubt)`;
    const paging = el(
      'p',
      { class: 'paging' },
      cursor ? el('a', { href: hashWith({ cursor: '' }), id: 'first-page' }, '← newest') : '',
      cursor && all.next ? ' · ' : '',
      all.next ? el('a', { href: hashWith({ cursor: all.next }), id: 'next-page' }, 'older →') : '',
    );
    body.replaceChildren(rows.length ? table(rows) : el('p', {}, 'No transactions match.'), paging);
    say(`${rows.length} transactions`);
  }

  return { root, refresh, live: true };
}
