import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../coordinator/config/load-config.ts';
import { startRedisServer, type RedisServer } from '../coordinator/embedded/redis-server.ts';
import { startService, type RunningService } from '../coordinator/service.ts';
import { startCoordinatorProcess, type CoordinatorProcess } from './harness/coordinator-process.ts';
import { eventually } from './harness/waits.ts';
import { createDatabases, httpRequest, pause, prepareOwnBranch, type Databases } from './harness/world.ts';

/*
 * Deadlines cost Redis nothing per transaction: the driver enforces its own in process, and the
 * insurance against a dead driver is reconciliation's sweep of the log (a job scheduler), plus a
 * delayed job only for a transaction still running after a grace period. Proven here with a
 * private Redis: a transaction that commits at once leaves no Redis command naming it, and a
 * coordinator killed with undecided transactions in flight, Redis flushed at the same moment,
 * still has them aborted by the other instance within one sweep interval after their deadlines.
 */
const SWEEP_MS = 1_000;

describe('deadlines without Redis on the happy path', () => {
  let redis: RedisServer;
  let dbs: Databases;
  let env: Record<string, string>;
  let survivor: RunningService;
  let victim: CoordinatorProcess | undefined;

  beforeAll(async () => {
    redis = await startRedisServer();
    dbs = await createDatabases();
    env = { ...dbs.env, REDIS_URL: redis.url, TPC_QUEUE_PREFIX: `q${dbs.tag}`, TPC_RECONCILE_INTERVAL_MS: String(SWEEP_MS) };
    survivor = await startService(loadConfig({ ...env, TPC_INSTANCE_ID: 'survivor' }), { logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }) });
  }, 60_000);

  afterAll(async () => {
    await victim?.kill();
    await survivor?.close();
    await dbs?.end();
    await redis?.stop();
  });

  it('a transaction that commits at once sends Redis no command naming it', async () => {
    // MONITOR on a plain socket: every command the server runs, from every client, as text.
    const monitor = connect(redis.port, '127.0.0.1');
    let seen = '';
    monitor.on('data', (d: Buffer) => {
      seen += d.toString();
    });
    monitor.write('MONITOR\r\n');
    await eventually(
      async () => seen,
      (s) => s.startsWith('+OK'),
      'MONITOR to start',
      5_000,
    );
    try {
      const ids: string[] = [];
      for (let i = 0; i < 20; i++) {
        const r = await httpRequest(
          survivor.url,
          'POST',
          '/v1/transactions',
          {
            branches: [
              { resource: 'bank_a', statements: [{ sql: 'UPDATE accounts SET balance = balance - 1 WHERE id = 1', params: [] }] },
              { resource: i % 2 ? 'bank_b' : 'bank_c', statements: [{ sql: 'UPDATE accounts SET balance = balance + 1 WHERE id = 1', params: [] }] },
            ],
            timeoutMs: 10_000,
          },
          i % 2 ? { headers: { 'Idempotency-Key': `k-${randomBytes(4).toString('hex')}` } } : {},
        );
        expect(r.status, JSON.stringify(r.body)).toBe(201);
        ids.push(r.body.id);
      }
      // Interactive ones too, committed by a call to this instance within the grace period.
      for (let i = 0; i < 4; i++) {
        const begun = await httpRequest(survivor.url, 'POST', '/v1/transactions', {
          interactive: true,
          branches: [{ resource: 'bank_a' }, { resource: 'bank_b' }],
          timeoutMs: 10_000,
        });
        expect(begun.status, JSON.stringify(begun.body)).toBe(201);
        const [a, b] = begun.body.branches as { gid: string }[];
        await prepareOwnBranch(dbs.urls.bank_a, a!.gid, 'UPDATE accounts SET balance = balance - 1 WHERE id = 2');
        await prepareOwnBranch(dbs.urls.bank_b, b!.gid, 'UPDATE accounts SET balance = balance + 1 WHERE id = 2');
        expect((await httpRequest(survivor.url, 'POST', `/v1/transactions/${begun.body.id}/commit`)).status).toBe(200);
        ids.push(begun.body.id);
      }
      // The monitor sees every command; the workers' own polling names no transaction.
      await new Promise((r) => setTimeout(r, 300));
      const lines = seen.split('\r\n');
      expect(lines.length, "the monitor saw the workers' commands").toBeGreaterThan(2);
      expect(lines.filter((c) => ids.some((id) => c.includes(id)))).toEqual([]);
    } finally {
      monitor.destroy();
    }
  });

  it('a coordinator killed with undecided transactions, Redis flushed: aborted within one sweep after their deadlines', async () => {
    victim = await startCoordinatorProcess({ ...env, TPC_INSTANCE_ID: 'victim', LOG_LEVEL: 'info' });
    const N = 4;
    const timeoutMs = 3_000;
    // Each: bank_a prepared at once, bank_c held in a long statement, so no decision is near.
    const pending = Array.from({ length: N }, (_, i) =>
      httpRequest(victim!.url, 'POST', '/v1/transactions', {
        branches: [
          { resource: 'bank_a', statements: [{ sql: 'UPDATE accounts SET balance = balance - 5 WHERE id = $1', params: [i + 3] }] },
          { resource: 'bank_c', statements: [pause(30), { sql: 'UPDATE accounts SET balance = balance + 5 WHERE id = $1', params: [i + 3] }] },
        ],
        timeoutMs,
      }).catch((err: unknown) => err),
    );
    const active = await eventually(
      () =>
        dbs.db.log
          .query<{ id: string; deadline: Date }>("SELECT id, deadline FROM tpc_transactions WHERE namespace = $1 AND status = 'active'", [dbs.namespace])
          .then((r) => r.rows),
      (rows) => rows.length === N,
      'the begin records',
      10_000,
    );
    await eventually(
      () => dbs.preparedGids(),
      (g) => g.length === N,
      'the bank_a branches prepared',
      10_000,
    );
    await victim.kill('SIGKILL');
    victim = undefined;
    await Promise.all(pending);
    const flusher = new Redis(redis.url);
    try {
      expect(await flusher.flushall()).toBe('OK');
    } finally {
      flusher.disconnect();
    }

    const lastDeadline = Math.max(...active.map((r) => r.deadline.getTime()));
    const ids = active.map((r) => r.id);
    // One sweep interval after the last deadline, with room for the sweep's own work and a busy machine.
    const bound = lastDeadline - Date.now() + SWEEP_MS + 4_000;
    const finished = await eventually(
      () =>
        dbs.db.log
          .query<{ id: string; status: string; late: number }>(
            'SELECT id, status::text, (extract(epoch FROM decided_at - deadline) * 1000)::int AS late FROM tpc_transactions WHERE id = ANY($1::uuid[])',
            [ids],
          )
          .then((r) => r.rows),
      (rows) => rows.every((r) => r.status === 'aborted'),
      'every transaction of the dead driver aborted',
      bound,
    );
    console.info(`deadline sweep: aborted ${finished.map((r) => r.late).join(', ')} ms after their deadlines (sweep every ${SWEEP_MS} ms)`);
    for (const r of finished) expect(r.late, 'decided after its deadline, not before').toBeGreaterThanOrEqual(0);
    await eventually(
      () => dbs.preparedGids(),
      (g) => g.length === 0,
      'no prepared branch left',
      10_000,
    );
    for (let i = 0; i < N; i++) expect(await dbs.balance('bank_a', i + 3)).toBe(1000);
  });
});
