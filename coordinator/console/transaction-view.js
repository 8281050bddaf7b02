import { api, canonicalIdPrefix, isFullId } from './api.js';
import { resolveDialog } from './dialogs.js';
import { el, elapsed, flagBadges, lastErrorInWords, reasonInWords, short, statusBadge, timeEl, when } from './dom.js';
import { phases, timeline } from './timeline.js';

function liveCell(d) {
  if (!d?.live) return '—';
  if (!d.live.reachable) return el('span', { class: 'badge bad message' }, `unreachable: ${d.live.error}`);
  return d.live.prepared ? `prepared since ${when(d.live.preparedAt)}, ${d.live.locks} lock(s)` : 'not prepared';
}

function branchesTable(t) {
  const details = t.branchDetails ?? [];
  const cell = (label, ...content) => el('td', { 'data-label': label }, ...content);
  return el(
    'table',
    { id: 'branches', class: 'cards' },
    el(
      'thead',
      {},
      el('tr', {}, ...['Resource', 'In the log', 'Live on its database', 'xid', 'Last error', 'Heuristic'].map((h) => el('th', { scope: 'col' }, h))),
    ),
    el(
      'tbody',
      {},
      ...t.branches.map((b, i) =>
        el(
          'tr',
          {},
          cell('Resource', b.resource),
          cell('In the log', b.status + (b.readOnly ? ' (read-only)' : '')),
          cell('Live on its database', liveCell(details[i])),
          cell('xid', el('code', {}, details[i]?.xid ?? '—')),
          cell('Last error', lastErrorInWords(details[i]?.lastError)),
          cell('Heuristic', details[i]?.heuristic ?? ''),
        ),
      ),
    ),
  );
}

/**
 * One transaction, by its id or any unique start of it (the short id the list shows). refresh()
 * re-reads it and redraws all but the operator's outcome message, keeping open detail blocks open.
 */
export function transactionView(ref, say) {
  const outcomeBox = el('div', { id: 'outcome' });
  const content = el('div', {}, el('p', {}, 'Loading…'));
  const root = el('section', {}, el('p', {}, el('a', { href: '#/' }, '← all transactions')), content);
  const view = { root, refresh, live: true };
  let id = isFullId(ref) ? ref : null;

  async function resolvePrefix() {
    const canonical = canonicalIdPrefix(ref);
    if (!canonical) {
      content.replaceChildren(el('p', { class: 'refusal', role: 'alert' }, `"${ref}" is not a transaction id nor its start (4 or more hex digits).`));
      view.live = false;
      return null;
    }
    const found = await api(`/v1/transactions/lookup?${new URLSearchParams({ id: canonical })}`);
    if (found.unique) {
      history.replaceState(null, '', `#/tx/${found.items[0].id}`);
      return found.items[0].id;
    }
    view.live = false;
    content.replaceChildren(
      el('h2', {}, `${found.items.length}${found.more ? '+' : ''} transactions start with ${canonical}`),
      el(
        'ul',
        { id: 'candidates' },
        ...found.items.map((t) =>
          el('li', {}, el('a', { href: `#/tx/${t.id}` }, el('code', {}, t.id)), ' ', statusBadge(t.status), ' ', t.resources.join(', ')),
        ),
      ),
    );
    return null;
  }

  async function refresh() {
    if (!id) id = await resolvePrefix();
    if (!id) return;
    const t = await api(`/v1/transactions/${id}`);
    const open = new Set([...content.querySelectorAll('details[open]')].map((d) => d.dataset.key));
    const finished = t.status === 'committed' || t.status === 'aborted';
    const reload = (box) => {
      outcomeBox.replaceChildren(box);
      return refresh();
    };
    content.replaceChildren(
      el('h2', {}, 'Transaction ', el('code', { class: 'txid' }, t.id)),
      el(
        'p',
        { class: 'summary' },
        statusBadge(t.status),
        ' ',
        ...flagBadges(t),
        ` ${finished ? 'took' : 'running for'} ${elapsed(t)} · created `,
        timeEl(t.createdAt),
        ` · deadline ${when(t.deadline)} · attempts ${t.attempts}`,
      ),
      t.error
        ? el(
            'p',
            { class: t.status === 'aborted' ? 'why-aborted' : 'why-hazard', id: 'reason' },
            el('strong', {}, t.status === 'aborted' ? 'Why it aborted: ' : 'Hazard: '),
            reasonInWords(t.error),
          )
        : '',
      !finished && t.lastError ? el('p', { class: 'why-hazard' }, el('strong', {}, 'Last phase-2 error: '), lastErrorInWords(t.lastError)) : '',
      phases(t),
      el('h3', {}, 'Branches'),
      branchesTable(t),
      finished
        ? ''
        : el(
            'div',
            { class: 'actions' },
            el('button', { id: 'resolve-commit', onclick: () => resolveDialog(id, 'commit', reload) }, 'Commit…'),
            el('button', { id: 'resolve-abort', onclick: () => resolveDialog(id, 'abort', reload) }, 'Abort…'),
          ),
      outcomeBox,
      el('h3', {}, 'Timeline'),
      timeline(t, open),
    );
    // A finished transaction changes only by an operator's action, which redraws it itself.
    view.live = !finished;
    say(`transaction ${short(id)}: ${t.status}`);
  }

  return view;
}
