import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresCluster } from '../coordinator/embedded/postgres-cluster.ts';
import { startRedisServer, type RedisServer } from '../coordinator/embedded/redis-server.ts';
import { retryingFor } from '../coordinator/service.ts';
import { decidedWithFlakyDown, eventually, restartAfterCrash, startFlakyParticipant } from './harness/waits.ts';
import { createWorld, type World } from './harness/world.ts';

/*
 * The in-doubt flag follows the clock, not only the count of attempts: in a long outage with a
 * large backlog each transaction's job runs seldom, and operators must still see everything that
 * is stuck. A decided transaction unfinished for longer than its attempts would take at the retry
 * schedule is flagged by the next reconciliation pass, however few attempts it had.
 */
describe('a decided transaction unfinished for too long', () => {
  let redis: RedisServer;
  let flaky: { cluster: PostgresCluster; url: string };
  let world: World;
  beforeAll(async () => {
    redis = await startRedisServer();
    flaky = await startFlakyParticipant();
    // Two attempts, three seconds apart: in doubt after 6 s, by attempts or by the clock. One second
    // apart left too little time on a loaded machine to stop Redis before the second attempt ran.
    world = await createWorld({
      extraResources: { flaky: flaky.url },
      env: { REDIS_URL: redis.url, TPC_IN_DOUBT_AFTER_ATTEMPTS: '2', TPC_RETRY_BASE_MS: '3000', TPC_RETRY_MAX_MS: '3000', TPC_RECONCILE_INTERVAL_MS: '600000' },
    });
  });
  afterAll(async () => {
    try {
      await world?.close();
    } finally {
      await Promise.allSettled([redis?.stop(), flaky?.cluster.destroy()]);
    }
  });

  it('is flagged in doubt by the reconciliation pass though its job never ran twice', async () => {
    expect(retryingFor(2, 1000, 1000)).toBe(2000);
    expect(retryingFor(2, 3000, 3000)).toBe(6000);
    expect(retryingFor(5, 500, 30_000)).toBe(15_500);
    const id = await decidedWithFlakyDown(world, flaky, 2, 3);
    // No Redis: its completion job cannot run again (a large backlog looks the same to one transaction).
    await redis.crash();
    const row = async () =>
      (await world.db.log.query<{ in_doubt: boolean; attempts: number }>('SELECT in_doubt, attempts FROM tpc_transactions WHERE id = $1', [id])).rows[0]!;

    // Not yet overdue: a pass leaves it alone (the pass fails later, on queueing without Redis).
    await world.service.maintenance.reconcile().catch(() => {});
    expect(await row()).toMatchObject({ in_doubt: false });
    await new Promise((r) => setTimeout(r, 6_200));
    await world.service.maintenance.reconcile().catch(() => {});
    const flagged = await row();
    expect(flagged.in_doubt).toBe(true);
    expect(flagged.attempts).toBeLessThan(2);
    const events = (await world.request('GET', `/v1/transactions/${id}`)).body.events as { kind: string; detail: Record<string, unknown> }[];
    expect(events.filter((e) => e.kind === 'in_doubt')).toEqual([
      expect.objectContaining({ detail: expect.objectContaining({ unfinishedSince: expect.any(String) }) }),
    ]);
    // A second pass flags nothing twice.
    await world.service.maintenance.reconcile().catch(() => {});
    expect(((await world.request('GET', `/v1/transactions/${id}`)).body.events as { kind: string }[]).filter((e) => e.kind === 'in_doubt')).toHaveLength(1);

    // Back to normal: Redis and the participant return, and the transaction finishes.
    await redis.start();
    await restartAfterCrash(flaky.cluster);
    await eventually(
      () => world.request('GET', '/readyz'),
      (r) => r.status === 200,
      'ready again',
      20_000,
    );
    await world.service.maintenance.reconcile();
    await eventually(
      () => world.request('GET', `/v1/transactions/${id}`),
      (r) => r.body.status === 'committed',
      'the transaction committed',
      30_000,
    );
  });
});
