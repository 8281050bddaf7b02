import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { StaleStateError } from '../coordinator/errors.ts';
import { migrateLog, openLogDatabase } from '../coordinator/log/log-database.ts';
import { TransactionsStore } from '../coordinator/log/transactions-store.ts';
import type { BeginRecord, BranchUpdate } from '../coordinator/engine/log-port.ts';
import { beginRecord } from './harness/begin-record.ts';
import { eventually } from './harness/waits.ts';
import { createDatabase } from './harness/world.ts';

/*
 * The log's state changes with group commit, against a real log: concurrent transitions share one
 * statement, each remains its own compare-and-set, and each caller gets its own result.
 */
/**
 * A fresh, migrated log database: a store on it (the batch sizes of `batcher` recorded, of every
 * batcher without one) and a plain client to read what it wrote. `close` ends all three.
 */
async function freshLog(prefix: string, batcher?: string) {
  const url = await createDatabase(inject('clusterA'), `${prefix}_${Math.random().toString(36).slice(2, 8)}`);
  await migrateLog(url);
  const db = openLogDatabase({ url, maxConnections: 4 });
  const sizes: number[] = [];
  const store = new TransactionsStore(db, {
    flushed: (name, size) => {
      if (batcher === undefined || name === batcher) sizes.push(size);
    },
    refused: () => {},
  });
  const oracle = new pg.Client({ connectionString: url });
  await oracle.connect();
  const close = async () => {
    await oracle.end();
    await store.close();
    await db.close();
  };
  return { store, oracle, sizes, close };
}

