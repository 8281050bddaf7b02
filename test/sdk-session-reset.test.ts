import pg from 'pg';
import { pino } from 'pino';
import { sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createClient, createCoordinator, type EmbeddedCoordinator, type GlobalTransaction } from 'pg-2pc-coordinator';
import { moveOnBranches } from './harness/sdk-transfer.ts';
import { createWorld, type World } from './harness/world.ts';

/*
 * The SDK's local branches run on the service's own pools, and a connection goes back to its pool
 * when its transaction ends. With an embedded coordinator, whose statement guard can read SQL, the
 * session is reset only after a statement that may have left something on it (DESIGN.md, "the
 * session reset only when a statement could have changed the session"); the client package, with
 * no parser, resets every time. Each pool here has one connection, marked by the pool's owner with
 * a session setting that the reset (RESET ALL) would clear.
 */
describe("the embedded SDK's local branches and the sessions they give back", () => {
  let world: World;
  let embedded: EmbeddedCoordinator;
  let pools: Record<'bank_a' | 'bank_c', pg.Pool>;

  beforeAll(async () => {
    world = await createWorld();
    embedded = await createCoordinator(world.config, { logger: pino({ level: 'silent' }) });
    pools = {
      bank_a: new pg.Pool({ connectionString: world.urls.bank_a, max: 1 }),
      bank_c: new pg.Pool({ connectionString: world.urls.bank_c, max: 1 }),
    };
  });
  afterAll(async () => {
    await embedded?.close();
    await Promise.all(Object.values(pools ?? {}).map((p) => p.end()));
    await world?.close();
  });
  beforeEach(async () => {
    await Promise.all(Object.values(pools).map((p) => p.query("SET application_name = 'marked'")));
  });

  const marks = async () =>
    Promise.all(Object.values(pools).map(async (p) => (await p.query("SELECT current_setting('application_name') AS v")).rows[0].v as string));
  const backends = async () => Promise.all(Object.values(pools).map(async (p) => (await p.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number));

  it('gives the connection back without a reset after statements that can leave nothing on the session', async () => {
    const before = await backends();
    const tpc = createClient({ coordinator: embedded, resources: pools });
    const { outcome } = await tpc.transaction((tx) => moveOnBranches(tx, 1, 10), { timeoutMs: 5000 });
    expect(outcome.status).toBe('committed');
    // A branch of SELECTs alone commits on its own: the same reading applies to its COMMIT.
    await tpc.transaction(async (tx) => {
      const a = await tx.branch('bank_a');
      await sql`SELECT count(*) AS n FROM accounts WHERE id = ${1}`.execute(a);
    });
    expect(await marks()).toEqual(['marked', 'marked']);
    expect(await backends()).toEqual(before);
    expect(await world.balance('bank_a', 1)).toBe(990);
    expect(await world.balance('bank_c', 1)).toBe(1010);
  });

  it('resets the session after a statement that may have changed it, whether it commits or rolls back', async () => {
    const tpc = createClient({ coordinator: embedded, resources: pools });
    const leaveSetting = async (tx: GlobalTransaction) => {
      const { a } = await moveOnBranches(tx, 2, 10);
      await sql`SELECT set_config('application_name', 'left by the branch', false)`.execute(a);
    };
    expect((await tpc.transaction(leaveSetting, { timeoutMs: 5000 })).outcome.status).toBe('committed');
    // bank_a ran the set_config and was reset; bank_c's branch ran only its UPDATE.
    expect(await marks()).toEqual(['', 'marked']);

    await Promise.all(Object.values(pools).map((p) => p.query("SET application_name = 'marked'")));
    const thrown = new Error('the callback changed its mind');
    await expect(
      tpc.transaction(async (tx) => {
        await leaveSetting(tx);
        throw thrown;
      }),
    ).rejects.toBe(thrown);
    expect(await marks()).toEqual(['', 'marked']);
    // Unchanged: the first transfer's 10 moved, the second's rolled back.
    expect(await world.balance('bank_a', 2)).toBe(990);
    expect(await world.balance('bank_c', 2)).toBe(1010);
    expect(await world.preparedGids()).toEqual([]);
  });

  it('resets every session when the coordinator cannot read statements (the client package, a stand-in)', async () => {
    const { mayLeaveSessionState: _unread, ...standIn } = embedded;
    const tpc = createClient({ coordinator: standIn, resources: pools });
    expect((await tpc.transaction((tx) => moveOnBranches(tx, 3, 10), { timeoutMs: 5000 })).outcome.status).toBe('committed');
    expect(await marks()).toEqual(['', '']);
  });
});
