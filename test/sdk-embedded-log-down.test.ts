import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, createCoordinator, TransactionAbortedError, type EmbeddedCoordinator } from 'pg-2pc-coordinator';
import { moveOnBranches } from './harness/sdk-transfer.ts';
import { adminUrl, createWorld, type World } from './harness/world.ts';

/*
 * The embedded SDK's commit is the insert of its transaction's row (the begin record deferred).
 * With the log refusing connections that insert certainly fails: the transaction is aborted with
 * nothing applied, and its prepared branches are rolled back at once, not left holding their
 * locks until recovery's fence at the deadline.
 */
describe('the embedded coordinator committing while the log refuses connections', () => {
  let world: World;
  let embedded: EmbeddedCoordinator;
  let pools: Record<'bank_a' | 'bank_c', pg.Pool>;

  beforeAll(async () => {
    world = await createWorld();
    // Deferred for longer than the test: the commit, not the timer, is the row's first write.
    embedded = await createCoordinator({ ...world.config, beginDeferMs: 60_000 }, { logger: pino({ level: 'silent' }) });
    pools = {
      bank_a: new pg.Pool({ connectionString: world.urls.bank_a, max: 4 }),
      bank_c: new pg.Pool({ connectionString: world.urls.bank_c, max: 4 }),
    };
  });
  afterAll(async () => {
    await embedded?.close();
    await Promise.all(Object.values(pools ?? {}).map((p) => p.end()));
    await world?.close();
  });

  /** Runs `during` while no new connection to the log is accepted and the coordinator's are ended. */
  async function logRefusing<T>(during: () => Promise<T>): Promise<T> {
    const log = new URL(world.urls.log);
    const database = log.pathname.slice(1);
    // From another database: Postgres refuses to close the one a session is in to new connections.
    const admin = new pg.Client({ connectionString: adminUrl({ host: log.hostname, port: Number(log.port) }, 'postgres') });
    await admin.connect();
    try {
      await admin.query(`ALTER DATABASE "${database}" WITH ALLOW_CONNECTIONS false`);
      await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND usename = $2', [
        database,
        decodeURIComponent(log.username),
      ]);
      // The pools hear of their ended connections before the commit asks for one.
      await new Promise((r) => setTimeout(r, 300));
      return await during();
    } finally {
      await admin.query(`ALTER DATABASE "${database}" WITH ALLOW_CONNECTIONS true`);
      await admin.end();
    }
  }

  it('aborts with nothing applied and rolls its prepared branches back at once', async () => {
    let id = '';
    const client = createClient({
      coordinator: {
        ...embedded,
        commitPrepared: (txId, t) => {
          id = txId;
          return logRefusing(() => embedded.commitPrepared(txId, t));
        },
      },
      resources: pools,
    });
    const err = await client.transaction((tx) => moveOnBranches(tx, 3, 25), { timeoutMs: 30_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransactionAbortedError);
    // The answer from memory, with the reason: the log had nothing to give.
    expect(err).toMatchObject({
      code: 'commit_refused',
      outcome: {
        status: 'aborted',
        error: { code: 'log_unavailable', message: expect.stringContaining('nothing was applied') },
        branches: [
          { resource: 'bank_a', status: 'aborted' },
          { resource: 'bank_c', status: 'aborted' },
        ],
      },
    });
    expect(id).not.toBe('');
    expect(String((err as Error).message)).toContain(id);
    // Well before the 30 s deadline: nothing prepared is left, nothing was applied, and no row was written.
    expect(await world.preparedGids()).toEqual([]);
    expect(await world.balance('bank_a', 3)).toBe(1000);
    expect(await world.balance('bank_c', 3)).toBe(1000);
    expect((await world.db.log.query('SELECT 1 FROM tpc_transactions WHERE id = $1', [id])).rowCount).toBe(0);

    // The log back, the same coordinator commits again.
    const { outcome } = await createClient({ coordinator: embedded, resources: pools }).transaction((tx) => moveOnBranches(tx, 3, 25), { timeoutMs: 10_000 });
    expect(outcome.status).toBe('committed');
    expect(await world.balance('bank_a', 3)).toBe(975);
    expect(await world.balance('bank_c', 3)).toBe(1025);
  });
});
