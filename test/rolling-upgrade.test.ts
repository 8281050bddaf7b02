import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCoordinatorProcess, type CoordinatorProcess } from './harness/coordinator-process.ts';
import { checkOutRevision, hasRevision } from './harness/earlier-revision.ts';
import { eventually } from './harness/waits.ts';
import { createDatabases, httpRequest, move, type Databases } from './harness/world.ts';

/*
 * A rolling upgrade to the lean log (migration 0005): coordinators of the revision before it keep
 * running beside this revision's on one log and one Redis. The earlier revision knows nothing of
 * lean rows: it reads their branches from tpc_branches, finds none, and would complete them over
 * zero branches. The log's guard refuses that, so it only ever waits; this revision drives both
 * kinds of rows. The earlier revision runs from git (git archive), as it was.
 */
const BEFORE_LEAN_LOG = '3b5d8aa1ede343f851ce60fc170842c1c03255eb';
const FAST = { TPC_RECONCILE_INTERVAL_MS: '300', TPC_RETRY_BASE_MS: '100', TPC_RETRY_MAX_MS: '500', LOG_LEVEL: 'info' };

const available = hasRevision(BEFORE_LEAN_LOG);
if (!available) console.warn(`rolling-upgrade test skipped: this clone's history lacks ${BEFORE_LEAN_LOG} (a shallow clone)`);

