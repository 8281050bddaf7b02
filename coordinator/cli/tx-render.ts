import type { ResolveAnswer, TransactionDetail, TransactionPage, TransactionSummary } from './api-types.ts';
import { cell, errorText, formatFields, formatTable, time, truncate, type Column } from './format.ts';

const flags = (t: { inDoubt: boolean; heuristic: boolean }) => [t.inDoubt ? 'in-doubt' : '', t.heuristic ? 'heuristic' : ''].filter(Boolean).join(',');

const LIST_COLUMNS: Column<TransactionSummary>[] = [
  { header: 'ID', value: (t) => t.id },
  { header: 'STATUS', value: (t) => t.status },
  { header: 'CREATED', value: (t) => time(t.createdAt) },
  { header: 'RESOURCES', value: (t) => t.resources.join(',') },
  { header: 'FLAGS', value: flags },
  { header: 'ATTEMPTS', value: (t) => t.attempts, align: 'right' },
  { header: 'ERROR', value: (t) => errorText(t.error ?? t.lastError) },
];

export function renderList(page: TransactionPage): string {
  if (page.items.length === 0) return page.next ? `no transactions on this page\nnext cursor: ${page.next}\n` : 'no transactions\n';
  const table = formatTable(LIST_COLUMNS, page.items);
  return page.next ? `${table}\nmore: --cursor ${page.next}\n` : table;
}

type BranchRow = TransactionDetail['branches'][number] & { index: number; extra: NonNullable<TransactionDetail['branchDetails']>[number] | undefined };

function live(b: BranchRow): string {
  const l = b.extra?.live;
  if (!l) return '';
  if (!l.reachable) return `unreachable: ${truncate(l.error, 40)}`;
  if (!l.prepared) return 'not prepared';
  return `prepared since ${time(l.preparedAt)}${l.locks === null ? '' : `, ${l.locks} locks`}`;
}

const BRANCH_COLUMNS: Column<BranchRow>[] = [
  { header: '#', value: (b) => b.index, align: 'right' },
  { header: 'RESOURCE', value: (b) => b.resource },
  { header: 'STATUS', value: (b) => b.status },
  { header: 'READ-ONLY', value: (b) => (b.readOnly ? 'yes' : 'no') },
  { header: 'GID', value: (b) => b.extra?.gid },
  { header: 'XID', value: (b) => b.extra?.xid },
  { header: 'HEURISTIC', value: (b) => b.extra?.heuristic },
  { header: 'LIVE', value: live },
  { header: 'LAST ERROR', value: (b) => errorText(b.extra?.lastError, 50) },
];

type Event = TransactionDetail['events'][number];
const EVENT_COLUMNS: Column<Event>[] = [
  { header: 'AT', value: (e) => time(e.at) },
  { header: 'KIND', value: (e) => e.kind },
  { header: 'ACTOR', value: (e) => e.actor },
  { header: 'DETAIL', value: (e) => truncate(cell(e.detail), 100) },
];

export function renderDetail(t: TransactionDetail): string {
  const fields = formatFields([
    ['id', t.id],
    ['status', t.status],
    ['flags', flags(t) || '-'],
    ['one-phase', t.onePhase ? 'yes' : 'no'],
    ['created', time(t.createdAt)],
    ['deadline', time(t.deadline)],
    ['decided', time(t.decidedAt) || '-'],
    ['completed', time(t.completedAt) || '-'],
    ['attempts', t.attempts],
    ['error', t.error ? cell(t.error) : '-'],
    ['last error', t.lastError ? cell(t.lastError) : '-'],
  ]);
  const rows: BranchRow[] = t.branches.map((b, index) => ({ ...b, index, extra: t.branchDetails?.find((d) => d.resource === b.resource) }));
  const events = t.events.length ? formatTable(EVENT_COLUMNS, t.events) : 'no events\n';
  return `${fields}\nbranches:\n${formatTable(BRANCH_COLUMNS, rows)}\nevents:\n${events}`;
}

const ACTIONS: Record<ResolveAnswer['action'], string> = {
  decided: 'the outcome became the decision',
  drove: 'the existing decision was driven',
  forced: 'forced against the decision (recorded as heuristic)',
  nothing: 'nothing to do: already finished with that outcome',
};

export function renderResolve(r: ResolveAnswer): string {
  const fields = formatFields([
    ['action', `${r.action} (${ACTIONS[r.action] ?? r.action})`],
    ['result', r.result],
    ['transaction', r.transaction.id],
    ['status', r.transaction.status],
    ['flags', flags(r.transaction) || '-'],
  ]);
  const branches = formatTable<TransactionDetail['branches'][number]>(
    [
      { header: 'RESOURCE', value: (b) => b.resource },
      { header: 'STATUS', value: (b) => b.status },
    ],
    r.transaction.branches,
  );
  return `${fields}\n${branches}`;
}
