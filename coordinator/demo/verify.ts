import pg from 'pg';
import { DEMO_BALANCE } from '../embedded/local-environment.ts';
import { OPENING_TOTAL_PER_BANK, readBank, type BankState } from './banks.ts';
import type { ScenarioReport } from './scenario.ts';
import type { SettleState } from './settle.ts';
import type { Transfer } from './workload.ts';

/*
 * The verified summary: what the clients were told, what the coordinator's log says, and what the
 * banks' own tables hold, checked against each other. Nothing here trusts the workload's counters.
 */

export interface Verdict {
  ok: boolean;
  lines: string[];
}

const PASS = '✔';
const FAIL = '✘';
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
// A failed check lists a few examples; the rest are counted.
const EXAMPLES = 5;

function examples(list: string[]): string {
  return list.length === 0
    ? ''
    : `\n      ${list.slice(0, EXAMPLES).join('\n      ')}${list.length > EXAMPLES ? `\n      … and ${list.length - EXAMPLES} more` : ''}`;
}

/** The coordinator's own record of each transaction: its final status and whether it ever needed an operator. */
async function readLog(logUrl: string, ids: string[]): Promise<Map<string, { status: string; heuristic: boolean; inDoubt: boolean }>> {
  const c = new pg.Client({ connectionString: logUrl, connectionTimeoutMillis: 5_000, query_timeout: 30_000 });
  c.on('error', () => {});
  await c.connect();
  try {
    const r = await c.query<{ id: string; status: string; heuristic: boolean; in_doubt: boolean }>(
      'SELECT id, status, heuristic, in_doubt FROM tpc_transactions WHERE id = ANY($1::uuid[])',
      [ids],
    );
    return new Map(r.rows.map((row) => [row.id, { status: row.status, heuristic: row.heuristic, inDoubt: row.in_doubt }]));
  } finally {
    await c.end().catch(() => {});
  }
}

function moneyCheck(states: BankState[]): { ok: boolean; line: string } {
  const opening = OPENING_TOTAL_PER_BANK * states.length;
  const total = states.reduce((s, b) => s + [...b.balances.values()].reduce((x, v) => x + v, 0), 0);
  // Every balance is its opening amount plus the deltas its ledger records: the ledger explains it.
  const unexplained: string[] = [];
  for (const b of states) {
    const deltas = new Map<number, number>();
    for (const row of b.ledger.values()) deltas.set(row.account, (deltas.get(row.account) ?? 0) + row.delta);
    for (const [account, balance] of b.balances) {
      const want = DEMO_BALANCE + (deltas.get(account) ?? 0);
      if (balance !== want) unexplained.push(`${b.bank} account ${account}: balance ${balance}, ledger says ${want}`);
    }
  }
  const ok = total === opening && unexplained.length === 0;
  const banks = states.map((b) => b.bank).join(', ');
  return {
    ok,
    line:
      `${ok ? PASS : FAIL} money conserved: ${total} across ${banks} (opened with ${opening}); ` +
      `${unexplained.length === 0 ? 'every balance equals its opening amount plus its ledger' : `${unexplained.length} balances not explained by their ledger`}${examples(unexplained)}`,
  };
}

function allOrNothingCheck(transfers: Transfer[], states: BankState[], log: Awaited<ReturnType<typeof readLog>>): { ok: boolean; line: string } {
  const byBank = new Map(states.map((b) => [b.bank, b]));
  const problems: string[] = [];
  let both = 0;
  let neither = 0;
  for (const t of transfers) {
    const from = byBank.get(t.from.bank)!.ledger.get(t.key);
    const to = byBank.get(t.to.bank)!.ledger.get(t.key);
    const logged = t.txId ? log.get(t.txId) : undefined;
    const name = `transfer ${t.key} (${t.from.bank} → ${t.to.bank})`;
    if (from && to) both++;
    else if (!from && !to) neither++;
    else problems.push(`${name}: in the ledger of ${from ? t.from.bank : t.to.bank} only`);
    if (t.outcome === undefined) problems.push(`${name}: never got a definite answer`);
    else if (logged?.status !== t.outcome) problems.push(`${name}: the client was told ${t.outcome}, the log says ${logged?.status ?? 'nothing'}`);
    else if ((from !== undefined) !== (t.outcome === 'committed')) problems.push(`${name}: ${t.outcome}, yet ${from ? 'applied' : 'not applied'}`);
    if (from && (from.account !== t.from.account || from.delta !== -t.amount)) problems.push(`${name}: debit row ${JSON.stringify(from)} is not the one sent`);
    if (to && (to.account !== t.to.account || to.delta !== t.amount)) problems.push(`${name}: credit row ${JSON.stringify(to)} is not the one sent`);
    if (logged?.heuristic) problems.push(`${name}: flagged heuristic (a branch went against the decision)`);
  }
  // Rows that no transfer of this run explains (the ledgers were emptied at the start).
  const keys = new Map(transfers.map((t) => [t.key, t]));
  for (const b of states) {
    for (const id of b.ledger.keys()) {
      const t = keys.get(id);
      if (!t || (t.from.bank !== b.bank && t.to.bank !== b.bank)) problems.push(`${b.bank}: ledger row ${id} that no transfer sent there`);
    }
  }
  const breaches = transfers.flatMap((t) => t.contractBreaches.map((x) => `transfer ${t.key}: answered ${x}`));
  problems.push(...breaches);
  const ok = problems.length === 0;
  return {
    ok,
    line:
      `${ok ? PASS : FAIL} all or nothing: of ${transfers.length} transfers, ${both} are in both banks' ledgers and ${neither} in neither; ` +
      `${ok ? 'each exactly as the coordinator answered and logged it (committed / aborted)' : `${problems.length} problems`}${examples(problems)}`,
  };
}

