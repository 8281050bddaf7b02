import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCoordinatorProcess, type CoordinatorProcess } from './harness/coordinator-process.ts';
import { createDatabases, httpRequest, type Databases } from './harness/world.ts';

/*
 * The coordinator is killed at each step boundary (its failpoint SIGKILLs it), a fresh one is
 * started, and the client retries with the same Idempotency-Key. The outcome must be the true one:
 * committed on every database if the decision was written, rolled back everywhere if not.
 */
const FAST_RECOVERY = {
  TPC_RECONCILE_INTERVAL_MS: '300',
  TPC_RETRY_BASE_MS: '100',
  TPC_RETRY_MAX_MS: '500',
  LOG_LEVEL: 'info',
};

const CASES = [
  { failpoint: 'after-begin', committed: false },
  { failpoint: 'after-prepare-0', committed: false },
  { failpoint: 'after-prepare-1', committed: false },
  { failpoint: 'after-decision-written', committed: true },
  { failpoint: 'after-decision', committed: true },
  { failpoint: 'after-complete-0', committed: true },
  { failpoint: 'after-complete-1', committed: true },
  { failpoint: 'before-completion-written', committed: true },
] as const;

async function settled(url: string, body: unknown, key: string): Promise<{ status: number; body: any }> {
  const until = Date.now() + 30_000;
  for (;;) {
    const r = await httpRequest(url, 'POST', '/v1/transactions', body, { headers: { 'Idempotency-Key': key } });
    if (r.status === 201 || r.status === 409) return r;
    if (Date.now() > until) throw new Error(`no final answer for ${key}: ${r.status} ${JSON.stringify(r.body)}`);
    await sleep(200);
  }
}

describe('a coordinator killed at each step boundary', () => {
  let dbs: Databases;
  let survivor: CoordinatorProcess | undefined;
  beforeAll(async () => {
    dbs = await createDatabases();
  });
  afterAll(async () => {
    await survivor?.kill('SIGTERM');
    await dbs.end();
  });

  it.each(CASES.map((c, i) => ({ ...c, account: i + 1 })))('$failpoint: $committed', async ({ failpoint, committed, account }) => {
    const body = {
      branches: [
        {
          resource: 'bank_a',
          statements: [{ sql: 'UPDATE accounts SET balance = balance - $1 WHERE id = $2', params: [100, account], expect: { rowCount: 1 } }],
        },
        { resource: 'bank_c', statements: [{ sql: 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', params: [100, account] }] },
      ],
      // A case that must commit gets room to decide before its deadline: on a loaded machine a cold
      // coordinator once took over 1.5 s to prepare, rightly decided abort at the deadline, and
      // crashed after that decision instead. Not more: the dead driver's lease runs to the deadline,
      // and the survivor waits it out. The others must miss it, for recovery to roll them back.
      timeoutMs: committed ? 4000 : 1500,
    };
    const key = `crash-${failpoint}`;
    const doomed = await startCoordinatorProcess({ ...dbs.env, ...FAST_RECOVERY, TPC_FAILPOINTS: `${failpoint}:crash` });
    const lost = await httpRequest(doomed.url, 'POST', '/v1/transactions', body, { headers: { 'Idempotency-Key': key } }).catch((err: Error) => err);
    if (failpoint === 'before-completion-written' && !(lost instanceof Error)) {
      // The answer does not wait for the completion record: it may be out before the crash, and then says what recovery finishes.
      expect(lost).toMatchObject({ status: 201, body: { status: 'committed' } });
    } else expect(lost).toBeInstanceOf(Error); // the process died before it could answer
    expect(await doomed.exited).toBeNull(); // killed by a signal, not exited

    await survivor?.kill('SIGTERM');
    survivor = await startCoordinatorProcess({ ...dbs.env, ...FAST_RECOVERY });
    const answer = await settled(survivor.url, body, key);
    expect(answer.status).toBe(committed ? 201 : 409);
    expect(answer.body.status).toBe(committed ? 'committed' : 'aborted');
    if (!committed) expect(answer.body.error.code).toBe('deadline_exceeded');

    // The databases agree with the answer, and nothing is left prepared.
    expect(await dbs.balance('bank_a', account)).toBe(committed ? 900 : 1000);
    expect(await dbs.balance('bank_c', account)).toBe(committed ? 1100 : 1000);
    expect(await dbs.preparedGids()).toEqual([]);
    const log = await dbs.db.log.query(
      'SELECT t.status, array_agg(b.status::text ORDER BY b.index) AS branches FROM tpc_transactions t JOIN tpc_branch_rows b ON b.transaction_id = t.id WHERE t.id = $1 GROUP BY t.status',
      [answer.body.id],
    );
    expect(log.rows[0]).toEqual({ status: committed ? 'committed' : 'aborted', branches: committed ? ['committed', 'committed'] : ['aborted', 'aborted'] });
  });
});