describe('state changes written in batches', () => {
  it('each of many concurrent transitions gets its own result; stale ones fail alone; rows, branches and events agree', async () => {
    const { store, oracle, sizes, close } = await freshLog('tw');
    try {
      const N = 120;
      const ids = Array.from({ length: N }, () => randomUUID());
      await Promise.all(ids.map((id) => store.begin(beginRecord('tw', ['a', 'b'], { id, submittedBy: 'test', driver: 'me' }))));
      // Every third one is written by a driver that does not hold it: refused, alone.
      const decide = (id: string, i: number) =>
        store
          .transition({
            id,
            from: 'active',
            to: 'committing',
            forced: true,
            driver: i % 3 === 0 ? 'someone-else' : 'me',
            branches: [
              { index: 0, status: 'prepared', xid: String(1000 + i) },
              { index: 1, status: 'prepared', xid: String(2000 + i) },
            ],
            event: { kind: 'decided', detail: { outcome: 'commit', i } },
          })
          .then(
            () => 'moved',
            (err: unknown) => err,
          );
      const decided = await Promise.all(ids.map(decide));
      for (const [i, r] of decided.entries()) {
        if (i % 3 === 0) {
          expect(r).toBeInstanceOf(StaleStateError);
          expect((r as Error).message).toContain(ids[i]);
        } else {
          expect(r).toBe('moved');
        }
      }
      expect(
        sizes.some((s) => s > 1),
        `batch sizes ${sizes.join(',')}`,
      ).toBe(true);
      expect(sizes.every((s) => s <= 64)).toBe(true);

      const rows = (
        await oracle.query<{ id: string; status: string; decided: boolean; xids: string[]; events: string[] }>(`
        SELECT t.id, t.status::text, t.decided_at IS NOT NULL AS decided,
          (SELECT array_agg(b.xid ORDER BY b.index) FROM tpc_branch_rows b WHERE b.transaction_id = t.id) AS xids,
          (SELECT array_agg(e.kind || ':' || coalesce(e.detail->>'i', '') ORDER BY e.id) FROM tpc_events e WHERE e.transaction_id = t.id) AS events
        FROM tpc_transactions t`)
      ).rows;
      const byId = new Map(rows.map((r) => [r.id, r]));
      for (const [i, id] of ids.entries()) {
        const r = byId.get(id)!;
        // The begin writes no event (a lean row derives 'begun'); this decision is not a derivable one.
        if (i % 3 === 0) expect(r).toMatchObject({ status: 'active', decided: false, xids: [null, null], events: null });
        else expect(r).toMatchObject({ status: 'committing', decided: true, xids: [String(1000 + i), String(2000 + i)], events: [`decided:${i}`] });
      }

      // The same transaction twice in one burst (two writers racing): exactly one moves it.
      const id = ids[1]!;
      const race = await Promise.all(
        [0, 1].map(() =>
          store
            .transition({
              id,
              from: 'committing',
              to: 'committed',
              forced: false,
              driver: 'me',
              branches: [
                { index: 0, status: 'committed' },
                { index: 1, status: 'committed' },
              ],
              event: { kind: 'completed' },
            })
            .then(
              () => 'moved',
              (err: unknown) => err,
            ),
        ),
      );
      expect(race.filter((r) => r === 'moved')).toHaveLength(1);
      expect(race.filter((r) => r instanceof StaleStateError)).toHaveLength(1);
      const completed = await oracle.query('SELECT count(*)::int AS n FROM tpc_events WHERE transaction_id = $1 AND kind = $2', [id, 'completed']);
      expect(completed.rows[0].n).toBe(1);

      // Shutdown writes what is queued, then refuses.
      const last = store.transition({ id: ids[2]!, from: 'committing', to: 'committed', forced: false, driver: 'me', event: { kind: 'completed' } });
      await store.close();
      await expect(last).resolves.toBeUndefined();
      await expect(
        store.transition({ id: ids[4]!, from: 'committing', to: 'committed', forced: false, driver: 'me', event: { kind: 'completed' } }),
      ).rejects.toThrow(/closed/);
    } finally {
      await close();
    }
  });

  it('a batch of transitions finds its rows by primary key, however small the table was when its plan was made', async () => {
    // The batch statement is prepared once per connection and its generic plan kept. A join to
    // jsonb_to_recordset alone was planned as a hash join over a scan of the whole table, which
    // then grew under the plan: milliseconds per batch in the benchmark. The backends' counters
    // reach pg_stat_user_tables when they exit, hence the pool closed before they are read.
    const url = await createDatabase(inject('clusterA'), `tws_${Math.random().toString(36).slice(2, 8)}`);
    await migrateLog(url);
    const oracle = new pg.Client({ connectionString: url });
    await oracle.connect();
    const scans = async () => {
      await oracle.query('SELECT pg_stat_force_next_flush()');
      const r = await oracle.query<{ seq_scan: string }>("SELECT seq_scan::text FROM pg_stat_user_tables WHERE relname = 'tpc_transactions'");
      return Number(r.rows[0]!.seq_scan);
    };
    const db = openLogDatabase({ url, maxConnections: 2 });
    const sizes: number[] = [];
    const store = new TransactionsStore(db, {
      flushed: (name, size) => {
        if (name.startsWith('transition')) sizes.push(size);
      },
      refused: () => {},
    });
    try {
      const before = await scans();
      // Rounds enough for the generic plan (made after five executions of a statement).
      for (let round = 0; round < 8; round++) {
        // The plans are made while the table is nearly empty; then it grows.
        if (round === 3)
          await oracle.query(`INSERT INTO tpc_transactions (id, namespace, deadline, submitted_by, driver, lease_until, branch_count, branches, version, status)
            SELECT gen_random_uuid(), 'filler', now(), 'test', 'me', now(), 1, '[]', 1, 'committed' FROM generate_series(1, 5000)`);
        const ids = Array.from({ length: 24 }, () => randomUUID());
        await Promise.all(ids.map((id) => store.begin(beginRecord('tws', ['a'], { id, submittedBy: 'test', driver: 'me' }))));
        for (const [from, to, forced] of [
          ['active', 'committing', true],
          ['committing', 'committed', false],
        ] as const) {
          await Promise.all(
            ids.map((id) =>
              store.transition({
                id,
                from,
                to,
                forced,
                driver: 'me',
                branches: [{ index: 0, status: to === 'committed' ? 'committed' : 'prepared' }],
                event: { kind: 'x', derivable: true },
              }),
            ),
          );
        }
      }
      expect(sizes.filter((s) => s > 1).length, `batch sizes ${sizes.join(',')}`).toBeGreaterThan(6);
      await store.close();
      await db.close();
      await eventually(
        async () =>
          (
            await oracle.query(
              "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'tpc-coordinator-log'",
            )
          ).rows[0].n,
        (n) => n === 0,
        "the pool's backends to exit",
      );
      expect(await scans()).toBe(before);
      const done = await oracle.query("SELECT count(*)::int AS n FROM tpc_transactions WHERE namespace = 'tws' AND status = 'committed' AND version = 3");
      expect(done.rows[0].n).toBe(8 * 24);
    } finally {
      await oracle.end();
    }
  });

  it('concurrent unkeyed begin records share statements; each is one whole lean row (its begun event derived)', async () => {
    const { store, oracle, sizes, close } = await freshLog('twb', 'begin');
    try {
      const ids = Array.from({ length: 150 }, () => randomUUID());
      const outcomes = await Promise.all(
        ids.map((id, i) =>
          store.begin({
            id,
            namespace: 'twb',
            deadline: new Date(Date.now() + 60_000 + i),
            submittedBy: i % 2 ? 'tok' : null,
            driver: 'me',
            branches: Array.from({ length: 1 + (i % 3) }, (_, b) => ({ index: b, resource: `r${b}`, gid: `tpc:twb:${id}:${b}` })),
            timeoutMs: 60_000 + i,
          }),
        ),
      );
      expect(outcomes.every((o) => o.created)).toBe(true);
      expect(
        sizes.some((s) => s > 1),
        `batch sizes ${sizes.join(',')}`,
      ).toBe(true);
      const rows = (
        await oracle.query<{
          id: string;
          submitted_by: string | null;
          branch_count: number;
          branches: number;
          events: number;
          lease: boolean;
          timeout_ms: number;
        }>(`
        SELECT t.id, t.submitted_by, t.branch_count, t.lease_until = t.deadline AS lease, t.timeout_ms,
          (SELECT count(*)::int FROM tpc_branch_rows b WHERE b.transaction_id = t.id) AS branches,
          (SELECT count(*)::int FROM tpc_events e WHERE e.transaction_id = t.id) AS events
        FROM tpc_transactions t WHERE t.namespace = 'twb' AND t.status = 'active'`)
      ).rows;
      const byId = new Map(rows.map((r) => [r.id, r]));
      for (const [i, id] of ids.entries()) {
        // One lean row each: its branches in the row, no event written (the 'begun' one is derived).
        expect(byId.get(id)).toMatchObject({
          submitted_by: i % 2 ? 'tok' : null,
          branch_count: 1 + (i % 3),
          branches: 1 + (i % 3),
          events: 0,
          lease: true,
          timeout_ms: 60_000 + i,
        });
        expect((await store.load(id))?.events.map((e) => e.kind)).toEqual(['begun']);
      }
    } finally {
      await close();
    }
  });

  it('a first change and a completion written alone (single-row statements) leave the row a batch of them leaves', async () => {
    const { store, oracle, sizes, close } = await freshLog('twf', 'first-change-forced');
    try {
      const decideFolded = (i: number) => {
        const insert = beginRecord('twf', ['a', 'b'], { submittedBy: 'tok', driver: 'me', timeoutMs: 30_000, deadline: new Date(Date.now() + 30_000) });
        return store
          .transition({
            id: insert.id,
            from: 'active',
            to: 'committing',
            forced: true,
            driver: 'me',
            branchesChecked: 2,
            branches: [
              { index: 0, status: 'prepared', xid: String(100 + i), readOnly: false },
              { index: 1, status: 'prepared', xid: null, readOnly: true },
            ],
            event: { kind: 'decided', detail: { outcome: 'commit' }, derivable: true },
            insert,
          })
          .then(() => insert.id);
      };
      const alone = await decideFolded(0);
      // The first of three flushes at once, alone; the other two wait for it and share a statement.
      const together = await Promise.all([1, 2, 3].map(decideFolded));
      expect(sizes).toEqual([1, 1, 2]);
      const rowOf = async (id: string) =>
        (
          await oracle.query(
            `SELECT namespace, status, one_phase, heuristic, submitted_by, driver, lease_until = deadline AS leased, branch_count,
               jsonb_path_query_array(branches, '$[*].status') AS statuses, jsonb_path_query_array(branches, '$[*].read_only') AS read_only,
               jsonb_array_length(branches) AS n, timeout_ms, interactive, version, error, finished, in_doubt,
               created_at <= now() AND created_at >= deadline - interval '30 s' - interval '1 s' AS created_from_deadline,
               decided_at IS NOT NULL AS decided, completed_at IS NULL AS open,
               (SELECT count(*)::int FROM tpc_events e WHERE e.transaction_id = t.id) AS events
             FROM tpc_transactions t WHERE id = $1`,
            [id],
          )
        ).rows[0];
      const single = await rowOf(alone);
      expect(single).toMatchObject({
        status: 'committing',
        leased: true,
        branch_count: 2,
        n: 2,
        events: 0,
        created_from_deadline: true,
        decided: true,
        open: true,
      });
      expect(await rowOf(together[2]!)).toEqual(single);
      // The xids differ, the rest of each branch alike.
      const branches = (id: string) => oracle.query('SELECT branches FROM tpc_transactions WHERE id = $1', [id]).then((r) => r.rows[0].branches);
      expect((await branches(alone))[0]).toMatchObject({ index: 0, resource: 'a', status: 'prepared', xid: '100', read_only: false });
      expect((await branches(together[2]!))[0]).toMatchObject({ index: 0, resource: 'a', status: 'prepared', xid: '103', read_only: false });
      // Their completions: the first alone (the lean single-row UPDATE), the others behind it, batched.
      const complete = (id: string) =>
        store.transition({
          id,
          from: 'committing',
          to: 'committed',
          forced: false,
          driver: 'me',
          branches: [
            { index: 0, status: 'committed' },
            { index: 1, status: 'committed' },
          ],
          event: { kind: 'completed', detail: { outcome: 'committed' }, derivable: true },
        });
      await complete(alone);
      await Promise.all(together.map(complete));
      const done = await rowOf(alone);
      expect(done).toMatchObject({
        status: 'committed',
        statuses: ['committed', 'committed'],
        read_only: [false, true],
        version: 2,
        finished: true,
        open: false,
        events: 0,
      });
      expect(await rowOf(together[2]!)).toEqual(done);
      expect((await branches(alone))[0]).toMatchObject({ index: 0, resource: 'a', status: 'committed', xid: '100', read_only: false });
      // A stale completion (another driver's) moves nothing, alone too.
      await expect(complete(alone)).rejects.toBeInstanceOf(StaleStateError);
      // A first change for a row that is already there (recovery's tombstone) fails alone, stale.
      await expect(
        store.transition({
          id: alone,
          from: 'active',
          to: 'committing',
          forced: true,
          driver: 'me',
          event: { kind: 'decided', detail: { outcome: 'commit' }, derivable: true },
          insert: beginRecord('twf', ['a'], { id: alone, driver: 'me' }),
        }),
      ).rejects.toBeInstanceOf(StaleStateError);
    } finally {
      await close();
    }
  });

  it('a whole list of branches leaves the row a merge of updates leaves, alone and batched; one that counts fewer branches is merged', async () => {
    const { store, oracle, sizes, close } = await freshLog('twh', 'transition-relaxed');
    try {
      const decided = async (resources: string[]) => {
        const insert = beginRecord('twh', resources, { driver: 'me' });
        await store.transition({
          id: insert.id,
          from: 'active',
          to: 'committing',
          forced: true,
          driver: 'me',
          branches: resources.map((_, index) => ({ index, status: 'prepared', xid: index === 1 ? null : String(700 + index), readOnly: index === 1 })),
          event: { kind: 'decided', detail: { outcome: 'commit' }, derivable: true },
          insert,
        });
        return insert;
      };
      const results = [{ rowCount: 1, rows: [{ n: 1 }] }];
      const complete = (id: string, branches: BranchUpdate[], whole?: boolean) =>
        store.transition({
          id,
          from: 'committing',
          to: 'committed',
          forced: false,
          driver: 'me',
          branches,
          branchesWhole: whole,
          event: { kind: 'completed', detail: { outcome: 'committed' }, derivable: true },
        });
      // What the driver sends: the updates alone, or every branch with every field its row holds.
      const updates = (n: number): BranchUpdate[] =>
        Array.from({ length: n }, (_, index) => ({ index, status: 'committed', readOnly: index === 1, results: index === 1 ? undefined : results }));
      const whole = (r: BeginRecord, n = r.branches.length): BranchUpdate[] =>
        updates(n).map((u) => ({
          ...u,
          resource: r.branches[u.index]!.resource,
          gid: r.branches[u.index]!.gid,
          xid: u.index === 1 ? null : String(700 + u.index),
        }));
      // Each row's branches with its own id taken out of the gids: rows of one shape compare equal.
      const branches = async (r: BeginRecord) => {
        const row = (await oracle.query('SELECT branches FROM tpc_transactions WHERE id = $1', [r.id])).rows[0];
        return JSON.parse(JSON.stringify(row.branches).replaceAll(r.id, 'ID'));
      };

      const merged = await Promise.all([0, 1, 2].map(() => decided(['a', 'b', 'c'])));
      const taken = await Promise.all([0, 1, 2].map(() => decided(['a', 'b', 'c'])));
      sizes.length = 0;
      // Three at once each way: the first alone (the single-row statement), the other two behind it
      // in one (the batch statement).
      await Promise.all(merged.map((r) => complete(r.id, updates(3))));
      await Promise.all(taken.map((r) => complete(r.id, whole(r), true)));
      expect(sizes).toEqual([1, 2, 1, 2]);
      const expected = [0, 1, 2].map((index) => ({
        index,
        resource: ['a', 'b', 'c'][index],
        gid: `tpc:twh:ID:${index}`,
        status: 'committed',
        read_only: index === 1,
        ...(index === 1 ? {} : { xid: String(700 + index), results }),
      }));
      for (const r of [...merged, ...taken]) expect(await branches(r)).toEqual(expected);

      // A list that counts fewer branches than the row (a branch it does not know of) is merged:
      // the third branch is kept, not dropped.
      const short = await decided(['a', 'b', 'c']);
      await complete(short.id, whole(short, 2), true);
      expect((await branches(short)).map((b: { status: string }) => b.status)).toEqual(['committed', 'committed', 'prepared']);

      // Taken as it stands, not merged, by the single-row and the batch statement alike: a field the
      // row's branch held and the list leaves out is gone.
      const extra = await Promise.all([0, 1, 2].map(() => decided(['a', 'b'])));
      await oracle.query(`UPDATE tpc_transactions SET branches = jsonb_set(branches, '{0,note}', '"x"') WHERE id = ANY($1)`, [extra.map((r) => r.id)]);
      sizes.length = 0;
      await Promise.all(extra.map((r) => complete(r.id, whole(r), true)));
      expect(sizes).toEqual([1, 2]);
      for (const r of extra) expect((await branches(r))[0]).not.toHaveProperty('note');

      // In a batch, an item that cannot move (another driver's) fails alone; the others are written.
      const mixed = await Promise.all([0, 1, 2, 3].map(() => decided(['a', 'b'])));
      const outcomes = await Promise.allSettled(
        mixed.map((r, i) =>
          store.transition({
            id: r.id,
            from: 'committing',
            to: 'committed',
            forced: false,
            driver: i === 2 ? 'someone-else' : 'me',
            branches: whole(r),
            branchesWhole: true,
            event: { kind: 'completed', detail: { outcome: 'committed' }, derivable: true },
          }),
        ),
      );
      expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
      expect((outcomes[2] as PromiseRejectedResult).reason).toBeInstanceOf(StaleStateError);
      const statuses = await oracle.query('SELECT id, status::text FROM tpc_transactions WHERE id = ANY($1)', [mixed.map((r) => r.id)]);
      expect(mixed.map((r) => statuses.rows.find((x) => x.id === r.id)!.status)).toEqual(['committed', 'committed', 'committing', 'committed']);

      // So with first changes: in a batch of inserts, the one whose row is there already fails alone.
      const there = mixed[0]!;
      const inserts = [beginRecord('twh', ['a']), beginRecord('twh', ['a'], { id: there.id }), beginRecord('twh', ['a'])];
      const firsts = await Promise.allSettled(
        inserts.map((insert) =>
          store.transition({
            id: insert.id,
            from: 'active',
            to: 'aborted',
            forced: false,
            driver: 'me',
            event: { kind: 'aborted', detail: { outcome: 'aborted' }, derivable: true },
            insert,
          }),
        ),
      );
      expect(firsts.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
      expect((firsts[1] as PromiseRejectedResult).reason).toBeInstanceOf(StaleStateError);
    } finally {
      await close();
    }
  });

  it('completions that may linger share a statement though they come one after another; the others go at once', async () => {
    const { store, oracle, sizes, close } = await freshLog('twl', 'transition-lingering');
    try {
      const ids = Array.from({ length: 5 }, () => randomUUID());
      await Promise.all(ids.map((id) => store.begin(beginRecord('twl', ['a'], { id, submittedBy: 'test', driver: 'me' }))));
      for (const id of ids) {
        await store.transition({
          id,
          from: 'active',
          to: 'committing',
          forced: true,
          driver: 'me',
          branches: [{ index: 0, status: 'prepared', xid: '7' }],
          event: { kind: 'decided', detail: { outcome: 'commit' } },
        });
      }
      const complete = (id: string, lingers: boolean) =>
        store.transition({
          id,
          from: 'committing',
          to: 'committed',
          forced: false,
          lingers,
          driver: 'me',
          branches: [{ index: 0, status: 'committed' }],
          event: { kind: 'completed', detail: { outcome: 'committed' }, derivable: true },
        });
      // Two that do not linger, each awaited: neither waits for the other, nor goes to the lingering writer.
      await complete(ids[0]!, false);
      await complete(ids[1]!, false);
      expect(sizes).toEqual([]);
      // Three that linger, each in a later turn of the event loop: they share statements, the
      // first of them included (without the linger, the first would go alone at once).
      const lingering: Promise<void>[] = [];
      for (const id of ids.slice(2)) {
        lingering.push(complete(id, true));
        await new Promise((r) => setImmediate(r));
      }
      await Promise.all(lingering);
      expect(sizes[0], `batch sizes ${sizes.join(',')}`).toBeGreaterThan(1);
      expect(sizes.reduce((a, b) => a + b, 0)).toBe(3);
      const statuses = await oracle.query('SELECT status::text FROM tpc_transactions WHERE id = ANY($1::uuid[])', [ids]);
      expect(statuses.rows.map((r) => r.status)).toEqual(Array(5).fill('committed'));
    } finally {
      await close();
    }
  });
});
