// Every node is built with textContent and setAttribute, never innerHTML, so no value from the log
// (a resource name, an error message, an operator's reason) can inject markup.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(c ?? ''));
  return node;
}

export const short = (id) => id.slice(0, 8);
export const when = (iso) => (iso ? new Date(iso).toLocaleString() : '—');

/** 850 ms, 12.3 s, 4 min 05 s, 2 h 10 min, 3 d 4 h. */
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  const abs = Math.abs(ms);
  if (abs < 1000) return `${Math.round(ms)} ms`;
  if (abs < 60_000) return `${(ms / 1000).toFixed(abs < 10_000 ? 2 : 1)} s`;
  const s = Math.round(abs / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86_400)} d ${Math.floor((s % 86_400) / 3600)} h`;
}

export const ago = (iso) => (iso ? `${duration(Date.now() - new Date(iso).getTime())} ago` : '—');

/** A time shown relative (what a person reads first), with the absolute one on hover and for machines. */
export function timeEl(iso) {
  return el('time', { datetime: iso, title: when(iso) }, ago(iso));
}

/** How long it took, or how long it has been running. */
export function elapsed(t) {
  const start = new Date(t.createdAt).getTime();
  if (t.completedAt) return duration(new Date(t.completedAt).getTime() - start);
  return `${duration(Date.now() - start)} so far`;
}

export const STATUSES = ['active', 'preparing', 'committing', 'aborting', 'committed', 'aborted'];

export function statusBadge(status) {
  return el('span', { class: `status status-${status}` }, status);
}

export function flagBadges(t) {
  return [t.inDoubt ? el('span', { class: 'badge warn' }, 'in doubt') : '', t.heuristic ? el('span', { class: 'badge bad' }, 'heuristic') : ''];
}

// The SQLSTATEs an aborted transfer most often carries, named as Postgres' manual names them.
const SQLSTATES = {
  23505: 'unique violation',
  23503: 'foreign key violation',
  23514: 'check violation',
  23502: 'not-null violation',
  40001: 'serialization failure',
  '40P01': 'deadlock detected',
  '55P03': 'lock not available',
  57014: 'query canceled',
  '57P01': 'server shut down',
  '42P01': 'undefined table',
  42703: 'undefined column',
  42601: 'syntax error',
  22012: 'division by zero',
  22003: 'numeric value out of range',
  53200: 'out of memory / prepared slots',
  '08006': 'connection failure',
  '25P02': 'transaction aborted',
  42501: 'insufficient privilege',
};
const CODES = {
  deadline_exceeded: 'the deadline passed',
  expectation_failed: 'an expectation on the rows touched failed',
  prepare_failed: 'PREPARE failed',
  commit_failed: 'the commit failed',
  log_lost_transaction: 'the log lost its record before a decision',
  abandoned: 'abandoned before any decision',
  prepare_refused: 'no prepared-transaction slot was free',
};

const ORDINALS = ['first', 'second', 'third', 'fourth', 'fifth', 'sixth', 'seventh', 'eighth', 'ninth', 'tenth'];

/** A TxError ({ resource, statement, code, message }) as a sentence an operator reads at 3 a.m. */
export function reasonInWords(error) {
  if (!error || typeof error !== 'object') return '';
  const { resource, statement, code, message } = error;
  const what =
    CODES[code] ??
    (SQLSTATES[code]
      ? `${SQLSTATES[code]} (SQLSTATE ${code})`
      : /^[0-9A-Z]{5}$/.test(code ?? '')
        ? `SQLSTATE ${code}`
        : code
          ? code.replace(/_/g, ' ')
          : 'an error');
  // In words, since `statement` counts from 0 and the engine's own message says so.
  const where = resource
    ? typeof statement === 'number'
      ? `the ${ORDINALS[statement] ?? `statement at index ${statement} of the branch`}${ORDINALS[statement] ? ' statement' : ''} on ${resource}`
      : `on ${resource}`
    : '';
  const head = where ? `${where}: ${what}` : what;
  return message ? `${head[0].toUpperCase()}${head.slice(1)} — ${message}` : `${head[0].toUpperCase()}${head.slice(1)}`;
}

/** lastError of a phase-2 retry: whatever shape the engine stored, in one line. */
export function lastErrorInWords(e) {
  if (!e) return '';
  if (typeof e === 'string') return e;
  if (e.code || e.resource) return reasonInWords(e);
  return e.message ?? JSON.stringify(e);
}

/** Collapsible raw detail: readable first, the JSON one click away. */
export function detailBlock(label, value, key) {
  return el('details', { 'data-key': key }, el('summary', {}, label), el('pre', {}, JSON.stringify(value, null, 2)));
}
