import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { createClient, createCoordinator, TransactionAbortedError } from '../coordinator/sdk/index.ts';
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
    const { result, outcome } = await tpc.transaction(async (tx) => {
      const a = await tx.branch<BankDB>('bank_a');
      const c = await tx.branch<BankDB>('bank_c');
      await a.updateTable('accounts').set((eb) => ({ balance: eb('balance', '-', 25) })).where('id', '=', 1).execute();
      await c.updateTable('accounts').set((eb) => ({ balance: eb('balance', '+', 25) })).where('id', '=', 1).execute();
      return 'moved';
    }, { timeoutMs: 5000 });
    expect(result).toBe('moved');
    expect(outcome.status).toBe('committed');
    expect(await world.balance('bank_a', 1)).toBe(975);
    expect(await world.balance('bank_c', 1)).toBe(1025);
  });

  it('rolls every branch back and rethrows when the callback throws', async () => {
    await expect(tpc.transaction(async (tx) => {
      const a = await tx.branch<BankDB>('bank_a');
      await a.updateTable('accounts').set({ balance: 0 }).where('id', '=', 2).execute();
      throw new Error('changed my mind');
    })).rejects.toThrow('changed my mind');
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
    const err = await tpc.transaction(async (tx) => {
      const a = await tx.branch<BankDB>('bank_a');
      const c = await tx.branch<BankDB>('bank_c');
      await c.updateTable('accounts').set((eb) => ({ balance: eb('balance', '+', 5) })).where('id', '=', 4).execute();
      await a.updateTable('accounts').set((eb) => ({ balance: eb('balance', '-', 5000) })).where('id', '=', 4).execute(); // CHECK fails
    }).catch((e: unknown) => e);
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
        await a.updateTable('accounts').set((eb) => ({ balance: eb('balance', '-', 7) })).where('id', '=', 5).execute();
        await c.updateTable('accounts').set((eb) => ({ balance: eb('balance', '+', 7) })).where('id', '=', 5).execute();
      });
      expect(outcome.status).toBe('committed');
      expect(await world.balance('bank_a', 5)).toBe(993);
      expect(await world.balance('bank_c', 5)).toBe(1007);
      // The standalone service reads the same log.
      const seen = await world.request('GET', `/v1/transactions/${outcome.id}`);
      expect(seen.body.status).toBe('committed');
    } finally {
      await embedded.close();
    }
  });

  it('re-runs the callback on a serialization failure when asked, and only then', async () => {
    let attempts = 0;
    const run = (retries: number) => tpc.transaction(async (tx) => {
      attempts++;
      const a = await tx.branch<BankDB>('bank_a');
      await a.updateTable('accounts').set((eb) => ({ balance: eb('balance', '-', 1) })).where('id', '=', 6).execute();
      if (attempts === 1) await sql`DO $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '40001'; END $$`.execute(a);
      return attempts;
    }, { retries });
    await expect(run(0)).rejects.toMatchObject({ code: '40001' });
    attempts = 0;
    const { result } = await run(1);
    expect(result).toBe(2);
    expect(await world.balance('bank_a', 6)).toBe(999); // the failed attempt left nothing
  });

  it('ends two transactions that wait on each other across databases by their deadline, not never', async () => {
    let bothLocked!: () => void;
    let locked = 0;
    const barrier = new Promise<void>((r) => { bothLocked = r; });
    const crossing = (first: 'bank_a' | 'bank_c', second: 'bank_a' | 'bank_c') => tpc.transaction(async (tx) => {
      const x = await tx.branch<BankDB>(first);
      await x.updateTable('accounts').set((eb) => ({ balance: eb('balance', '+', 1) })).where('id', '=', 7).execute();
      if (++locked === 2) bothLocked();
      await barrier;
      const y = await tx.branch<BankDB>(second);
      await y.updateTable('accounts').set((eb) => ({ balance: eb('balance', '+', 1) })).where('id', '=', 7).execute();
    }, { timeoutMs: 1000 });
    const results = await Promise.allSettled([crossing('bank_a', 'bank_c'), crossing('bank_c', 'bank_a')]);
    const failed = results.filter((r) => r.status === 'rejected');
    expect(failed.length).toBeGreaterThanOrEqual(1);
    for (const f of failed) expect((f as PromiseRejectedResult).reason).toMatchObject({ code: '57014' });
    const committed = results.length - failed.length;
    expect(await world.balance('bank_a', 7)).toBe(1000 + committed);
    expect(await world.balance('bank_c', 7)).toBe(1000 + committed);
  });
});
