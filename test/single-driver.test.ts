import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresCluster } from '../coordinator/embedded/postgres-cluster.ts';
import { createFlakyWorld, decidedWithFlakyDown, query, restartAfterCrash } from './harness/waits.ts';
import type { World } from './harness/world.ts';

/*
 * One driver per transaction inside one instance too. The log's lease admits its own holder, so
 * two jobs of one process for the same transaction (its completion job and its deadline job, or a
 * reconciliation requeue) would both drive it and send every COMMIT PREPARED twice; the engine
 * lets one at a time through, and the other is told "busy" (its job retries later and finds the
 * transaction finished).
 */
describe('resuming one transaction twice at once in one instance', () => {
  let flaky: { cluster: PostgresCluster; url: string };
  let world: World;
  beforeAll(async () => {
    // Reconciliation far off: only this test's calls drive the transaction.
    ({ flaky, world } = await createFlakyWorld({ TPC_RECONCILE_INTERVAL_MS: '600000', TPC_RETRY_BASE_MS: '60000', TPC_RETRY_MAX_MS: '60000' }));
  });
  afterAll(async () => {
    try {
      await world?.close();
    } finally {
      await flaky?.cluster.destroy();
    }
  });

  it('drives it once; the second is busy', async () => {
    const id = await decidedWithFlakyDown(world, flaky, 4, 4);
    await restartAfterCrash(flaky.cluster);

    const [first, second] = await Promise.all([world.service.engine.resume(id), world.service.engine.resume(id)]);
    expect(first).toEqual({ state: 'finished', status: 'committed' });
    expect(second).toEqual({ state: 'busy' });
    expect(await query(flaky.url, 'SELECT gid FROM pg_prepared_xacts')).toEqual([]);
    expect((await query<{ balance: number }>(flaky.url, 'SELECT balance FROM accounts WHERE id = 4'))[0]!.balance).toBe(1004);
    // Once it is done, a later attempt finds it finished.
    expect(await world.service.engine.resume(id)).toMatchObject({ state: expect.stringMatching(/^(finished|gone)$/) });
  });
});
