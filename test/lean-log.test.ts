import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from './harness/waits.ts';
import { createWorld, prepareOwnBranch, type World } from './harness/world.ts';

/*
 * The lean log (migration 0005): a happy-path transaction is one row of tpc_transactions, with no
 * row of tpc_branches and no event written; GET still gives its branches and its events, the
 * happy path's derived from the row. What is not the happy path is written as before.
 */
const update = (resource: string, amount: number, id: number) => ({
  resource,
  statements: [{ sql: 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', params: [amount, id] }],
});

describe('the lean log', () => {
  let world: World;
  beforeAll(async () => {
    world = await createWorld();
  });
  afterAll(async () => {
    await world.close();
  });

  /** What the log holds for a transaction: its rows in each table, and what GET makes of them. */
  async function stored(id: string) {
    // Read through the service first: the answer does not wait for the completion record, a read does.
    const shown = await world.request('GET', `/v1/transactions/${id}`);
    expect(shown.status).toBe(200);
    const [row, branches, events] = await Promise.all([
      world.db.log.query(
        'SELECT status::text, version, timeout_ms, interactive, jsonb_array_length(branches) AS lean_branches FROM tpc_transactions WHERE id = $1',
        [id],
      ),
      world.db.log.query('SELECT count(*)::int AS n FROM tpc_branches WHERE transaction_id = $1', [id]),
      world.db.log.query('SELECT kind FROM tpc_events WHERE transaction_id = $1 ORDER BY id', [id]),
    ]);
    return {
      row: row.rows[0],
      branchRows: branches.rows[0].n as number,
      written: events.rows.map((e) => e.kind as string),
      shown: shown.body,
    };
  }

  const kinds = (shown: { events: { kind: string }[] }) => shown.events.map((e) => e.kind);

  it('writes a two-phase commit as one row, and shows it whole', async () => {
    const r = await world.submit({ branches: [update('bank_a', -3, 1), update('bank_c', 3, 1)], timeoutMs: 7_000 });
    expect(r.status).toBe(201);
    const s = await stored(r.body.id);
    // Decided at once, so its begin record was folded into the decision (TPC_BEGIN_DEFER_MS): the
    // row inserted decided, then completed, two versions of one row, nothing else.
    expect(s.row).toEqual({ status: 'committed', version: 2, timeout_ms: 7_000, interactive: false, lean_branches: 2 });
    expect(s.branchRows).toBe(0);
    expect(s.written).toEqual([]);
    expect(kinds(s.shown)).toEqual(['begun', 'decided', 'completed']);
    expect(s.shown.events[0]).toMatchObject({ actor: 'full', detail: { timeoutMs: 7_000, resources: ['bank_a', 'bank_c'] } });
    expect(s.shown.events[1]).toMatchObject({ actor: null, detail: { outcome: 'commit' } });
    expect(s.shown.events[2]).toMatchObject({ detail: { outcome: 'committed' } });
    expect(s.shown.events[1].at).toBe(s.shown.decidedAt);
    expect(s.shown.events[2].at).toBe(s.shown.completedAt);
    expect(s.shown.branches.map((b: { status: string; readOnly: boolean }) => `${b.status}:${b.readOnly}`)).toEqual(['committed:false', 'committed:false']);
    // The xids recorded at the decision are in the row, and say how each branch ended.
    const xids = await world.db.log.query<{ resource: 'bank_a' | 'bank_c'; xid: string }>(
      'SELECT resource, xid FROM tpc_branch_rows WHERE transaction_id = $1',
      [r.body.id],
    );
    for (const b of xids.rows) expect((await world.db[b.resource].query('SELECT pg_xact_status($1::xid8) AS s', [b.xid])).rows[0].s).toBe('committed');
  });

  it('writes each branch whole as a merge of every change would leave it, whether the begin record was folded or written first', async () => {
    const transfer = { branches: [update('bank_a', -1, 3), update('bank_c', 1, 3)] };
    const folded = await world.submit(transfer);
    // A keyed request's begin record is written before its work (TransitionWriter then decides it).
    const begun = await world.submit(transfer, { headers: { 'Idempotency-Key': `whole-${Date.now()}` } });
    for (const r of [folded, begun]) {
      expect(r.status).toBe(201);
      await stored(r.body.id);
      const row = await world.db.log.query('SELECT branches FROM tpc_transactions WHERE id = $1', [r.body.id]);
      expect(row.rows[0].branches).toEqual(
        ['bank_a', 'bank_c'].map((resource, index) => ({
          index,
          resource,
          gid: expect.stringContaining(`${r.body.id}:${index}`),
          status: 'committed',
          xid: expect.stringMatching(/^\d+$/),
          read_only: false,
          results: [{ rowCount: 1, rows: [] }],
        })),
      );
    }
  });

  it('derives a one-phase commit and a read-only commit as the earlier log wrote them', async () => {
    const one = await world.submit({ branches: [update('bank_b', 1, 2)] });
    expect(one.status).toBe(201);
    const s1 = await stored(one.body.id);
    expect(s1.written).toEqual([]);
    expect(kinds(s1.shown)).toEqual(['begun', 'decided', 'completed']);
    expect(s1.shown.events[1].detail).toEqual({ outcome: 'one-phase commit' });

    const read = await world.submit({ branches: [{ resource: 'bank_b', statements: [{ sql: 'SELECT balance FROM accounts WHERE id = 2', params: [] }] }] });
    expect(read.status).toBe(201);
    const s2 = await stored(read.body.id);
    expect(s2.written).toEqual([]);
    // Decided and completed by one statement: no decision of its own, as before.
    expect(kinds(s2.shown)).toEqual(['begun', 'completed']);
    expect(s2.shown.branches[0]).toMatchObject({ status: 'committed', readOnly: true, results: [{ rows: [{ balance: expect.any(Number) }] }] });
  });

  it('writes what is not the happy path: an abort keeps its reason as an event', async () => {
    const r = await world.submit({ branches: [update('bank_a', -1, 3), update('bank_c', -5_000, 3)] });
    expect(r.status).toBe(409);
    const s = await stored(r.body.id);
    expect(s.branchRows).toBe(0);
    expect(s.written.length).toBeGreaterThan(0);
    expect(s.written.every((k) => k !== 'begun')).toBe(true);
    expect(kinds(s.shown)[0]).toBe('begun');
    const reasons = s.shown.events.filter((e: { detail: { reason?: unknown } }) => e.detail.reason);
    expect(reasons[0].detail.reason).toMatchObject({ resource: 'bank_c', code: '23514' });
    expect(s.shown.events.some((e: { kind: string; detail: { outcome?: string } }) => e.kind === 'decided' && e.detail.outcome === 'commit')).toBe(false);
  });

  it('derives an interactive commit by its owner, and keeps a join as an event', async () => {
    const r = await world.submit({ interactive: true, branches: [{ resource: 'bank_a' }], timeoutMs: 10_000 });
    expect(r.status).toBe(201);
    const id = r.body.id as string;
    const joined = await world.request('POST', `/v1/transactions/${id}/branches`, { resource: 'bank_c' });
    expect(joined.status).toBe(201);
    await prepareOwnBranch(world.urls.bank_a, r.body.branches[0].gid, 'UPDATE accounts SET balance = balance - 2 WHERE id = 4');
    await prepareOwnBranch(world.urls.bank_c, joined.body.gid, 'UPDATE accounts SET balance = balance + 2 WHERE id = 4');
    expect((await world.request('POST', `/v1/transactions/${id}/commit`)).status).toBe(200);
    const s = await stored(id);
    expect(s.row).toMatchObject({ status: 'committed', interactive: true, lean_branches: 2 });
    expect(s.written).toEqual(['branch_joined']);
    expect(kinds(s.shown)).toEqual(['begun', 'branch_joined', 'decided', 'completed']);
    expect(s.shown.events[0].detail).toEqual({ timeoutMs: 10_000, resources: ['bank_a'], interactive: true });
    expect(s.shown.events[2]).toMatchObject({ actor: 'full', detail: { outcome: 'commit', interactive: true } });
    expect(await world.balance('bank_c', 4)).toBe(1002);
  });

  it('writes the commit decision of a begun transaction as a heap-only (HOT) update: no index entry for the forced write', async () => {
    const stats = () =>
      world.db.log
        .query<{ hot: number }>("SELECT n_tup_hot_upd::int AS hot FROM pg_stat_user_tables WHERE relname = 'tpc_transactions'")
        .then((r) => r.rows[0]!.hot);
    const before = await stats();
    // Keyed: the begin record is written first (a folded one is inserted decided, no update at all).
    for (let i = 0; i < 6; i++) {
      const r = await world.submit({ branches: [update('bank_a', -1, 5), update('bank_b', 1, 5)] }, { headers: { 'Idempotency-Key': `hot-${i}` } });
      expect(r.status).toBe(201);
    }
    // Statistics reach the view a moment after each backend's transactions.
    await eventually(stats, (hot) => hot - before >= 6, 'six HOT updates counted', 10_000);
  });

  it('refuses a status change of a lean row that does not bump its version (what an earlier revision would write)', async () => {
    const r = await world.submit({ interactive: true, branches: [{ resource: 'bank_a' }], timeoutMs: 10_000 });
    const id = r.body.id as string;
    // The earlier revision's abort decision, as it wrote it: status and driver, no version.
    await expect(world.db.log.query("UPDATE tpc_transactions SET status = 'aborting', decided_at = now() WHERE id = $1", [id])).rejects.toThrow(
      /keeps its branches in tpc_transactions.branches: a coordinator of a revision before migration 0005_lean_log cannot change its status/,
    );
    // Other changes (a lease, an attempt counted) are harmless and still allowed.
    await world.db.log.query('UPDATE tpc_transactions SET attempts = attempts + 1 WHERE id = $1', [id]);
    expect((await world.request('POST', `/v1/transactions/${id}/abort`)).status).toBe(200);
  });
});
