import { randomBytes } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWorld, move, pause, type HttpAnswer, type World } from './harness/world.ts';
import { eventually } from './harness/waits.ts';

/*
 * The log loses a transaction its driver still holds: the begin record, written with
 * synchronous_commit = off, did not reach the standby promoted in a failover. Simulated by deleting
 * the transaction's rows (as the superuser) while the transaction waits between prepare and
 * decision; the decision's compare-and-set then finds no row.
 */

/**
 * Submits `body`, holds the transaction's log row (so its decision waits) until every branch is
 * prepared, runs `meanwhile` in that same log transaction of the oracle, commits, returns the answer.
 */
async function heldBeforeDecision(
  world: World,
  body: unknown,
  headers: Record<string, string>,
  branches: number,
  meanwhile: (log: { query: (text: string, values?: unknown[]) => Promise<unknown> }, id: string) => Promise<void>,
): Promise<{ id: string; answer: HttpAnswer }> {
  const pending = world.submit(body, { headers });
  const log = await world.db.log.connect();
  try {
    const [row] = await eventually(
      () => log.query<{ id: string }>("SELECT id FROM tpc_transactions WHERE namespace = $1 AND status = 'active'", [world.namespace]).then((r) => r.rows),
      (rows) => rows.length === 1,
      'the begin record',
      10_000,
    );
    const id = row!.id;
    await log.query('BEGIN');
    const locked = await log.query("SELECT 1 FROM tpc_transactions WHERE id = $1 AND status = 'active' FOR UPDATE", [id]);
    expect(locked.rowCount).toBe(1);
    await eventually(
      () => world.preparedGids().then((g) => g.filter((x) => x.includes(id))),
      (g) => g.length === branches,
      'every branch prepared',
      10_000,
    );
    await meanwhile(log, id);
    await log.query('COMMIT');
    return { id, answer: await pending };
  } finally {
    log.release();
  }
}

const lose = (log: { query: (text: string, values?: unknown[]) => Promise<unknown> }, id: string) =>
  log.query('DELETE FROM tpc_transactions WHERE id = $1', [id]).then(() => {});

const transactionsOf = async (world: World) =>
  (await world.db.log.query<{ n: number }>('SELECT count(*)::int AS n FROM tpc_transactions WHERE namespace = $1', [world.namespace])).rows[0]!.n;

function expectLost(answer: HttpAnswer, id: string) {
  expect(answer.status).toBe(409);
  expect(answer.body).toMatchObject({ id, status: 'aborted', error: { code: 'log_lost_transaction', resource: null, statement: null } });
  expect(answer.body.error.message).toMatch(/lost the record.*nothing was applied/);
}

