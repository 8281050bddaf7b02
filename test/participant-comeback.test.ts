import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresCluster } from '../coordinator/embedded/postgres-cluster.ts';
import { ParticipantComeback } from '../coordinator/engine/participant-comeback.ts';
import { beginRecord } from './harness/begin-record.ts';
import { MemoryLog } from './harness/memory-log.ts';
import { move, type World } from './harness/world.ts';
import { createFlakyWorld, decidedWithFlakyDown, eventually, query, restartAfterCrash } from './harness/waits.ts';

const silent = pino({ level: 'silent' });

/** Decided transactions in the in-memory log: `leased` ones keep a live driver, the rest wait for a retry. */
async function decided(log: MemoryLog, resources: string[], leased = false): Promise<string> {
  const record = beginRecord('n', resources);
  const { id } = record;
  await log.begin(record);
  await log.transition({ id, from: 'active', to: 'committing', forced: true, driver: 'd', event: { kind: 'decided' } });
  if (!leased) await log.release(id, 'd');
  return id;
}

describe('the transactions waiting on a participant whose phase 2 works again', () => {
  it('are hurried once every kind of phase-2 call that failed there has worked again, and only those', async () => {
    const log = new MemoryLog();
    const waiting = await Promise.all(Array.from({ length: 5 }, () => decided(log, ['bank_a', 'flaky'])));
    await decided(log, ['bank_a', 'other']);
    await decided(log, ['flaky'], true);
    const hurried: string[] = [];
    const comeback = new ParticipantComeback({
      namespace: 'n',
      recovery: log,
      followUp: { retryNow: async (id) => void hurried.push(id) },
      logger: silent,
      page: 2,
      minIntervalMs: 0,
    });
    comeback.observe('flaky', 'commit_prepared', 'ok'); // nothing had failed
    comeback.observe('flaky', 'commit_prepared', 'error');
    comeback.observe('flaky', 'inspect_prepared', 'ok'); // not phase 2
    comeback.observe('flaky', 'rollback_prepared', 'ok'); // says nothing of the commits
    comeback.observe('other', 'commit_prepared', 'ok');
    await comeback.settled();
    expect(hurried).toEqual([]);
    comeback.observe('flaky', 'commit_prepared', 'ok');
    await comeback.settled();
    // In pages of two, each once; not the one on another resource, nor the one its driver holds.
    expect(hurried).toEqual([...waiting].sort());
    comeback.observe('flaky', 'commit_prepared', 'ok');
    await comeback.settled();
    expect(hurried).toHaveLength(5);
    // Stopping: nothing more is swept.
    await comeback.close();
    comeback.observe('flaky', 'commit_prepared', 'error');
    comeback.observe('flaky', 'commit_prepared', 'ok');
    await comeback.settled();
    expect(hurried).toHaveLength(5);
  });

  it('are hurried at most once per interval when the participant flaps, and a failing log read is only a warning', async () => {
    const log = new MemoryLog();
    await decided(log, ['flaky']);
    let calls = 0;
    const comeback = new ParticipantComeback({
      namespace: 'n',
      recovery: {
        waitingOn: (...args) => {
          calls++;
          return calls === 2 ? Promise.reject(new Error('log down')) : log.waitingOn(...args);
        },
      },
      followUp: { retryNow: async () => {} },
      logger: silent,
      minIntervalMs: 60_000,
    });
    comeback.observe('flaky', 'commit_prepared', 'error');
    comeback.observe('flaky', 'commit_prepared', 'ok');
    await comeback.settled();
    expect(calls).toBe(1);
    comeback.observe('flaky', 'commit_prepared', 'error');
    comeback.observe('flaky', 'commit_prepared', 'ok');
    await comeback.settled();
    expect(calls).toBe(1);
    const again = new ParticipantComeback({
      namespace: 'n',
      recovery: { waitingOn: () => Promise.reject(new Error('log down')) },
      followUp: { retryNow: async () => {} },
      logger: silent,
    });
    again.observe('flaky', 'rollback_prepared', 'error');
    again.observe('flaky', 'rollback_prepared', 'ok');
    await expect(again.settled()).resolves.toBeUndefined();
  });
});

describe('a participant back after an outage, in the service', () => {
  let flaky: { cluster: PostgresCluster; url: string };
  let world: World;
  beforeAll(async () => {
    // Ten minutes of backoff and no reconciliation pass: only the comeback can finish it in time.
    ({ flaky, world } = await createFlakyWorld({ TPC_RETRY_BASE_MS: '600000', TPC_RETRY_MAX_MS: '600000', TPC_RECONCILE_INTERVAL_MS: '600000' }));
  });
  afterAll(async () => {
    await world.close();
    await flaky.cluster.destroy();
  });

  it('finishes a transaction waiting at its backoff as soon as phase 2 works there again', async () => {
    const id = await decidedWithFlakyDown(world, flaky, 7, 4);
    // Its completion job has tried once and failed: the next try is ten minutes away.
    await eventually(
      () => query<{ attempts: number }>(world.urls.log, 'SELECT attempts FROM tpc_transactions WHERE id = $1', [id]),
      (r) => (r[0]?.attempts ?? 0) >= 1,
      'a failed completion attempt',
    );
    // That attempt finished bank_a's branch and recorded it: the retries are for flaky alone.
    const waiting = await world.request('GET', `/v1/transactions/${id}`);
    expect(waiting.body.branches.map((b: { resource: string; status: string }) => [b.resource, b.status])).toEqual([
      ['bank_a', 'committed'],
      ['flaky', 'prepared'],
    ]);
    await restartAfterCrash(flaky.cluster);
    expect((await world.request('GET', `/v1/transactions/${id}`)).body.status).toBe('committing');
    // Another transfer's COMMIT PREPARED on flaky works: the coordinator knows it is back.
    await eventually(
      () => world.submit(move('bank_a', 'flaky', 1, 5, { timeoutMs: 5_000 })),
      (r) => r.status === 201,
      'a transfer once flaky is back',
    );
    const done = await eventually(
      () => world.request('GET', `/v1/transactions/${id}`),
      (r) => r.body.status === 'committed',
      'the waiting transaction finished',
    );
    expect(done.body.branches.map((b: { status: string }) => b.status)).toEqual(['committed', 'committed']);
    expect((await query<{ balance: number }>(flaky.url, 'SELECT balance FROM accounts WHERE id = 4'))[0]!.balance).toBe(1007);
    expect(await world.balance('bank_a', 4)).toBe(993);
  });
});
