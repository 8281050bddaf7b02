import { setTimeout as sleep } from 'node:timers/promises';
import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
// The package's own name (package.json "exports"), as a service that installed it imports it.
import { createClient, createCoordinator, TransactionAbortedError, type GlobalTransaction } from 'pg-2pc-coordinator';
import { eventually } from './harness/waits.ts';
import { TOKENS, createWorld, type World } from './harness/world.ts';

interface BankDB {
  accounts: { id: number; balance: number };
}

describe('the SDK against the coordinator service', () => {
  let world: World;
  let pools: pg.Pool[];
  let tpc: ReturnType<typeof createClient>;
  beforeAll(async () => {
    world = await createWorld();
    const a = new pg.Pool({ connectionString: world.urls.bank_a, max: 4 });
    const c = new pg.Pool({ connectionString: world.urls.bank_c, max: 4 });
    pools = [a, c];
    tpc = createClient({ url: world.service.url, token: TOKENS.full, resources: { bank_a: a, bank_c: c } });
  });
  afterAll(async () => {
    await Promise.all(pools.map((p) => p.end()));
    await world.close();
  });

  it('commits what the callback did on every database and returns its result', async () => {
    const { result, outcome } = await tpc.transaction(
      async (tx) => {
        const a = await tx.branch<BankDB>('bank_a');
        const c = await tx.branch<BankDB>('bank_c');
        await a
          .updateTable('accounts')
          .set((eb) => ({ balance: eb('balance', '-', 25) }))
          .where('id', '=', 1)
          .execute();
        await c
          .updateTable('accounts')
          .set((eb) => ({ balance: eb('balance', '+', 25) }))
          .where('id', '=', 1)
          .execute();
        return 'moved';
      },
      { timeoutMs: 5000 },
    );
    expect(result).toBe('moved');
    expect(outcome.status).toBe('committed');
    expect(await world.balance('bank_a', 1)).toBe(975);
    expect(await world.balance('bank_c', 1)).toBe(1025);
  });

  it('rolls every branch back and rethrows when the callback throws', async () => {
    await expect(
      tpc.transaction(async (tx) => {
        const a = await tx.branch<BankDB>('bank_a');
        await a.updateTable('accounts').set({ balance: 0 }).where('id', '=', 2).execute();
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    expect(await world.balance('bank_a', 2)).toBe(1000);
    expect(await world.preparedGids()).toEqual([]);
  });

  it('commits read-only branches locally, without the coordinator', async () => {
    const before = (await world.db.log.query('SELECT count(*)::int AS n FROM tpc_transactions')).rows[0].n;
    const { result, outcome } = await tpc.transaction(async (tx) => {
      const a = await tx.branch<BankDB>('bank_a');
      return (await a.selectFrom('accounts').select('balance').where('id', '=', 3).executeTakeFirstOrThrow()).balance;
    });
    expect(result).toBe(1000);
    expect(outcome).toEqual({ id: null, status: 'committed' });
    expect((await world.db.log.query('SELECT count(*)::int AS n FROM tpc_transactions')).rows[0].n).toBe(before);
  });

  it('reports a database error as an abort with nothing applied', async () => {
    const err = await tpc
      .transaction(async (tx) => {
        const a = await tx.branch<BankDB>('bank_a');
        const c = await tx.branch<BankDB>('bank_c');
        await c
          .updateTable('accounts')
          .set((eb) => ({ balance: eb('balance', '+', 5) }))
          .where('id', '=', 4)
          .execute();
        await a
          .updateTable('accounts')
          .set((eb) => ({ balance: eb('balance', '-', 5000) }))
          .where('id', '=', 4)
          .execute(); // CHECK fails
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as { code?: string }).code).toBe('23514');
    expect(err).not.toBeInstanceOf(TransactionAbortedError);
    expect(await world.balance('bank_c', 4)).toBe(1000);
  });

  it('works the same with the embedded coordinator, on the same log', async () => {
    const embedded = await createCoordinator(world.config, { logger: pino({ level: 'silent' }) });
    try {
      const local = createClient({ coordinator: embedded, resources: { bank_a: pools[0]!, bank_c: pools[1]! } });
      const { outcome } = await local.transaction(async (tx) => {
        const a = await tx.branch<BankDB>('bank_a');
        const c = await tx.branch<BankDB>('bank_c');
        await a
          .updateTable('accounts')
          .set((eb) => ({ balance: eb('balance', '-', 7) }))
          .where('id', '=', 5)
          .execute();
        await c
          .updateTable('accounts')
          .set((eb) => ({ balance: eb('balance', '+', 7) }))
          .where('id', '=', 5)
          .execute();
      });
      expect(outcome.status).toBe('committed');
      expect(await world.balance('bank_a', 5)).toBe(993);
      expect(await world.balance('bank_c', 5)).toBe(1007);
      // The standalone service reads the same log, once the completion record written behind the
      // answer is in (a read through the embedded coordinator waits for it).
      expect((await embedded.call('GET', `/v1/transactions/${outcome.id}`)).body?.status).toBe('committed');
      const seen = await world.request('GET', `/v1/transactions/${outcome.id}`);
      expect(seen.body.status).toBe('committed');
    } finally {
      await embedded.close();
    }
  });

  it('re-runs the callback on a serialization failure when asked, and only then', async () => {
    let attempts = 0;
    const run = (retries: number) =>
      tpc.transaction(
        async (tx) => {
          attempts++;
          const a = await tx.branch<BankDB>('bank_a');
          await a
            .updateTable('accounts')
            .set((eb) => ({ balance: eb('balance', '-', 1) }))
            .where('id', '=', 6)
            .execute();
          if (attempts === 1) await sql`DO $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '40001'; END $$`.execute(a);
          return attempts;
        },
        { retries },
      );
    await expect(run(0)).rejects.toMatchObject({ code: '40001' });
    attempts = 0;
    const { result } = await run(1);
    expect(result).toBe(2);
    expect(await world.balance('bank_a', 6)).toBe(999); // the failed attempt left nothing
  });

  it('ends two transactions that wait on each other across databases by their deadline, not never', async () => {
    let bothLocked!: () => void;
    let locked = 0;
    const barrier = new Promise<void>((r) => {
      bothLocked = r;
    });
    const crossing = (first: 'bank_a' | 'bank_c', second: 'bank_a' | 'bank_c') =>
      tpc.transaction(
        async (tx) => {
          const x = await tx.branch<BankDB>(first);
          await x
            .updateTable('accounts')
            .set((eb) => ({ balance: eb('balance', '+', 1) }))
            .where('id', '=', 7)
            .execute();
          if (++locked === 2) bothLocked();
          await barrier;
          const y = await tx.branch<BankDB>(second);
          await y
            .updateTable('accounts')
            .set((eb) => ({ balance: eb('balance', '+', 1) }))
            .where('id', '=', 7)
            .execute();
        },
        { timeoutMs: 1000 },
      );
    const results = await Promise.allSettled([crossing('bank_a', 'bank_c'), crossing('bank_c', 'bank_a')]);
    const failed = results.filter((r) => r.status === 'rejected');
    expect(failed.length).toBeGreaterThanOrEqual(1);
    for (const f of failed) {
      expect((f as PromiseRejectedResult).reason).toBeInstanceOf(TransactionAbortedError);
      expect((f as PromiseRejectedResult).reason).toMatchObject({ code: 'deadline_exceeded' });
    }
    const committed = results.length - failed.length;
    expect(await world.balance('bank_a', 7)).toBe(1000 + committed);
    expect(await world.balance('bank_c', 7)).toBe(1000 + committed);
  });

  /** Every connection of the service's pools is back and idle: none kept, none leaked. */
  const allReturned = () =>
    eventually(
      async () => pools.map((p) => p.totalCount - p.idleCount),
      (busy) => busy.every((n) => n === 0),
      'every connection back in its pool',
      5_000,
    );

  it('ends a callback waiting on a lock at its deadline, with nothing applied and no connection kept', async () => {
    // Another user of the database holds the row the callback wants.
    const holder = await world.db.bank_a.connect();
    await holder.query('BEGIN; UPDATE accounts SET balance = balance + 1 WHERE id = 8');
    let took = 0;
    let err: unknown;
    try {
      const started = Date.now();
      err = await tpc
        .transaction(
          async (tx) => {
            const c = await tx.branch<BankDB>('bank_c');
            await c.updateTable('accounts').set({ balance: 0 }).where('id', '=', 8).execute();
            const a = await tx.branch<BankDB>('bank_a');
            // Without the server-side backstop, only the SDK's cancel at the deadline ends the wait below.
            await sql`SET LOCAL statement_timeout = 0`.execute(a);
            await a.updateTable('accounts').set({ balance: 0 }).where('id', '=', 8).execute();
          },
          { timeoutMs: 700 },
        )
        .catch((e: unknown) => e);
      took = Date.now() - started;
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
    }
    expect(err).toBeInstanceOf(TransactionAbortedError);
    expect(err).toMatchObject({ code: 'deadline_exceeded', outcome: null, message: expect.stringContaining('700 ms') });
    expect(took).toBeGreaterThanOrEqual(690);
    expect(took).toBeLessThan(700 + 1000);
    expect(await world.balance('bank_a', 8)).toBe(1000);
    expect(await world.balance('bank_c', 8)).toBe(1000);
    await allReturned();
  });

  it('fails a callback that outlives its deadline without running any SQL, and refuses it branches afterwards', async () => {
    let kept: GlobalTransaction | undefined;
    const started = Date.now();
    const err = await tpc
      .transaction(
        async (tx) => {
          kept = tx;
          await sleep(1500);
        },
        { timeoutMs: 300 },
      )
      .catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(1000); // by the deadline, not when the callback ends
    expect(err).toMatchObject({ name: 'TransactionAbortedError', code: 'deadline_exceeded' });
    await expect(kept!.branch('bank_a')).rejects.toMatchObject({ code: 'deadline_exceeded' });
    await allReturned();
  });

  it('rolls back what a callback wrote when it outlives its deadline, and refuses a handle kept beyond it', async () => {
    let handle: Kysely<BankDB> | undefined;
    const err = await tpc
      .transaction(
        async (tx) => {
          const a = await tx.branch<BankDB>('bank_a');
          handle = a;
          await a.updateTable('accounts').set({ balance: 1 }).where('id', '=', 9).execute();
          await sleep(1000);
        },
        { timeoutMs: 300 },
      )
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'deadline_exceeded' });
    expect(await world.balance('bank_a', 9)).toBe(1000);
    // The connection went back to the pool: the old handle must not reach it (or its next user).
    await expect(sql`SELECT 1`.execute(handle!)).rejects.toThrow(/closed/);
    await allReturned();
  });
});