describe('a transaction the log lost before its decision', () => {
  let world: World;
  beforeAll(async () => {
    // The begin record written at once: these tests lose it (delete its row) before the decision.
    world = await createWorld({ env: { TPC_BEGIN_DEFER_MS: '0' } });
  });
  afterAll(async () => {
    await world?.close();
  });

  it('two branches prepared, record deleted: 409 aborted log_lost_transaction, rolled back at once, nothing applied', async () => {
    const before = [await world.balance('bank_a', 1), await world.balance('bank_c', 1)];
    const { id, answer } = await heldBeforeDecision(world, move('bank_a', 'bank_c', 10, 1, { before: [pause(0.3)] }), {}, 2, lose);
    expectLost(answer, id);
    expect(answer.body.branches.map((b: { status: string }) => b.status)).toEqual(['aborted', 'aborted']);
    // Immediately, not after reconciliation or the orphan timeout.
    expect(await world.preparedGids()).toEqual([]);
    expect([await world.balance('bank_a', 1), await world.balance('bank_c', 1)]).toEqual(before);
    expect((await world.request('GET', `/v1/transactions/${id}`)).status).toBe(404);
  });

  it('a branch failed after another was prepared, record deleted before the abort is written: the prepared one rolled back at once', async () => {
    const before = await world.balance('bank_a', 6);
    const body = {
      branches: [
        { resource: 'bank_a', statements: [{ sql: 'UPDATE accounts SET balance = balance - 2 WHERE id = 6', params: [] }] },
        {
          resource: 'bank_c',
          statements: [pause(0.8), { sql: 'UPDATE accounts SET balance = balance + 2 WHERE id = -1', params: [], expect: { rowCount: 1 } }],
        },
      ],
      timeoutMs: 10_000,
    };
    const { id, answer } = await heldBeforeDecision(world, body, {}, 1, lose);
    expectLost(answer, id);
    expect(await world.preparedGids()).toEqual([]);
    expect(await world.balance('bank_a', 6)).toBe(before);
  });

  it('a keyed one: the retry with the same key (lost with the record) runs once and commits', async () => {
    const key = { 'Idempotency-Key': `lost-${randomBytes(4).toString('hex')}` };
    const body = move('bank_b', 'bank_c', 7, 2, { before: [pause(0.3)] });
    const before = [await world.balance('bank_b', 2), await world.balance('bank_c', 2)];
    const { id, answer } = await heldBeforeDecision(world, body, key, 2, lose);
    expectLost(answer, id);
    expect(await world.preparedGids()).toEqual([]);
    expect([await world.balance('bank_b', 2), await world.balance('bank_c', 2)]).toEqual(before);

    const retry = await world.submit(body, { headers: key });
    expect(retry.status).toBe(201);
    expect(retry.body.id).not.toBe(id);
    expect([await world.balance('bank_b', 2), await world.balance('bank_c', 2)]).toEqual([before[0]! - 7, before[1]! + 7]);
    const again = await world.submit(body, { headers: key });
    expect(again).toMatchObject({ status: 201, body: { id: retry.body.id } }); // the key now names the retry
    expect([await world.balance('bank_b', 2), await world.balance('bank_c', 2)]).toEqual([before[0]! - 7, before[1]! + 7]);
  });

  it('one branch (one-phase), record deleted before its commit: 409 log_lost_transaction, nothing applied', async () => {
    const before = await world.balance('bank_a', 3);
    const pending = world.submit({
      branches: [{ resource: 'bank_a', statements: [pause(0.5), { sql: 'UPDATE accounts SET balance = balance - 5 WHERE id = 3', params: [] }] }],
      timeoutMs: 10_000,
    });
    const [row] = await eventually(
      () =>
        world.db.log.query<{ id: string }>("SELECT id FROM tpc_transactions WHERE namespace = $1 AND status = 'active'", [world.namespace]).then((r) => r.rows),
      (rows) => rows.length === 1,
      'the begin record',
      10_000,
    );
    await world.db.log.query('DELETE FROM tpc_transactions WHERE id = $1', [row!.id]);
    expectLost(await pending, row!.id);
    expect(await world.balance('bank_a', 3)).toBe(before);
  });

  it('a driver that lost its lease before deciding answers 503 with Retry-After, never 202 active; the same key then gets the first outcome, no second transaction', async () => {
    const key = { 'Idempotency-Key': `lease-${randomBytes(4).toString('hex')}` };
    const body = move('bank_a', 'bank_c', 3, 4, { before: [pause(0.3)], timeoutMs: 2_500 });
    const before = [await world.balance('bank_a', 4), await world.balance('bank_c', 4)];
    const count = await transactionsOf(world);
    // Another (dead) instance holds the lease until the deadline: this driver's decision is fenced out.
    const { id, answer } = await heldBeforeDecision(world, body, key, 2, (log, tx) =>
      log.query("UPDATE tpc_transactions SET driver = 'an-instance-that-died', lease_until = deadline WHERE id = $1", [tx]).then(() => {}),
    );
    expect(answer.status).toBe(503);
    expect(answer.body).toMatchObject({ type: 'urn:tpc:problem:unavailable', status: 503 });
    expect(answer.body.detail).toContain(id);
    expect(answer.headers.get('retry-after')).toBe('1');

    const retry = await world.submit(body, { headers: key });
    expect(retry.status).toBe(409);
    expect(retry.body).toMatchObject({ id, status: 'aborted', error: { code: 'deadline_exceeded' } });
    expect(await transactionsOf(world)).toBe(count + 1);
    await eventually(
      () => world.preparedGids(),
      (g) => g.length === 0,
      'branches rolled back',
      10_000,
    );
    expect([await world.balance('bank_a', 4), await world.balance('bank_c', 4)]).toEqual(before);
  });
});