describe.skipIf(!available)('a rolling upgrade to the lean log: the revision before it and this one on one log', () => {
  let dbs: Databases;
  let tree: ReturnType<typeof checkOutRevision>;
  let old: CoordinatorProcess;
  let oldDoomed: CoordinatorProcess | undefined;
  let fresh: CoordinatorProcess | undefined;

  beforeAll(async () => {
    dbs = await createDatabases();
    tree = checkOutRevision(BEFORE_LEAN_LOG);
    // The earlier revision's instances start first (it migrates the log to 0004), as they were
    // running before the upgrade: one of that revision cannot start on a log that has migrations it
    // does not know (Kysely refuses), which is the loud failure an upgrade wants.
    [old, oldDoomed] = await Promise.all([
      startCoordinatorProcess({ ...dbs.env, ...FAST, TPC_INSTANCE_ID: 'old' }, { root: tree.root }),
      startCoordinatorProcess({ ...dbs.env, ...FAST, TPC_INSTANCE_ID: 'old-doomed', TPC_FAILPOINTS: 'after-decision:crash' }, { root: tree.root }),
    ]);
    fresh = await startCoordinatorProcess({ ...dbs.env, ...FAST, TPC_INSTANCE_ID: 'new' });
    const applied = await dbs.db.log.query<{ name: string }>('SELECT name FROM tpc_migrations ORDER BY name');
    expect(applied.rows.map((r) => r.name)).toContain('0005_lean_log');
  }, 90_000);

  afterAll(async () => {
    await Promise.allSettled([old?.kill('SIGTERM'), oldDoomed?.kill('SIGKILL'), fresh?.kill('SIGTERM')]);
    tree?.remove();
    await dbs?.end();
  });

  const kindOf = async (id: string) =>
    (await dbs.db.log.query<{ lean: boolean; status: string }>('SELECT branches IS NOT NULL AS lean, status::text FROM tpc_transactions WHERE id = $1', [id]))
      .rows[0];

  it('serves transfers from both instances; this one reads both kinds of rows whole', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 24; i++) {
      const via = i % 2 === 0 ? old : fresh!;
      const r = await httpRequest(via.url, 'POST', '/v1/transactions', move('bank_a', 'bank_c', 10, 1));
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      ids.push(r.body.id);
    }
    expect(await dbs.balance('bank_a', 1)).toBe(1000 - 240);
    expect(await dbs.balance('bank_c', 1)).toBe(1000 + 240);
    expect(await dbs.preparedGids()).toEqual([]);
    const kinds = await Promise.all(ids.map(kindOf));
    expect(kinds.filter((k) => k?.lean)).toHaveLength(12);
    for (const [i, id] of ids.entries()) {
      const r = await httpRequest(fresh!.url, 'GET', `/v1/transactions/${id}`);
      expect(r.status).toBe(200);
      expect(
        r.body.branches.map((b: { resource: string; status: string }) => `${b.resource}:${b.status}`),
        `transaction ${i}`,
      ).toEqual(['bank_a:committed', 'bank_c:committed']);
      expect(
        r.body.events.map((e: { kind: string }) => e.kind),
        `transaction ${i}`,
      ).toEqual(['begun', 'decided', 'completed']);
    }
  });

  it('leaves a lean transaction to this revision: the earlier one cannot complete it over zero branches', async () => {
    const n = 2;
    // Only the earlier revision runs while a lean transaction waits for phase 2.
    await fresh!.kill('SIGTERM');
    const doomed = await startCoordinatorProcess({ ...dbs.env, ...FAST, TPC_INSTANCE_ID: 'new-doomed', TPC_FAILPOINTS: 'after-decision:crash' });
    const lost = await httpRequest(doomed.url, 'POST', '/v1/transactions', move('bank_a', 'bank_c', 100, n, { timeoutMs: 1_000 })).catch((err: Error) => err);
    expect(lost).toBeInstanceOf(Error);
    await doomed.exited;
    const [row] = (await dbs.db.log.query<{ id: string }>("SELECT id FROM tpc_transactions WHERE driver = 'new-doomed'")).rows;
    expect(await kindOf(row!.id)).toEqual({ lean: true, status: 'committing' });

    // The earlier revision takes it up once the dead driver's lease (its deadline) runs out, and
    // fails at the log's guard, again and again; the branches stay prepared, as the decision needs.
    const tried = await eventually(
      () =>
        dbs.db.log
          .query<{ status: string; attempts: number; last_error: { message?: string } | null; driver: string | null }>(
            'SELECT status::text, attempts, last_error, driver FROM tpc_transactions WHERE id = $1',
            [row!.id],
          )
          .then((r) => r.rows[0]!),
      (t) => t.attempts >= 2,
      'the earlier revision trying to finish it',
      20_000,
    );
    expect(tried.status).toBe('committing');
    expect(JSON.stringify(tried.last_error)).toMatch(/cannot change its status/);
    expect((await dbs.preparedGids()).filter((g) => g.includes(row!.id))).toHaveLength(2);

    // This revision back: it commits the branches and completes the row.
    fresh = await startCoordinatorProcess({ ...dbs.env, ...FAST, TPC_INSTANCE_ID: 'new' });
    await eventually(
      () => kindOf(row!.id),
      (k) => k?.status === 'committed',
      'this revision finishing it',
      20_000,
    );
    expect(await dbs.balance('bank_a', n)).toBe(900);
    expect(await dbs.balance('bank_c', n)).toBe(1100);
    expect((await dbs.preparedGids()).filter((g) => g.includes(row!.id))).toEqual([]);
    const shown = await httpRequest(fresh.url, 'GET', `/v1/transactions/${row!.id}`);
    expect(shown.body).toMatchObject({ status: 'committed', heuristic: false });
    expect(shown.body.branches.map((b: { status: string }) => b.status)).toEqual(['committed', 'committed']);
  });

  it('finishes a transaction the earlier revision decided and left, in its own kind of row', async () => {
    const n = 3;
    const lost = await httpRequest(oldDoomed!.url, 'POST', '/v1/transactions', move('bank_a', 'bank_c', 100, n, { timeoutMs: 1_000 })).catch(
      (err: Error) => err,
    );
    expect(lost).toBeInstanceOf(Error);
    await oldDoomed!.exited;
    oldDoomed = undefined;
    const [row] = (await dbs.db.log.query<{ id: string }>("SELECT id FROM tpc_transactions WHERE branches IS NULL AND status = 'committing'")).rows;
    expect((await kindOf(row!.id))?.lean).toBe(false);
    // Either instance may finish it (both read tpc_branches); stop the earlier one to prove this one does.
    await old.kill('SIGTERM');
    await eventually(
      () => kindOf(row!.id),
      (k) => k?.status === 'committed',
      'this revision finishing it',
      20_000,
    );
    expect(await dbs.balance('bank_a', n)).toBe(900);
    expect(await dbs.balance('bank_c', n)).toBe(1100);
    expect(await dbs.preparedGids()).toEqual([]);
    // Its branch rows and events are kept the earlier revision's way, so either revision reads it.
    const branches = await dbs.db.log.query('SELECT status::text FROM tpc_branches WHERE transaction_id = $1 ORDER BY index', [row!.id]);
    expect(branches.rows.map((b) => b.status)).toEqual(['committed', 'committed']);
    const events = await dbs.db.log.query('SELECT kind FROM tpc_events WHERE transaction_id = $1 ORDER BY id', [row!.id]);
    expect(events.rows.map((e) => e.kind)).toEqual(['begun', 'decided', 'completed']);
  });
});
