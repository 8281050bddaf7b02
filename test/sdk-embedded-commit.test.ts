import pg from 'pg';
import { pino } from 'pino';
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createClient, createCoordinator, TransactionAbortedError, type EmbeddedCoordinator, type GlobalTransaction } from 'pg-2pc-coordinator';
import { prepareBranch } from 'pg-2pc-coordinator/participant-adapter';
import { type BankDB, moveOnBranches } from './harness/sdk-transfer.ts';
import { createWorld, type World } from './harness/world.ts';

/*
 * The embedded coordinator's trusted commit: the SDK tells it the xid of each branch it prepared
 * itself, and the coordinator decides without taking the lease again, without looking those
 * branches up in pg_prepared_xacts and without reading the transaction back. Branches joined for
 * other services are still looked up; a takeover or a join behind the SDK's back makes the
 * decision's compare-and-set fail, and the commit then goes the checked way.
 */
describe('the embedded coordinator committing branches the SDK prepared itself', () => {
  let world: World;
  let embedded: EmbeddedCoordinator;
  let pools: Record<'bank_a' | 'bank_c', pg.Pool>;
  let otherService: pg.Pool;
  /** Every gid the embedded coordinator looked up in pg_prepared_xacts (real lookups, counted). */
  let inspected: string[] = [];
  /** Runs just before the SDK's commit reaches the embedded coordinator: what happens "meanwhile". */
  let beforeCommit: (id: string) => Promise<void> = async () => {};
  let meanwhileFailed: unknown = null;

  beforeAll(async () => {
    world = await createWorld();
    embedded = await createCoordinator(world.config, { logger: pino({ level: 'silent' }) });
    for (const p of embedded.service.participants.values()) {
      const inspect = p.inspectPrepared.bind(p);
      p.inspectPrepared = (gid, options) => {
        inspected.push(gid);
        return inspect(gid, options);
      };
    }
    pools = {
      bank_a: new pg.Pool({ connectionString: world.urls.bank_a, max: 4 }),
      bank_c: new pg.Pool({ connectionString: world.urls.bank_c, max: 4 }),
    };
    otherService = new pg.Pool({ connectionString: world.urls.bank_b, max: 2 });
  });
  afterAll(async () => {
    await embedded?.close();
    await Promise.all([...Object.values(pools ?? {}), otherService].filter(Boolean).map((p) => p.end()));
    await world?.close();
  });
  beforeEach(() => {
    inspected = [];
    beforeCommit = async () => {};
    meanwhileFailed = null;
  });
  afterEach(() => {
    if (meanwhileFailed) throw meanwhileFailed;
  });

  /** The SDK on the embedded coordinator, with beforeCommit run between the prepares and the commit. */
  const client = () =>
    createClient({
      coordinator: {
        ...embedded,
        commitPrepared: async (id, t) => {
          // A failure here would reach the SDK as "no answer" and hide what went wrong: kept for the test to throw.
          await beforeCommit(id).catch((err: unknown) => {
            meanwhileFailed = err;
          });
          return embedded.commitPrepared(id, t);
        },
      },
      resources: pools,
    });

  /** Moves `amount` from account `id` on bank_a to the same account on bank_c; returns the two branches' xids. */
  const move = async (tx: GlobalTransaction, id: number, amount: number) => {
    const { a, c } = await moveOnBranches(tx, id, amount);
    const xid = async (db: typeof a) => (await sql<{ xid: string }>`SELECT pg_current_xact_id_if_assigned()::text AS xid`.execute(db)).rows[0]!.xid;
    return { bank_a: await xid(a), bank_c: await xid(c) };
  };

  const logRow = async (id: string) =>
    (
      await world.db.log.query('SELECT status, driver, lease_until = deadline AS lease_from_begin, version, interactive FROM tpc_transactions WHERE id = $1', [
        id,
      ])
    ).rows[0];

  /**
   * The row once the commit's answer is recorded: the answer goes as soon as phase 2 has ended, and
   * the completion record behind it; a read through the coordinator that answered waits for it.
   */
  const recordedRow = async (id: string) => {
    expect((await embedded.call('GET', `/v1/transactions/${id}`)).status).toBe(200);
    return logRow(id);
  };

  /**
   * The SDK begins only to commit, so its begin record is deferred (TPC_BEGIN_DEFER_MS) and the
   * commit inserts the row; anything in this process that asks about the transaction writes it
   * first, which is how an operator could have seen it to act on it.
   */
  const written = async (id: string) => {
    expect(await logRow(id)).toBeUndefined();
    expect((await embedded.call('GET', `/v1/transactions/${id}`)).status).toBe(200);
    expect(await logRow(id)).toMatchObject({ status: 'active', version: 1 });
    inspected = []; // the read's live view looked the branches up; the commit's own lookups are what is counted
  };

  it('commits without looking its own branches up, and logs them with their xids and the usual events', async () => {
    const { result: xids, outcome } = await client().transaction((tx) => move(tx, 1, 40), { timeoutMs: 5000 });
    expect(outcome).toMatchObject({ status: 'committed', error: null });
    expect(outcome.branches).toEqual([
      { resource: 'bank_a', status: 'committed', readOnly: false, results: [] },
      { resource: 'bank_c', status: 'committed', readOnly: false, results: [] },
    ]);
    expect(await world.balance('bank_a', 1)).toBe(960);
    expect(await world.balance('bank_c', 1)).toBe(1040);
    expect(inspected).toEqual([]);
    // One row written twice: inserted by the commit decision (the begin record deferred), then
    // completed; its lease the one a begin would have taken (to the deadline), never taken again.
    expect(await recordedRow(outcome.id!)).toMatchObject({ status: 'committed', lease_from_begin: true, version: 2, interactive: true });
    const seen = (await world.request('GET', `/v1/transactions/${outcome.id}`)).body;
    expect(seen.status).toBe('committed');
    expect(seen.branchDetails.map((b: { resource: string; xid: string }) => [b.resource, b.xid])).toEqual([
      ['bank_a', xids.bank_a],
      ['bank_c', xids.bank_c],
    ]);
    expect(seen.events.map((e: { kind: string }) => e.kind)).toEqual(['begun', 'decided', 'completed']);
    expect(seen.events[0].detail).toEqual({ timeoutMs: expect.any(Number), resources: ['bank_a', 'bank_c'], interactive: true });
    expect(seen.heuristic).toBe(false);
    expect(await world.preparedGids()).toEqual([]);
  });

  it('falls back to the checked commit when an operator took the transaction over meanwhile, and commits', async () => {
    // What an operator's resolve leaves when its process dies between taking the lease and deciding.
    beforeCommit = async (id) => {
      await written(id);
      await world.db.log.query("UPDATE tpc_transactions SET driver = 'an-operator-instance', lease_until = now() + interval '30 seconds' WHERE id = $1", [id]);
    };
    const { result: xids, outcome } = await client().transaction((tx) => move(tx, 2, 15), { timeoutMs: 5000 });
    expect(outcome.status).toBe('committed');
    expect(await world.balance('bank_a', 2)).toBe(985);
    expect(await world.balance('bank_c', 2)).toBe(1015);
    // The checked way: every branch looked up, the lease taken again.
    expect(inspected.sort()).toEqual([`tpc:${world.namespace}:${outcome.id}:0`, `tpc:${world.namespace}:${outcome.id}:1`]);
    expect(await recordedRow(outcome.id!)).toMatchObject({ status: 'committed', lease_from_begin: false });
    const seen = (await world.request('GET', `/v1/transactions/${outcome.id}`)).body;
    expect(seen.branchDetails.map((b: { xid: string }) => b.xid)).toEqual([xids.bank_a, xids.bank_c]);
    expect(await world.preparedGids()).toEqual([]);
  });

  it('prepares a branch whose UPDATE matched nothing as read-only, with the writer, and commits both', async () => {
    const { outcome } = await client().transaction(
      async (tx) => {
        const a = await tx.branch<BankDB>('bank_a');
        const c = await tx.branch<BankDB>('bank_c');
        await a
          .updateTable('accounts')
          .set((eb) => ({ balance: eb('balance', '-', 3) }))
          .where('id', '=', 8)
          .execute();
        await c.updateTable('accounts').set({ balance: 0 }).where('id', '=', -1).execute(); // no such row: no xid
      },
      { timeoutMs: 5000 },
    );
    expect(outcome.status).toBe('committed');
    expect(outcome.branches).toEqual([
      { resource: 'bank_a', status: 'committed', readOnly: false, results: [] },
      { resource: 'bank_c', status: 'committed', readOnly: true, results: [] },
    ]);
    expect(inspected).toEqual([]);
    expect(await world.balance('bank_a', 8)).toBe(997);
    const seen = (await world.request('GET', `/v1/transactions/${outcome.id}`)).body;
    expect(seen.branches.map((b: { readOnly: boolean }) => b.readOnly)).toEqual([false, true]);
    expect(seen.branchDetails[1].xid).toBeNull();
    expect(await world.preparedGids()).toEqual([]);
  });

  it('aborts with nothing applied when the callback caught a failed statement and returned', async () => {
    const err = await client()
      .transaction(
        async (tx) => {
          const a = await tx.branch<BankDB>('bank_a');
          const c = await tx.branch<BankDB>('bank_c');
          await c
            .updateTable('accounts')
            .set((eb) => ({ balance: eb('balance', '+', 5) }))
            .where('id', '=', 9)
            .execute();
          await a
            .updateTable('accounts')
            .set((eb) => ({ balance: eb('balance', '-', 5000) }))
            .where('id', '=', 9)
            .execute()
            .catch(() => {}); // CHECK fails
        },
        { timeoutMs: 5000 },
      )
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransactionAbortedError);
    expect(err).toMatchObject({ code: 'prepare_failed', outcome: { status: 'aborted' } });
    expect(await world.balance('bank_a', 9)).toBe(1000);
    expect(await world.balance('bank_c', 9)).toBe(1000);
    expect(await world.preparedGids()).toEqual([]);
    expect(Object.values(pools).map((p) => p.totalCount - p.idleCount)).toEqual([0, 0]);
  });

  it('reports a hazard, not a clean commit, when a branch it prepared was rolled back by hand before the commit', async () => {
    // The SDK's word is taken, so the branch is found gone only in phase 2: flagged for operators, and said so.
    beforeCommit = async (id) => {
      await world.db.bank_c.query(`ROLLBACK PREPARED 'tpc:${world.namespace}:${id}:1'`);
    };
    const { outcome } = await client().transaction((tx) => move(tx, 7, 10), { timeoutMs: 5000 });
    expect(outcome).toMatchObject({ status: 'committed', heuristic: true, error: { code: 'heuristic_hazard', resource: 'bank_c' } });
    expect(await world.balance('bank_a', 7)).toBe(990);
    expect(await world.balance('bank_c', 7)).toBe(1000);
    expect(await world.preparedGids()).toEqual([]);
  });

  it('ends aborted, with nothing applied, when an operator aborted it before the commit', async () => {
    beforeCommit = async (id) => {
      await written(id);
      const r = await world.request('POST', `/v1/transactions/${id}/resolve`, { outcome: 'abort', reason: 'the customer cancelled' });
      expect(r.status).toBe(200);
    };
    const err = await client()
      .transaction((tx) => move(tx, 3, 15), { timeoutMs: 5000 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransactionAbortedError);
    expect(err).toMatchObject({ code: 'commit_refused', outcome: { status: expect.stringMatching(/^abort/) } });
    expect(await world.balance('bank_a', 3)).toBe(1000);
    expect(await world.balance('bank_c', 3)).toBe(1000);
    expect(await world.preparedGids()).toEqual([]);
  });

  it('falls back when another service joined a branch the SDK does not know of, and commits all three', async () => {
    let joinedGid = '';
    beforeCommit = async (id) => {
      // Another service in this process joins through the coordinator (the REST API would hide a
      // transaction begun by another principal) and prepares its part before the SDK's commit lands.
      const joined = await embedded.call('POST', `/v1/transactions/${id}/branches`, { resource: 'bank_b' });
      expect(joined.status).toBe(201);
      joinedGid = joined.body!.gid;
      await prepareBranch<BankDB, void>(
        otherService,
        joinedGid,
        async (db) => {
          await db
            .updateTable('accounts')
            .set((eb) => ({ balance: eb('balance', '+', 1) }))
            .where('id', '=', 4)
            .execute();
        },
        { timeoutMs: 4000 },
      );
    };
    const { outcome } = await client().transaction((tx) => move(tx, 4, 20), { timeoutMs: 5000 });
    expect(outcome.status).toBe('committed');
    expect(inspected).toContain(joinedGid);
    expect(await world.balance('bank_a', 4)).toBe(980);
    expect(await world.balance('bank_b', 4)).toBe(1001);
    expect(await world.balance('bank_c', 4)).toBe(1020);
    const seen = (await world.request('GET', `/v1/transactions/${outcome.id}`)).body;
    expect(seen.branchDetails.map((b: { resource: string }) => b.resource)).toEqual(['bank_a', 'bank_c', 'bank_b']);
    expect(await world.preparedGids()).toEqual([]);
  });

  it('looks up a branch joined with tx.join, and refuses the commit when the other service never prepared it', async () => {
    const err = await client()
      .transaction(
        async (tx) => {
          const a = await tx.branch<BankDB>('bank_a');
          await a
            .updateTable('accounts')
            .set((eb) => ({ balance: eb('balance', '-', 30) }))
            .where('id', '=', 5)
            .execute();
          await tx.join('bank_b'); // …and the other service fails before it prepares
        },
        { timeoutMs: 5000 },
      )
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransactionAbortedError);
    expect(err).toMatchObject({ code: 'commit_refused', outcome: { status: 'aborted', error: { code: 'not_prepared', resource: 'bank_b' } } });
    expect(await world.balance('bank_a', 5)).toBe(1000);
    expect(await world.preparedGids()).toEqual([]);
  });

  it('commits a branch joined with tx.join that the other service prepared, looking up only that one', async () => {
    let joinedGid = '';
    const { outcome } = await client().transaction(
      async (tx) => {
        const a = await tx.branch<BankDB>('bank_a');
        await a
          .updateTable('accounts')
          .set((eb) => ({ balance: eb('balance', '-', 9) }))
          .where('id', '=', 6)
          .execute();
        const joined = await tx.join('bank_b');
        joinedGid = joined.gid;
        await prepareBranch<BankDB, void>(
          otherService,
          joined.gid,
          async (db) => {
            await db
              .updateTable('accounts')
              .set((eb) => ({ balance: eb('balance', '+', 9) }))
              .where('id', '=', 6)
              .execute();
          },
          { timeoutMs: 4000 },
        );
      },
      { timeoutMs: 5000 },
    );
    expect(outcome.status).toBe('committed');
    expect(inspected).toEqual([joinedGid]);
    expect(await recordedRow(outcome.id!)).toMatchObject({ status: 'committed', lease_from_begin: true });
    expect(await world.balance('bank_a', 6)).toBe(991);
    expect(await world.balance('bank_b', 6)).toBe(1009);
    const seen = (await world.request('GET', `/v1/transactions/${outcome.id}`)).body;
    expect(seen.branchDetails.every((b: { xid: string | null }) => b.xid !== null)).toBe(true);
    expect(await world.preparedGids()).toEqual([]);
  });
});