/** A TCP proxy in front of the log that can reset every connection it carries (the client reads ECONNRESET). */
async function startResettingProxy(target: URL): Promise<{ port: number; resetAll(): void; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(client);
    client.on('close', () => {
      sockets.delete(client);
      upstream.destroy();
    });
    upstream.on('close', () => client.destroy());
    client.on('error', () => {});
    upstream.on('error', () => {});
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    resetAll: () => {
      for (const s of sockets) s.resetAndDestroy();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

describe('a keyed submission whose begin write meets a dropped log connection', () => {
  let world: World;
  let proxy: Awaited<ReturnType<typeof startResettingProxy>>;
  beforeAll(async () => {
    world = await createWorld({
      beforeStart: async (dbs) => {
        const url = new URL(dbs.urls.log);
        proxy = await startResettingProxy(new URL(dbs.urls.log));
        url.host = `127.0.0.1:${proxy.port}`;
        return { DATABASE_URL: url.toString() };
      },
    });
  });
  afterAll(async () => {
    await world?.close();
    await proxy?.close();
  });

  it('answers 503 unavailable (not 500) and changes nothing; the same key then gets that attempt aborted at once, a new key commits once', async () => {
    const key = { 'Idempotency-Key': `reset-${randomBytes(4).toString('hex')}` };
    const body = move('bank_a', 'bank_b', 4, 5);
    const before = [await world.balance('bank_a', 5), await world.balance('bank_b', 5)];
    const blocker = await world.db.log.connect();
    let answer: HttpAnswer;
    try {
      // The begin's insert of the key waits on this lock, so the reset meets it mid-statement.
      await blocker.query('BEGIN');
      await blocker.query('LOCK TABLE tpc_idempotency_keys IN EXCLUSIVE MODE');
      const pending = world.submit(body, { headers: key });
      // An answer before the begin ever waited (seen once on a loaded CI machine) says why.
      const early = pending.then((r) => {
        throw new Error(`answered ${r.status} before its begin waited on the lock: ${JSON.stringify(r.body)}`);
      });
      early.catch(() => {});
      await Promise.race([
        early,
        // Asked from outside the blocker's transaction: a transaction sees pg_stat_activity's list
        // of backends as it was at its first look, so a connection the log pool opened afterwards
        // (its idle ones time out after 30 s on a slow run) was never seen waiting.
        eventually(
          () =>
            world.db.log
              .query(
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND application_name = 'tpc-coordinator-log'",
              )
              .then((r) => r.rowCount),
          (n) => n === 1,
          'the begin waiting on the lock',
          10_000,
        ),
      ]);
      proxy.resetAll();
      answer = await pending;
    } finally {
      await blocker.query('ROLLBACK').catch(() => {});
      blocker.release();
    }
    expect(answer.status).toBe(503);
    expect(answer.body).toMatchObject({ type: 'urn:tpc:problem:unavailable', status: 503 });
    // The server never saw the reset while waiting: the begin record (with the key) was written, its
    // reply lost. No branch was touched (a keyed begin is confirmed before any work).
    const [first] = await eventually(
      () =>
        world.db.log
          .query<{ id: string; status: string }>('SELECT id, status FROM tpc_transactions WHERE namespace = $1', [world.namespace])
          .then((r) => r.rows),
      (rows) => rows.length === 1,
      'the begin statement ending on the server',
      10_000,
    );
    expect(first).toMatchObject({ status: 'active' });
    expect(await world.preparedGids()).toEqual([]);
    expect([await world.balance('bank_a', 5), await world.balance('bank_b', 5)]).toEqual(before);

    // The retry with the same key gets that attempt, aborted now (not at its deadline): never a second transaction.
    const retry = await world.submit(body, { headers: key });
    expect(retry.status).toBe(409);
    expect(retry.body).toMatchObject({ id: first!.id, status: 'aborted', error: { code: 'abandoned' } });
    expect(await transactionsOf(world)).toBe(1);
    expect([await world.balance('bank_a', 5), await world.balance('bank_b', 5)]).toEqual(before);
    // A new key runs it once.
    const fresh = await world.submit(body, { headers: { 'Idempotency-Key': `${key['Idempotency-Key']}-2` } });
    expect(fresh.status).toBe(201);
    expect([await world.balance('bank_a', 5), await world.balance('bank_b', 5)]).toEqual([before[0]! - 4, before[1]! + 4]);
  });
});
