import { api } from './api.js';
import { orphanDialog } from './dialogs.js';
import { el, when } from './dom.js';

/** Each participant database as the coordinator sees it, and the prepared branches nobody owns. */
export function resourcesView(say) {
  const outcomeBox = el('div', { id: 'orphan-outcome' });
  const content = el('div', {}, el('p', {}, 'Loading…'));
  const root = el('section', {}, el('p', {}, el('a', { href: '#/' }, '← all transactions')), content, outcomeBox);
  const cell = (label, ...c) => el('td', { 'data-label': label }, ...c);

  async function refresh() {
    const [resources, orphans] = await Promise.all([api('/v1/resources'), api('/v1/orphans')]);
    const yes = (v) => (v ? 'yes' : el('span', { class: 'badge bad' }, 'no'));
    const table = el(
      'table',
      { id: 'resources', class: 'cards' },
      el(
        'thead',
        {},
        el('tr', {}, ...['Resource', 'Kind', 'Reachable', 'Usable', 'Prepared', 'Oldest (s)', 'Message'].map((h) => el('th', { scope: 'col' }, h))),
      ),
      el(
        'tbody',
        {},
        ...resources.items.map((r) =>
          el(
            'tr',
            {},
            cell('Resource', el('a', { href: `#/?resource=${encodeURIComponent(r.resource)}` }, r.resource)),
            cell('Kind', r.kind),
            cell('Reachable', yes(r.reachable)),
            cell('Usable', yes(r.usable)),
            cell('Prepared', r.prepared ?? '—'),
            cell('Oldest (s)', r.oldestPreparedSeconds ?? '—'),
            cell('Message', r.message ?? ''),
          ),
        ),
      ),
    );
    const reload = (box) => {
      outcomeBox.replaceChildren(box);
      return refresh();
    };
    const orphanTable = el(
      'table',
      { id: 'orphans', class: 'cards' },
      el('thead', {}, el('tr', {}, ...['Resource', 'Gid', 'Prepared', 'Age (s)', ''].map((h) => el('th', { scope: 'col' }, h)))),
      el(
        'tbody',
        {},
        ...orphans.items.map((o) =>
          el(
            'tr',
            {},
            cell('Resource', o.resource),
            cell('Gid', el('code', {}, o.gid)),
            cell('Prepared', when(o.preparedAt)),
            cell('Age (s)', String(o.ageSeconds)),
            cell('', el('button', { class: 'orphan-rollback', onclick: () => orphanDialog(o, reload) }, 'Roll back…')),
          ),
        ),
      ),
    );
    content.replaceChildren(
      el('h2', {}, 'Resources'),
      table,
      el('h2', {}, `Orphans (${orphans.items.length})`),
      orphans.unreachable.length ? el('p', { class: 'refusal' }, `Not checked, unreachable: ${orphans.unreachable.join(', ')}`) : '',
      orphans.items.length ? orphanTable : el('p', {}, 'No prepared branch of this namespace is unknown to the log.'),
    );
    say(`${resources.items.length} resources, ${orphans.items.length} orphans`);
  }

  // Asking every database is not free: this page refreshes when asked, not on a timer.
  return { root, refresh, live: false };
}
