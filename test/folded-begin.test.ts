import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../coordinator/config/load-config.ts';
import { stampedDeadline } from '../coordinator/engine/transaction-id.ts';
import { openLogDatabase, type LogDb } from '../coordinator/log/log-database.ts';
import { RecoveryStore } from '../coordinator/log/recovery-store.ts';
import { startService, type RunningService } from '../coordinator/service.ts';
import { startCoordinatorProcess, type CoordinatorProcess } from './harness/coordinator-process.ts';
import { eventually } from './harness/waits.ts';
import { createDatabases, httpRequest, move, pause, type Databases } from './harness/world.ts';

/*
 * The begin record folded into the decision (engine/deferred-begin.ts): a transaction that decides
 * within TPC_BEGIN_DEFER_MS has its row inserted by its decision, so the happy path writes the log
 * twice (decision, completion). What that must not cost: a longer one is in the log while it runs;
 * a driver killed before its row was written leaves branches that recovery rolls back at the
 * deadline their id carries; and a driver alive but late finds recovery's tombstone and gives way.
 */
const SWEEP_MS = 500;

describe('the begin record folded into the decision', () => {
  let dbs: Databases;
  let service: RunningService;
  let late: RunningService | undefined;
  let victim: CoordinatorProcess | undefined;
  let logDb: LogDb;
  const row = async (id: string) =>
    (
      await dbs.db.log.query<{ status: string; version: number; error: { code: string } | null; late_ms: number; created_before: boolean }>(
        `SELECT status::text, version, error, (extract(epoch FROM decided_at - deadline) * 1000)::int AS late_ms,
           created_at < decided_at AS created_before FROM tpc_transactions WHERE id = $1`,
        [id],
      )
    ).rows[0];
  const gidsOf = async (id: string) => (await dbs.preparedGids()).filter((g) => g.includes(id));

  beforeAll(async () => {
    dbs = await createDatabases({ env: { TPC_RECONCILE_INTERVAL_MS: String(SWEEP_MS) } });
    const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
    service = await startService(loadConfig(dbs.env), { logger, queuePrefix: `q${dbs.tag}` });
    logDb = openLogDatabase({ url: dbs.urls.log, maxConnections: 2 });
  }, 60_000);

  afterAll(async () => {
    await victim?.kill();
    await late?.close();
    await service?.close();
    await logDb?.close();
    await dbs?.end();
  });

  it('a transaction decided at once is one row written twice: inserted decided, then completed', async () => {
    for (const body of [move('bank_a', 'bank_b', 1, 1), { branches: [move('bank_a', 'bank_b', 1, 1).branches[0]!], timeoutMs: 5_000 }]) {
      const r = await httpRequest(service.url, 'POST', '/v1/transactions', body);
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      // Read first through the service: the answer does not wait for the completion record, a read does.
      const got = await httpRequest(service.url, 'GET', `/v1/transactions/${r.body.id}`);
      // version 1 at the insert, 2 at the completion (a begin record first would make it 3).
      expect(await row(r.body.id)).toMatchObject({ status: 'committed', version: 2, created_before: true });
      expect(got.body.events.map((e: { kind: string }) => e.kind)).toEqual(['begun', 'decided', 'completed']);
      expect(got.body.events[0].detail).toMatchObject({ timeoutMs: body.timeoutMs });
    }
    // An abort before any prepare is one row written once, final.
    const failed = await httpRequest(service.url, 'POST', '/v1/transactions', {
      branches: [{ resource: 'bank_a', statements: [{ sql: 'UPDATE accounts SET balance = balance WHERE id = -1', params: [], expect: { rowCount: 1 } }] }],
      timeoutMs: 5_000,
    });
    expect(failed.status).toBe(409);
    expect(await row(failed.body.id)).toMatchObject({ status: 'aborted', version: 1, error: { code: 'expectation_failed' } });
  });

  it('a transaction still running after TPC_BEGIN_DEFER_MS is in the log while it runs', async () => {
    const pending = httpRequest(service.url, 'POST', '/v1/transactions', move('bank_a', 'bank_b', 1, 2, { before: [pause(3)] }));
    const active = await eventually(
      () => dbs.db.log.query<{ id: string }>("SELECT id FROM tpc_transactions WHERE namespace = $1 AND status = 'active'", [dbs.namespace]),
      (r) => r.rows.length === 1,
      'its begin record',
      2_900,
    );
    const r = await pending;
    expect(r.status).toBe(201);
    expect(r.body.id).toBe(active.rows[0]!.id);
    expect((await httpRequest(service.url, 'GET', `/v1/transactions/${r.body.id}`)).body.status).toBe('committed');
    expect(await row(r.body.id)).toMatchObject({ status: 'committed', version: 3 });
  });

  it('a driver killed before its row was written: its branches wait for their deadline, then recovery rolls them back behind a tombstone', async () => {
    victim = await startCoordinatorProcess({ ...dbs.env, LOG_LEVEL: 'info', TPC_BEGIN_DEFER_MS: '60000', TPC_FAILPOINTS: 'after-prepare-1:crash' });
    const timeoutMs = 4_000;
    await httpRequest(victim.url, 'POST', '/v1/transactions', { ...move('bank_a', 'bank_c', 7, 3), timeoutMs }).catch(() => undefined);
    expect(await victim.exited).toBeNull(); // SIGKILLed by its failpoint
    victim = undefined;
    const gids = await dbs.preparedGids();
    expect(gids).toHaveLength(2);
    const id = gids[0]!.split(':')[2]!;
    const deadline = stampedDeadline(id)!;
    expect(deadline).toBeGreaterThan(Date.now()); // the rest of this check is before it
    expect(await row(id)).toBeUndefined();
    // In flight as far as anyone can tell: not an orphan for operators, not touched by reconciliation.
    await service.maintenance.reconcile();
    const orphans = await httpRequest(service.url, 'GET', '/v1/orphans');
    expect(orphans.status).toBe(200);
    expect(orphans.body.items).toEqual([]);
    if (Date.now() < deadline) expect(await gidsOf(id)).toHaveLength(2);

    await eventually(
      () => gidsOf(id),
      (g) => g.length === 0,
      'the branches rolled back',
      deadline - Date.now() + SWEEP_MS + 5_000,
    );
    const tomb = await row(id);
    expect(tomb).toMatchObject({ status: 'aborted', error: { code: 'deadline_exceeded' } });
    expect(tomb!.late_ms).toBeGreaterThanOrEqual(0);
    console.info(`tombstone: written ${tomb!.late_ms} ms after the deadline (reconciliation every ${SWEEP_MS} ms)`);
    expect(await dbs.balance('bank_a', 3)).toBe(1000);
    expect(await dbs.balance('bank_c', 3)).toBe(1000);
  });

  it("a driver alive but late finds recovery's tombstone: it rolls back what it prepared and answers the abort", async () => {
    late = await startService(loadConfig({ ...dbs.env, TPC_BEGIN_DEFER_MS: '60000', TPC_RECONCILE_INTERVAL_MS: '600000' }), {
      logger: pino({ level: 'silent' }),
      queuePrefix: `q${dbs.tag}`,
    });
    // bank_c is slow, so bank_a is prepared and the decision is seconds away.
    const pending = httpRequest(late.url, 'POST', '/v1/transactions', {
      branches: [
        { resource: 'bank_a', statements: [{ sql: 'UPDATE accounts SET balance = balance - 9 WHERE id = 4', params: [] }] },
        { resource: 'bank_c', statements: [pause(2), { sql: 'UPDATE accounts SET balance = balance + 9 WHERE id = 4', params: [] }] },
      ],
      timeoutMs: 10_000,
    });
    const [gid] = await eventually(
      () => dbs.preparedGids(),
      (g) => g.length === 1,
      'bank_a prepared',
      5_000,
    );
    const id = gid!.split(':')[2]!;
    // What reconciliation writes once the deadline passes, written early: the late decision must lose to it.
    const recovery = new RecoveryStore(logDb);
    const reason = { resource: null, statement: null, code: 'deadline_exceeded', message: 'written by the test' };
    const written = await recovery.abandon({
      id,
      namespace: dbs.namespace,
      deadline: new Date(stampedDeadline(id)!),
      branches: [{ index: 0, resource: 'bank_a', gid: gid! }],
      reason,
      driver: 'test',
    });
    expect(written).toBe('created');
    // The same again finds the row: a second pass never writes over it.
    expect(await recovery.abandon({ id, namespace: dbs.namespace, deadline: new Date(), branches: [], reason, driver: 'test' })).toBe('aborted');

    const r = await pending;
    expect(r.status, JSON.stringify(r.body)).toBe(409);
    expect(r.body).toMatchObject({ id, status: 'aborted', error: { code: 'deadline_exceeded', message: 'written by the test' } });
    expect(await gidsOf(id)).toEqual([]);
    expect(await dbs.balance('bank_a', 4)).toBe(1000);
    expect(await dbs.balance('bank_c', 4)).toBe(1000);
    expect(await row(id)).toMatchObject({ status: 'aborted', version: 1 });
  });
});
