import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgresCluster, type PostgresCluster } from '../coordinator/embedded/postgres-cluster.ts';
import { createWorld, move, pause, type World } from './harness/world.ts';
import { eventually, query, restartAfterCrash, startFlakyParticipant } from './harness/waits.ts';

describe('a participant that fails', () => {
  let flaky: { cluster: PostgresCluster; url: string };
  let world: World;
  beforeAll(async () => {
    flaky = await startFlakyParticipant();
    // The begin record written at once: the tests hold its row to stop the decision.
    world = await createWorld({ extraResources: { flaky: flaky.url }, env: { TPC_BEGIN_DEFER_MS: '0' } });
  });
  afterAll(async () => {
    await world.close();
    await flaky.cluster.destroy();
  });

  it('refusing connections aborts the transaction in hand, and the service keeps serving', async () => {
    await flaky.cluster.stop();
    const res = await world.submit(move('bank_a', 'flaky', 10, 1, { timeoutMs: 5_000 }));
    expect(res.status).toBe(409);
    expect(res.body.error).toMatchObject({ resource: 'flaky', code: 'connection_failure' });
    expect(await world.balance('bank_a', 1)).toBe(1000);
    expect((await world.request('GET', '/healthz')).status).toBe(200);
    await flaky.cluster.start();
    const again = await world.submit(move('bank_a', 'flaky', 10, 1, { timeoutMs: 5_000 }));
    expect(again.status).toBe(201);
    expect(await world.balance('bank_a', 1)).toBe(990);
  });

  it('crashing mid-statement aborts everywhere and leaks no connection', async () => {
    const pending = world.submit(move('flaky', 'bank_b', 5, 2, { timeoutMs: 5_000, before: [pause(3)] }));
    await sleep(400);
    await flaky.cluster.crash();
    const res = await pending;
    expect(res.status).toBe(409);
    expect(res.body.error.resource).toBe('flaky');
    expect(await world.balance('bank_b', 2)).toBe(1000);
    await restartAfterCrash(flaky.cluster);
    const rows = await query<{ balance: number }>(flaky.url, 'SELECT balance FROM accounts WHERE id = 2');
    expect(rows[0]!.balance).toBe(1000);
    // The dead connections were thrown away, not pooled: the next transaction works.
    await eventually(
      () => world.submit(move('flaky', 'bank_b', 5, 2, { timeoutMs: 5_000 })),
      (r) => r.status === 201,
      'a transfer after the restart',
    );
    expect(await world.balance('bank_b', 2)).toBe(1005);
  });

  it('down during phase 2: the decision stands, the answer is 202, and the commit completes when it returns', async () => {
    const log = new pg.Client({ connectionString: world.urls.log });
    await log.connect();
    try {
      // Slow the work a little so the test can hold the transaction's log row before the decision.
      const pending = world.submit(move('bank_c', 'flaky', 25, 3, { timeoutMs: 5_000, before: [pause(0.5)] }));
      const [row] = await eventually(
        () => log.query<{ id: string }>("SELECT id FROM tpc_transactions WHERE status = 'active'").then((r) => r.rows),
        (rows) => rows.length === 1,
        'the begin record',
      );
      await log.query('BEGIN');
      await log.query('SELECT 1 FROM tpc_transactions WHERE id = $1 FOR UPDATE', [row!.id]);
      // Both branches prepare; the decision write now waits on our row lock.
      await eventually(
        () => query<{ gid: string }>(flaky.url, 'SELECT gid FROM pg_prepared_xacts'),
        (r) => r.length === 1,
        'the flaky branch prepared',
      );
      await flaky.cluster.crash();
      await log.query('COMMIT');
      const res = await pending;
      expect(res.status).toBe(202);
      expect(res.body.status).toBe('committing');
      expect(await world.balance('bank_c', 3)).toBe(975); // committed where it could be
      await restartAfterCrash(flaky.cluster);
      const done = await eventually(
        () => world.request('GET', `/v1/transactions/${row!.id}`),
        (r) => r.body.status === 'committed',
        'completion by the queue',
      );
      expect(done.body.branches.map((b: { status: string }) => b.status)).toEqual(['committed', 'committed']);
      const rows = await query<{ balance: number }>(flaky.url, 'SELECT balance FROM accounts WHERE id = 3');
      expect(rows[0]!.balance).toBe(1025);
    } finally {
      await log.end();
    }
  });
});

describe('a log database that fails', () => {
  let logCluster: PostgresCluster;
  let world: World;
  beforeAll(async () => {
    logCluster = await startPostgresCluster();
    world = await createWorld({ logUrl: await logCluster.createDatabase('log') });
  });
  afterAll(async () => {
    await world.close();
    await logCluster.destroy();
  });

  it('down: the request fails with 503, nothing is applied, readiness says why; back: it serves again', async () => {
    await logCluster.stop();
    const res = await world.submit(move('bank_a', 'bank_c', 50, 4, { timeoutMs: 5_000 }));
    expect(res.status).toBe(503);
    expect(res.headers.get('content-type')).toMatch(/application\/problem\+json/);
    expect(await world.balance('bank_a', 4)).toBe(1000);
    expect(await world.balance('bank_c', 4)).toBe(1000);
    expect(await world.preparedGids()).toEqual([]);
    const ready = await world.request('GET', '/readyz');
    expect(ready.status).toBe(503);
    expect(ready.body.checks.log.ok).toBe(false);
    await logCluster.start();
    await eventually(
      () => world.submit(move('bank_a', 'bank_c', 50, 4, { timeoutMs: 5_000 })),
      (r) => r.status === 201,
      'a transfer after the log returns',
    );
    expect(await world.balance('bank_a', 4)).toBe(950);
    expect((await world.request('GET', '/readyz')).status).toBe(200);
  });
});
