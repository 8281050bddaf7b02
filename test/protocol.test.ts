import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { eventually } from './harness/waits.ts';
import { createWorld, transfer, type World } from './harness/world.ts';

const update = (resource: string, amount: number, id: number) => ({
  resource,
  statements: [{ sql: 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', params: [amount, id] }],
});

/** The log's row, once this instance has written it: the answer does not wait for the completion record, a read does. */
async function logRow(world: World, id: string) {
  expect((await world.request('GET', `/v1/transactions/${id}`)).status).toBe(200);
  const tx = await world.db.log.query('SELECT status, one_phase, error FROM tpc_transactions WHERE id = $1', [id]);
  const branches = await world.db.log.query('SELECT resource, status, xid, read_only FROM tpc_branch_rows WHERE transaction_id = $1 ORDER BY index', [id]);
  return { ...tx.rows[0], branches: branches.rows };
}

describe('the protocol', () => {
  let world: World;
  beforeEach(async () => {
    world = await createWorld();
  });
  afterEach(async () => {
    await world.close();
  });

  it('applies all branches or none: a failure on the last database undoes the others', async () => {
    const res = await world.submit({
      branches: [
        update('bank_a', -100, 1),
        update('bank_b', 100, 2),
        // The CHECK (balance >= 0) fails on bank_c: every branch must roll back.
        update('bank_c', -5000, 3),
      ],
      timeoutMs: 10_000,
    });
    expect(res.status).toBe(409);
    expect(res.body.error).toMatchObject({ resource: 'bank_c', statement: 0, code: '23514' });
    expect(res.body.branches.map((b: { status: string }) => b.status)).toEqual(['aborted', 'aborted', 'aborted']);
    expect([await world.balance('bank_a', 1), await world.balance('bank_b', 2), await world.balance('bank_c', 3)]).toEqual([1000, 1000, 1000]);
    expect(await logRow(world, res.body.id)).toMatchObject({ status: 'aborted', error: { resource: 'bank_c', code: '23514' } });
  });

  it('commits three branches and records the decision, the xids and every event', async () => {
    const res = await world.submit({ branches: [update('bank_a', -1, 1), update('bank_b', 1, 1), update('bank_c', 1, 1)], timeoutMs: 10_000 });
    expect(res.status).toBe(201);
    const row = await logRow(world, res.body.id);
    expect(row.status).toBe('committed');
    expect(row.one_phase).toBe(false);
    for (const b of row.branches) {
      expect(b.status).toBe('committed');
      expect(b.xid).toMatch(/^\d+$/);
    }
    const detail = await world.request('GET', `/v1/transactions/${res.body.id}`);
    expect(detail.status).toBe(200);
    expect(detail.body.events.map((e: { kind: string }) => e.kind)).toEqual(['begun', 'decided', 'completed']);
    expect(detail.body.events[0].actor).toBe('full');
    expect(detail.body.branches[0].results).toEqual([{ rowCount: 1, rows: [] }]);
  });

  it('lets read-only branches skip the decision', async () => {
    const res = await world.submit({
      branches: [{ resource: 'bank_a', statements: [{ sql: 'SELECT balance FROM accounts WHERE id = $1', params: [4] }] }, update('bank_b', 5, 4)],
      timeoutMs: 10_000,
    });
    expect(res.status).toBe(201);
    expect(res.body.branches[0]).toMatchObject({
      resource: 'bank_a',
      readOnly: true,
      status: 'committed',
      results: [{ rowCount: 1, rows: [{ balance: 1000 }] }],
    });
    expect(res.body.branches[1]).toMatchObject({ resource: 'bank_b', readOnly: false, status: 'committed' });
    const row = await logRow(world, res.body.id);
    expect(row.branches[0]).toMatchObject({ read_only: true, xid: null });
    expect(await world.balance('bank_b', 4)).toBe(1005);
  });

  it('commits a single writing branch in one phase, without PREPARE', async () => {
    const res = await world.submit({ branches: [update('bank_c', 7, 5)], timeoutMs: 10_000 });
    expect(res.status).toBe(201);
    expect(res.body.status).toBe('committed');
    const row = await logRow(world, res.body.id);
    expect(row).toMatchObject({ status: 'committed', one_phase: true });
    expect(row.branches[0].xid).toMatch(/^\d+$/);
    expect(await world.balance('bank_c', 5)).toBe(1007);
  });

  it('commits a single read-only branch with no decision at all', async () => {
    const res = await world.submit({
      branches: [{ resource: 'bank_a', statements: [{ sql: 'SELECT count(*)::int AS n FROM accounts', params: [] }] }],
      timeoutMs: 10_000,
    });
    expect(res.status).toBe(201);
    expect(res.body.branches[0]).toMatchObject({ readOnly: true, results: [{ rowCount: 1, rows: [{ n: 10 }] }] });
    const detail = await world.request('GET', `/v1/transactions/${res.body.id}`);
    expect(detail.body.events.map((e: { kind: string }) => e.kind)).toEqual(['begun', 'completed']);
  });

  it('aborts a one-phase transaction whose statement fails, and records why', async () => {
    const res = await world.submit({ branches: [update('bank_a', -2000, 6)], timeoutMs: 10_000 });
    expect(res.status).toBe(409);
    expect(res.body.error).toMatchObject({ resource: 'bank_a', statement: 0, code: '23514' });
    expect(await world.balance('bank_a', 6)).toBe(1000);
  });

  it('leaves nothing on the pooled session: settings and session locks taken by a statement are wiped', async () => {
    // The statement guard refuses set_config(…, false) and pg_advisory_lock in a statement, but it
    // cannot see inside a function the database already has: the session reset is what wipes them.
    await world.db.bank_a.query(`
      CREATE FUNCTION public.sneaky() RETURNS void LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM set_config('search_path', 'pg_catalog', false);
        PERFORM pg_advisory_lock(42);
      END $$`);
    const sneaky = {
      resource: 'bank_a',
      statements: [
        { sql: 'SELECT public.sneaky()', params: [] },
        { sql: 'UPDATE public.accounts SET balance = balance - 1 WHERE id = 7', params: [] },
      ],
    };
    expect((await world.submit({ branches: [sneaky, update('bank_b', 1, 7)], timeoutMs: 10_000 })).status).toBe(201);
    expect((await world.submit({ branches: [sneaky], timeoutMs: 10_000 })).status).toBe(201);
    // Every later transaction on bank_a, whichever pooled connection it gets, sees the default search_path.
    // Distinct rows: concurrent transactions on the same rows of two databases could deadlock across them.
    const later = await Promise.all(
      Array.from({ length: 6 }, (_, i) => world.submit({ branches: [update('bank_a', 1, i + 1), update('bank_c', 1, i + 1)], timeoutMs: 10_000 })),
    );
    for (const r of later) expect(r.status).toBe(201);
    // A connection closed rather than pooled gives up its session locks when its backend exits,
    // which on a loaded machine can trail the close; a lock held by a pooled session never goes.
    const advisory = async () => (await world.db.bank_a.query("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory'")).rows[0].n as number;
    for (let i = 0; i < 50 && (await advisory()) > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(await advisory()).toBe(0);
  });

  it('ends a statement waiting on a lock at the deadline, naming it', async () => {
    const holder = await world.db.bank_b.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('UPDATE accounts SET balance = balance WHERE id = 8');
      const res = await world.submit({ branches: [update('bank_a', -1, 8), update('bank_b', 1, 8)], timeoutMs: 800 });
      expect(res.status).toBe(409);
      expect(res.body.error).toMatchObject({ resource: 'bank_b', statement: 0, code: 'deadline_exceeded' });
      expect(await world.balance('bank_a', 8)).toBe(1000);
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
    }
    expect(await world.balance('bank_b', 8)).toBe(1000);
  });

  it('ends a deadlock across two databases, which neither database can see, by both deadlines', async () => {
    // T1 locks row 9 on bank_a then wants row 9 on bank_c; T2 the other way round. The test holds
    // an advisory lock on both databases as a gate, so that both second halves wait until both
    // first halves hold their rows, whatever the machine's load: the deadlock is certain.
    const gates = await Promise.all([world.db.bank_a.connect(), world.db.bank_c.connect()]);
    try {
      for (const g of gates) await g.query('SELECT pg_advisory_lock(77)');
      const lockThenWait = (first: string, second: string) => ({
        branches: [
          { resource: first, statements: [{ sql: 'UPDATE accounts SET balance = balance + 1 WHERE id = 9', params: [] }] },
          {
            resource: second,
            statements: [
              { sql: 'SELECT pg_advisory_xact_lock_shared(77)', params: [] },
              { sql: 'UPDATE accounts SET balance = balance + 1 WHERE id = 9', params: [] },
            ],
          },
        ],
        timeoutMs: 3000,
      });
      const answers = Promise.all([world.submit(lockThenWait('bank_a', 'bank_c')), world.submit(lockThenWait('bank_c', 'bank_a'))]);
      const ready = (g: (typeof gates)[number]) =>
        g
          .query<{ waiting: number; holding: number }>(`
        SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))::int AS waiting,
               -- The first half holds row 9: still open after its UPDATE, or already prepared.
               ((SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction' AND query LIKE 'UPDATE accounts%')
                + (SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()))::int AS holding`)
          .then((r) => r.rows[0]!.waiting === 1 && r.rows[0]!.holding === 1);
      for (let i = 0; i < 500 && !((await ready(gates[0])) && (await ready(gates[1]))); i++) await new Promise((r) => setTimeout(r, 10));
      for (const g of gates) await g.query('SELECT pg_advisory_unlock(77)');
      const [t1, t2] = await answers;
      // The first deadline breaks the cycle: that transaction aborts, and the other may then commit
      // before its own deadline. Neither waits for anything but a deadline.
      const aborted = [t1, t2].filter((t) => t.status === 409);
      expect(aborted.length).toBeGreaterThanOrEqual(1);
      for (const t of aborted) expect(t.body.error.code).toBe('deadline_exceeded');
      for (const t of [t1, t2]) {
        expect([201, 409]).toContain(t.status);
        // The completion record is written after the answer (it is not forced): wait for it.
        const times = await eventually(
          () => world.db.log.query('SELECT completed_at - deadline AS late FROM tpc_transactions WHERE id = $1', [t.body.id]),
          (r) => r.rows[0]?.late != null,
          `the completion record of ${t.body.id}`,
        );
        // Ended by its deadline: recorded within a second after it, not whenever a lock frees.
        const late = times.rows[0].late as { seconds?: number; milliseconds?: number };
        expect((late.seconds ?? 0) * 1000 + (late.milliseconds ?? 0)).toBeLessThan(1000);
      }
      const committed = [t1, t2].filter((t) => t.status === 201).length;
      expect(await world.balance('bank_a', 9)).toBe(1000 + committed);
      expect(await world.balance('bank_c', 9)).toBe(1000 + committed);
    } finally {
      for (const g of gates) g.release();
    }
  });

  it('runs many concurrent transfers on shared rows and conserves the money', async () => {
    const banks = ['bank_a', 'bank_b', 'bank_c'] as const;
    const answers = await Promise.all(
      Array.from({ length: 40 }, (_, i) => {
        const from = banks[i % 3]!;
        const to = banks[(i + 1) % 3]!;
        return world.submit(transfer(from, to, 10 + (i % 7), 1 + (i % 2), 1 + ((i + 1) % 2), { timeoutMs: 2000 }));
      }),
    );
    // 202: decided, phase 2 still finishing (a loaded machine); the sums are taken once it has.
    // 503: more transfers than a bank's slots (TPC_RESOURCE_POOL_SIZE, 20), queued behind the row
    // locks for longer than the admission wait: refused having changed nothing.
    for (const a of answers) expect([201, 202, 409, 503]).toContain(a.status);
    await world.service.engine.drain();
    const totals = await Promise.all(banks.map((b) => world.db[b].query<{ s: string }>('SELECT sum(balance) AS s FROM accounts')));
    expect(totals.reduce((sum, t) => sum + Number(t.rows[0]!.s), 0)).toBe(30_000);
    expect(answers.filter((a) => a.status === 201 || a.status === 202).length).toBeGreaterThan(0);
  });
});

describe('a resource without max_prepared_transactions', () => {
  it('is reported unusable with a clear message, not discovered at the first PREPARE', async () => {
    const { startPostgresCluster } = await import('../coordinator/embedded/postgres-cluster.ts');
    const cluster = await startPostgresCluster({ maxPreparedTransactions: 0 });
    try {
      const url = await cluster.createDatabase('noprep');
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      await c.query('CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)');
      await c.end();
      const world = await createWorld({ extraResources: { noprep: url } });
      try {
        const health = await world.service.participants.get('noprep')!.health();
        expect(health).toMatchObject({ reachable: true, usable: false, maxPreparedTransactions: 0 });
        expect(health.message).toMatch(/max_prepared_transactions is 0 on resource "noprep"/);
        const res = await world.submit(transfer('bank_a', 'bank_a', 1, 1, 2, { branches: [update('bank_a', -1, 1), update('noprep', 1, 1)] }));
        expect(res.status).toBe(503);
        expect(res.body.type).toBe('urn:tpc:problem:resource-unusable');
        expect(res.body.detail).toMatch(/max_prepared_transactions/);
        expect(await world.balance('bank_a', 1)).toBe(1000);
      } finally {
        await world.close();
      }
    } finally {
      await cluster.destroy();
    }
  });
});
