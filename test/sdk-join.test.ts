import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, createCoordinator, TransactionAbortedError, type JoinedBranch, type TpcClient } from 'pg-2pc-coordinator';
import { prepareBranch } from 'pg-2pc-coordinator/participant-adapter';
import { TOKENS, createWorld, type World } from './harness/world.ts';

interface BankDB {
  accounts: { id: number; balance: number };
}

/*
 * tx.join(): a branch that ANOTHER service prepares on its own database (with prepareBranch, on a
 * pool of its own) under the gid the coordinator gave, committed or rolled back with the rest.
 */
describe('the SDK with a branch prepared by another service', () => {
  let world: World;
  let local: pg.Pool;
  let otherService: pg.Pool;
  let tpc: TpcClient;
  beforeAll(async () => {
    world = await createWorld();
    local = new pg.Pool({ connectionString: world.urls.bank_a, max: 4 });
    otherService = new pg.Pool({ connectionString: world.urls.bank_c, max: 4 });
    tpc = createClient({ url: world.service.url, token: TOKENS.full, resources: { bank_a: local } });
  });
  afterAll(async () => {
    await Promise.all([local.end(), otherService.end()]);
    await world.close();
  });

  /** The other service's part: credit `amount` to account `id`, prepared under the joined gid. */
  const credit = (joined: JoinedBranch, id: number, amount: number) =>
    prepareBranch<BankDB, number>(
      otherService,
      joined.gid,
      async (db) => {
        const r = await db
          .updateTable('accounts')
          .set((eb) => ({ balance: eb('balance', '+', amount) }))
          .where('id', '=', id)
          .executeTakeFirst();
        return Number(r.numUpdatedRows);
      },
      { timeoutMs: Date.parse(joined.deadline) - Date.now() },
    );

  // pg_prepared_xacts is cluster-wide, and other test files share the cluster: this world's gids only.
  const preparedOnOtherService = async () =>
    (await otherService.query('SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, $1)', [`tpc:${world.namespace}:`])).rows;

  it('commits the joined branch and the local one together', async () => {
    let joined!: JoinedBranch;
    const { result, outcome } = await tpc.transaction(
      async (tx) => {
        const a = await tx.branch<BankDB>('bank_a');
        await a
          .updateTable('accounts')
          .set((eb) => ({ balance: eb('balance', '-', 30) }))
          .where('id', '=', 1)
          .execute();
        joined = await tx.join('bank_c');
        expect(await tx.join('bank_c')).toEqual(joined); // the same branch, not a second one
        return credit(joined, 1, 30);
      },
      { timeoutMs: 5000 },
    );
    expect(result).toBe(1);
    expect(outcome).toMatchObject({ id: joined.transactionId, status: 'committed' });
    expect(joined.gid).toBe(`tpc:${world.namespace}:${joined.transactionId}:0`);
    expect(await world.balance('bank_a', 1)).toBe(970);
    expect(await world.balance('bank_c', 1)).toBe(1030);
    // The joined branch began the transaction (index 0); the local one joined it at the end.
    const tx = await world.request('GET', `/v1/transactions/${joined.transactionId}`);
    expect(tx.body.branchDetails.map((b: { resource: string; gid: string }) => `${b.resource}:${b.gid.split(':').pop()}`)).toEqual(['bank_c:0', 'bank_a:1']);
    expect(await preparedOnOtherService()).toEqual([]);
  });

  it('rolls back what the other service prepared when the callback throws afterwards', async () => {
    let joined!: JoinedBranch;
    await expect(
      tpc.transaction(async (tx) => {
        const a = await tx.branch<BankDB>('bank_a');
        await a
          .updateTable('accounts')
          .set((eb) => ({ balance: eb('balance', '-', 30) }))
          .where('id', '=', 2)
          .execute();
        joined = await tx.join('bank_c');
        await credit(joined, 2, 30);
        expect(await preparedOnOtherService()).toEqual([{ gid: joined.gid }]);
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    expect(await preparedOnOtherService()).toEqual([]);
    expect(await world.balance('bank_a', 2)).toBe(1000);
    expect(await world.balance('bank_c', 2)).toBe(1000);
    expect((await world.request('GET', `/v1/transactions/${joined.transactionId}`)).body.status).toBe('aborted');
  });

  it('does not commit when the other service never prepared its branch', async () => {
    const err = await tpc
      .transaction(async (tx) => {
        const a = await tx.branch<BankDB>('bank_a');
        await a
          .updateTable('accounts')
          .set((eb) => ({ balance: eb('balance', '-', 30) }))
          .where('id', '=', 3)
          .execute();
        await tx.join('bank_c'); // …and the other service fails before it prepares
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransactionAbortedError);
    expect(err).toMatchObject({ code: 'commit_refused', outcome: { status: 'aborted', error: { code: 'not_prepared', resource: 'bank_c' } } });
    expect(await world.balance('bank_a', 3)).toBe(1000);
    expect(await world.preparedGids()).toEqual([]);
  });

  it('refuses a resource both joined and local', async () => {
    await expect(
      tpc.transaction(async (tx) => {
        await tx.join('bank_a');
        await tx.branch('bank_a');
      }),
    ).rejects.toThrow(/joined for another service/);
    expect(await world.preparedGids()).toEqual([]);
  });

  it('joins through the embedded coordinator too', async () => {
    const embedded = await createCoordinator(world.config, { logger: pino({ level: 'silent' }) });
    try {
      const inProcess = createClient({ coordinator: embedded, resources: { bank_a: local } });
      const { outcome } = await inProcess.transaction(async (tx) => {
        const a = await tx.branch<BankDB>('bank_a');
        await a
          .updateTable('accounts')
          .set((eb) => ({ balance: eb('balance', '-', 5) }))
          .where('id', '=', 4)
          .execute();
        await credit(await tx.join('bank_c'), 4, 5);
      });
      expect(outcome.status).toBe('committed');
      expect(await world.balance('bank_a', 4)).toBe(995);
      expect(await world.balance('bank_c', 4)).toBe(1005);
    } finally {
      await embedded.close();
    }
  });

  it('prepareBranch rolls back and rethrows what its callback throws, and refuses a bad gid before any work', async () => {
    const gid = `tpc:${world.namespace}:00000000-0000-4000-8000-00000000000a:0`;
    await expect(
      prepareBranch<BankDB, void>(
        otherService,
        gid,
        async (db) => {
          await db.updateTable('accounts').set({ balance: 0 }).where('id', '=', 6).execute();
          throw new Error('no stock');
        },
        { timeoutMs: 5000 },
      ),
    ).rejects.toThrow('no stock');
    let ran = false;
    await expect(
      prepareBranch(
        otherService,
        "x'; COMMIT; --",
        async () => {
          ran = true;
        },
        { timeoutMs: 5000 },
      ),
    ).rejects.toMatchObject({ code: 'invalid_gid' });
    expect(ran).toBe(false);
    expect(await world.balance('bank_c', 6)).toBe(1000);
    expect(await preparedOnOtherService()).toEqual([]);
    expect(otherService.totalCount - otherService.idleCount).toBe(0); // the connection went back
  });
});
