import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCoordinatorProcess, type CoordinatorProcess } from './harness/coordinator-process.ts';
import { createDatabases, httpRequest, type Databases } from './harness/world.ts';

/*
 * A coordinator dies with a transaction undecided, long before its deadline. The operator need not
 * wait: their outcome becomes the decision (commit only if every branch is really prepared).
 */
const SURVIVOR_ENV = { LOG_LEVEL: 'info', TPC_RECONCILE_INTERVAL_MS: '300', TPC_RETRY_BASE_MS: '100', TPC_RETRY_MAX_MS: '500' };

function transfer(account: number, slowSecondBranch: boolean) {
  return {
    branches: [
      { resource: 'bank_a', statements: [{ sql: 'UPDATE accounts SET balance = balance - 10 WHERE id = $1', params: [account] }] },
      {
        resource: 'bank_c',
        statements: [
          // Long enough that the begin record is written (the after-begin failpoint) before this
          // branch can be prepared, even on a loaded machine where that write took over 0.4 s.
          ...(slowSecondBranch ? [{ sql: 'SELECT pg_sleep(2)', params: [] }] : []),
          { sql: 'UPDATE accounts SET balance = balance + 10 WHERE id = $1', params: [account] },
        ],
      },
    ],
    timeoutMs: 120_000,
  };
}

describe('an operator deciding a transaction whose coordinator died', () => {
  let dbs: Databases;
  let survivor: CoordinatorProcess;
  beforeAll(async () => {
    dbs = await createDatabases();
    survivor = await startCoordinatorProcess({ ...dbs.env, ...SURVIVOR_ENV });
  });
  afterAll(async () => {
    await survivor?.kill('SIGTERM');
    await dbs.end();
  });

  async function orphanedBy(failpoint: string, account: number, slow: boolean): Promise<string> {
    const doomed = await startCoordinatorProcess({ ...dbs.env, ...SURVIVOR_ENV, TPC_FAILPOINTS: `${failpoint}:crash` });
    await httpRequest(doomed.url, 'POST', '/v1/transactions', transfer(account, slow)).catch(() => undefined);
    await doomed.exited;
    const rows = await dbs.db.log.query<{ id: string }>("SELECT id FROM tpc_transactions WHERE status = 'active'");
    expect(rows.rows).toHaveLength(1);
    return rows.rows[0]!.id;
  }

  it('commits when every branch is prepared, well before the deadline', async () => {
    // Branch 1 is slower, so when it is prepared (the failpoint) branch 0 already is.
    const id = await orphanedBy('after-prepare-1', 1, true);
    const r = await httpRequest(survivor.url, 'POST', `/v1/transactions/${id}/resolve`, {
      outcome: 'commit',
      reason: 'the coordinator died; both sides prepared',
    });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ action: 'decided', result: 'finished', transaction: { status: 'committed' } });
    expect(await dbs.balance('bank_a', 1)).toBe(990);
    expect(await dbs.balance('bank_c', 1)).toBe(1010);
    const decided = r.body.transaction.events.find((e: { kind: string }) => e.kind === 'decided');
    expect(decided).toMatchObject({ actor: 'full', detail: { outcome: 'commit', by: 'operator' } });
    expect(await dbs.preparedGids()).toEqual([]);
  });

  it('refuses to commit when a branch is not prepared, and aborts on request', async () => {
    const id = await orphanedBy('after-begin', 2, true);
    const refused = await httpRequest(survivor.url, 'POST', `/v1/transactions/${id}/resolve`, { outcome: 'commit', reason: 'try' });
    expect(refused.status).toBe(409);
    expect(refused.body.type).toBe('urn:tpc:problem:not-prepared');
    const aborted = await httpRequest(survivor.url, 'POST', `/v1/transactions/${id}/resolve`, { outcome: 'abort', reason: 'the coordinator died mid-work' });
    expect(aborted.status).toBe(200);
    expect(aborted.body).toMatchObject({
      action: 'decided',
      transaction: { status: 'aborted', error: { code: 'operator_abort', message: 'the coordinator died mid-work' } },
    });
    expect(await dbs.balance('bank_a', 2)).toBe(1000);
    expect(await dbs.balance('bank_c', 2)).toBe(1000);
    expect(await dbs.preparedGids()).toEqual([]);
  });
});