function reasons(transfers: Transfer[]): string {
  const counts = new Map<string, number>();
  for (const t of transfers) if (t.outcome === 'aborted') counts.set(t.abortReason ?? 'unknown', (counts.get(t.abortReason ?? 'unknown') ?? 0) + 1);
  if (counts.size === 0) return '';
  return ` (why: ${[...counts]
    .sort((a, b) => b[1] - a[1])
    .map(([r, n]) => `${r} ${n}`)
    .join(', ')})`;
}

export async function verify(o: {
  banks: Readonly<Record<string, string>>;
  logUrl: string;
  transfers: Transfer[];
  scenario: ScenarioReport;
  settle: SettleState;
  workloadMs: number;
}): Promise<Verdict> {
  const lines: string[] = [];
  let ok = true;
  const check = (passed: boolean, line: string) => {
    ok &&= passed;
    lines.push(line);
  };
  const committed = o.transfers.filter((t) => t.outcome === 'committed').length;
  const aborted = o.transfers.filter((t) => t.outcome === 'aborted').length;
  lines.push(
    `transfers: ${o.transfers.length} in ${secs(o.workloadMs)} (${(o.transfers.length / (o.workloadMs / 1000)).toFixed(0)}/s), ` +
      `${committed} committed, ${aborted} aborted${reasons(o.transfers)}`,
  );

  const states = await Promise.all(Object.entries(o.banks).map(([bank, url]) => readBank(bank, url)));
  const log = await readLog(
    o.logUrl,
    o.transfers.flatMap((t) => (t.txId ? [t.txId] : [])),
  );

  const money = moneyCheck(states);
  check(money.ok, money.line);
  const aon = allOrNothingCheck(o.transfers, states, log);
  check(aon.ok, aon.line);

  const prepared = states.flatMap((b) => b.prepared.map((gid) => `${b.bank}: ${gid}`));
  const settledOk = prepared.length === 0 && o.settle.settled;
  check(
    settledOk,
    `${settledOk ? PASS : FAIL} no prepared transaction left on ${states.map((b) => b.bank).join(', ')} (pg_prepared_xacts)` +
      `${prepared.length ? `: ${prepared.length} left${examples(prepared)}` : ''}; ` +
      `${o.settle.unfinished.length === 0 ? 'nothing undecided, committing or in doubt in the log' : `the log still has unfinished transactions${examples(o.settle.unfinished)}`}`,
  );

  const r = o.scenario.recovery;
  if (r) {
    check(
      true,
      `${PASS} recovery after SIGKILL of the coordinator: ${secs(r.recoveryMs)} from the kill (left dead ${secs(r.pauseMs)} on purpose, ready again after ${secs(r.restartMs)}, ` +
        `the ${r.inFlightAtKill} transfers in flight settled after ${secs(r.resolvedMs)}: ${r.committed} committed, ${r.aborted} aborted; ` +
        `first new commit after ${secs(r.firstCommitMs)})`,
    );
  } else {
    check(false, `${FAIL} recovery after SIGKILL of the coordinator: not measured`);
  }
  const outage = o.scenario.outage;
  const inDoubt = [...log.values()].filter((x) => x.inDoubt).length;
  if (outage) {
    lines.push(
      `  ${outage.bank} offline for ${secs(outage.downMs)} (connections refused, ${outage.sessionsCut} sessions cut): ` +
        `${outage.committedDuring} committed and ${outage.abortedDuring} aborted meanwhile` +
        `${inDoubt ? `; ${inDoubt} transactions were shown to operators as in doubt and completed once it returned` : ''}`,
    );
  } else {
    check(false, `${FAIL} the bank outage did not run`);
  }
  for (const p of o.scenario.problems) check(false, `${FAIL} ${p}`);
  return { ok, lines };
}
