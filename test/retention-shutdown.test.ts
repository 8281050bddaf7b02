import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openLogDatabase } from '../coordinator/log/log-database.ts';
import { RecoveryStore } from '../coordinator/log/recovery-store.ts';
import { startCoordinatorProcess, type CoordinatorProcess } from './harness/coordinator-process.ts';
import { createDatabases, createWorld, httpRequest, move, pause, transfer, type Databases, type World } from './harness/world.ts';
import { eventually, query } from './harness/waits.ts';

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Counts, per table, the log rows that belong to `ids`. */
async function footprint(url: string, ids: string[]) {
  const [row] = await query<{ tx: number; branches: number; events: number; keys: number }>(
    url,
    `
    SELECT (SELECT count(*) FROM tpc_transactions WHERE id = ANY($1::uuid[]))::int AS tx,
      (SELECT count(*) FROM tpc_branch_rows WHERE transaction_id = ANY($1::uuid[]))::int AS branches,
      (SELECT count(*) FROM tpc_events WHERE transaction_id = ANY($1::uuid[]))::int AS events,
      (SELECT count(*) FROM tpc_idempotency_keys WHERE transaction_id = ANY($1::uuid[]))::int AS keys`,
    [ids],
  );
  return row!;
}

describe('log retention', () => {
  let world: World;
  beforeAll(async () => {
    // The service's own hourly prune keeps 100 days, so only the explicit calls below prune.
    world = await createWorld({ env: { TPC_RETENTION_DAYS: '100', TPC_RETRY_BASE_MS: '100', TPC_RETRY_MAX_MS: '500' } });
  });
  afterAll(async () => {
    await world?.close();
  });

  it('prunes finished transactions past retention in batches, with branches, events and keys; keeps recent and unfinished ones', async () => {
    const submit = async (body: unknown, key: string, status: number) => {
      const r = await world.submit(body, { headers: { 'Idempotency-Key': key } });
      expect(r.status).toBe(status);
      return r.body.id as string;
    };
    const old = [
      await submit(transfer('bank_a', 'bank_b', 1, 1, 1), 'old-1', 201),
      await submit(transfer('bank_a', 'bank_c', 1, 2, 2), 'old-2', 201),
      await submit(transfer('bank_b', 'bank_c', 1, 3, 3), 'old-3', 201),
      await submit(transfer('bank_a', 'bank_c', 5_000, 4, 4), 'old-aborted', 409),
    ];
    const recent = [await submit(transfer('bank_a', 'bank_b', 1, 5, 5), 'recent-1', 201), await submit(transfer('bank_c', 'bank_b', 1, 6, 6), 'recent-2', 201)];

    // An unfinished one: decided commit, but bank_c refuses connections during phase 2.
    const target = new URL(world.urls.bank_c);
    const bankC = target.pathname.slice(1);
    const admin = new URL(world.urls.bank_c);
    admin.pathname = '/postgres';
    admin.username = 'postgres'; // the superuser: only it may end the oracle's sessions too
    const log = new pg.Client({ connectionString: world.urls.log });
    await log.connect();
    let unfinished: string;
    try {
      const pending = world.submit(move('bank_a', 'bank_c', 7, 7, { before: [pause(0.5)] }), { headers: { 'Idempotency-Key': 'unfinished' } });
      const [row] = await eventually(
        () => log.query<{ id: string }>("SELECT id FROM tpc_transactions WHERE status = 'active'").then((r) => r.rows),
        (rows) => rows.length === 1,
        'the begin record',
        10_000,
      );
      unfinished = row!.id;
      await log.query('BEGIN');
      await log.query('SELECT 1 FROM tpc_transactions WHERE id = $1 FOR UPDATE', [unfinished]);
      await eventually(
        () => world.preparedGids(),
        (g) => g.length === 2,
        'both branches prepared',
        10_000,
      );
      await query(admin.href, `ALTER DATABASE ${bankC} ALLOW_CONNECTIONS false`);
      await query(admin.href, 'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [bankC]);
      await log.query('COMMIT');
      const answer = await pending;
      expect(answer.status).toBe(202);
      expect(answer.body.status).toBe('committing');
    } finally {
      await log.end().catch(() => {});
    }

    try {
      // Backdate: the old ones finished 40 days ago; the unfinished one is as old in every timestamp
      // it has (completed_at included, so that only its status protects it).
      await query(world.urls.log, "UPDATE tpc_transactions SET completed_at = now() - interval '40 days' WHERE id = ANY($1::uuid[])", [old]);
      await query(
        world.urls.log,
        `UPDATE tpc_transactions SET created_at = now() - interval '40 days', decided_at = now() - interval '40 days',
        completed_at = now() - interval '40 days' WHERE id = $1`,
        [unfinished],
      );
      expect(await footprint(world.urls.log, old)).toEqual({ tx: 4, branches: 8, events: expect.any(Number), keys: 4 });
      const recentBefore = await footprint(world.urls.log, [...recent, unfinished]);

      const logDb = openLogDatabase({ url: world.urls.log, maxConnections: 2 });
      try {
        const recovery = new RecoveryStore(logDb);
        const before = new Date(Date.now() - 30 * 86_400_000);
        const batches: number[] = [];
        for (let i = 0; i < 10; i++) {
          const n = await recovery.pruneBatch(before, 3);
          batches.push(n);
          if (n < 3) break;
        }
        expect(batches).toEqual([3, 1]);
        expect(await recovery.pruneBatch(before, 3)).toBe(0);
      } finally {
        await logDb.close();
      }

      expect(await footprint(world.urls.log, old)).toEqual({ tx: 0, branches: 0, events: 0, keys: 0 });
      expect(await footprint(world.urls.log, [...recent, unfinished])).toEqual(recentBefore);
      expect(recentBefore).toMatchObject({ tx: 3, branches: 6, keys: 3 });
      // A kept key still answers idempotently with its transaction.
      const replay = await world.submit(transfer('bank_a', 'bank_b', 1, 5, 5), { headers: { 'Idempotency-Key': 'recent-1' } });
      expect(replay.body.id).toBe(recent[0]);
      // The service's own retention pass (what its hourly job scheduler runs) prunes by TPC_RETENTION_DAYS.
      await query(world.urls.log, 'UPDATE tpc_transactions SET completed_at = now() - make_interval(days => $2) WHERE id = $1', [
        recent[1],
        world.config.retentionDays + 1,
      ]);
      expect(await world.service.maintenance.prune()).toBe(1);
      expect(await footprint(world.urls.log, [recent[1]!])).toEqual({ tx: 0, branches: 0, events: 0, keys: 0 });
      const stillThere = await world.request('GET', `/v1/transactions/${unfinished}`);
      expect(stillThere.body.status).toBe('committing');
    } finally {
      await query(admin.href, `ALTER DATABASE ${bankC} ALLOW_CONNECTIONS true`);
    }
    // The kept unfinished transaction completes once bank_c is back.
    await eventually(
      () => world.request('GET', `/v1/transactions/${unfinished}`),
      (r) => r.body.status === 'committed',
      'completion of the kept transaction',
    );
    expect(await world.balance('bank_c', 7)).toBe(1007);
  });
});

describe('graceful shutdown', () => {
  let dbs: Databases;
  const processes: CoordinatorProcess[] = [];
  const env = () => ({
    ...dbs.env,
    LOG_LEVEL: 'info',
    TPC_RECONCILE_INTERVAL_MS: '300',
    TPC_RETRY_BASE_MS: '100',
    TPC_RETRY_MAX_MS: '500',
    TPC_SHUTDOWN_TIMEOUT_MS: '20000',
  });
  const start = async () => {
    const p = await startCoordinatorProcess(env());
    processes.push(p);
    return p;
  };
  const slow = (seconds: number, account: number) => ({
    branches: [
      {
        resource: 'bank_a',
        statements: [
          { sql: 'SELECT pg_sleep($1)', params: [seconds] },
          { sql: 'UPDATE accounts SET balance = balance - 10 WHERE id = $1', params: [account] },
        ],
      },
      { resource: 'bank_c', statements: [{ sql: 'UPDATE accounts SET balance = balance + 10 WHERE id = $1', params: [account] }] },
    ],
    timeoutMs: 10_000,
  });
  const beginRecorded = () =>
    eventually(
      () => dbs.db.log.query<{ id: string }>("SELECT id FROM tpc_transactions WHERE status = 'active'").then((r) => r.rows),
      (rows) => rows.length === 1,
      'the begin record',
      10_000,
    ).then((rows) => rows[0]!.id);
  beforeAll(async () => {
    dbs = await createDatabases();
  });
  afterEach(async () => {
    await Promise.allSettled(processes.splice(0).map((p) => p.kill('SIGKILL')));
  });
  afterAll(async () => {
    await dbs?.end();
  });

  it('SIGTERM: the transaction in flight still gets its 201, the process exits 0, new connections are refused', async () => {
    const p = await start();
    const pending = httpRequest(p.url, 'POST', '/v1/transactions', slow(1, 1), { headers: { 'Idempotency-Key': 'graceful' } });
    const id = await beginRecorded();
    p.child.kill('SIGTERM');
    await eventually(
      async () => p.logs.some((l) => String(l.msg).startsWith('shutting down')),
      (v) => v,
      'the shutdown log line',
      5_000,
    );
    // Draining: no new connection is accepted while the one in flight finishes.
    await expect(httpRequest(p.url, 'GET', '/healthz')).rejects.toThrow();
    const res = await within(pending, 15_000, 'the answer in flight');
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ id, status: 'committed', error: null });
    expect(await within(p.exited, 15_000, 'the exit after SIGTERM')).toBe(0);
    await expect(httpRequest(p.url, 'GET', '/healthz')).rejects.toThrow();
    expect(await dbs.balance('bank_a', 1)).toBe(990);
    expect(await dbs.balance('bank_c', 1)).toBe(1010);
    expect(await dbs.preparedGids()).toEqual([]);
  });

  it('a second SIGTERM during a long drain exits at once with 1; a fresh coordinator settles the transaction', async () => {
    const p = await start();
    const body = slow(5, 2);
    const pending = httpRequest(p.url, 'POST', '/v1/transactions', body, { headers: { 'Idempotency-Key': 'impatient' } }).catch((err: Error) => err);
    const id = await beginRecorded();
    p.child.kill('SIGTERM');
    await eventually(
      async () => p.logs.some((l) => String(l.msg).startsWith('shutting down')),
      (v) => v,
      'the shutdown log line',
      5_000,
    );
    const t0 = Date.now();
    p.child.kill('SIGTERM');
    expect(await within(p.exited, 3_000, 'the exit after a second SIGTERM')).toBe(1);
    expect(Date.now() - t0).toBeLessThan(3_000);
    expect(await pending).toBeInstanceOf(Error); // the request in flight got no answer

    const fresh = await start();
    const settled = await eventually(
      () => dbs.db.log.query<{ status: string }>('SELECT status::text FROM tpc_transactions WHERE id = $1', [id]).then((r) => r.rows[0]?.status),
      (s) => s === 'committed' || s === 'aborted',
      'recovery of the abandoned transaction',
      30_000,
    );
    const applied = settled === 'committed';
    expect(await dbs.balance('bank_a', 2)).toBe(applied ? 990 : 1000);
    expect(await dbs.balance('bank_c', 2)).toBe(applied ? 1010 : 1000);
    expect(await dbs.preparedGids()).toEqual([]);
    // Nothing was decided before the process died (the slow branch never prepared): presumed abort.
    expect(settled).toBe('aborted');
    // The client retrying with its key gets the log's answer.
    const replay = await httpRequest(fresh.url, 'POST', '/v1/transactions', body, { headers: { 'Idempotency-Key': 'impatient' } });
    expect(replay.status).toBe(409);
    expect(replay.body).toMatchObject({ id, status: 'aborted', error: { code: 'deadline_exceeded' } });
    fresh.child.kill('SIGTERM');
    expect(await within(fresh.exited, 15_000, 'the fresh coordinator stopping')).toBe(0);
  });
});
