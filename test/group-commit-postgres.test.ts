import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { StaleStateError } from '../coordinator/errors.ts';
import { GroupCommit } from '../coordinator/log/group-commit.ts';
import { eventually } from './harness/waits.ts';
import { adminUrl, createDatabase } from './harness/world.ts';

/*
 * The batcher against a real Postgres, with the statement shape the log will use: a batched
 * compare-and-set, `UPDATE … FROM unnest(…) WITH ORDINALITY … RETURNING ord`, whose returned
 * ordinals say which items found their row. test/group-commit.test.ts has the rules in memory.
 */

interface Move {
  id: string;
  from: string;
  to: string;
}

const CAS_SQL = `
  UPDATE gc_rows AS r SET status = u.next
  FROM unnest($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY AS u(id, expected, next, ord)
  WHERE r.id = u.id AND r.status = u.expected
  RETURNING u.ord`;

/** One statement for the whole batch; an item whose row was not in its expected state fails alone. */
function casWriter(pool: pg.Pool, batchSizes: number[]) {
  return async (items: Move[]): Promise<Array<string | Error>> => {
    batchSizes.push(items.length);
    const r = await pool.query<{ ord: string }>(CAS_SQL, [items.map((m) => m.id), items.map((m) => m.from), items.map((m) => m.to)]);
    const matched = new Set(r.rows.map((row) => Number(row.ord)));
    return items.map((m, i) => (matched.has(i + 1) ? m.to : new StaleStateError(m.id, m.from, m.to)));
  };
}

let name: string;
let pool: pg.Pool;
let admin: pg.Pool;

beforeAll(async () => {
  const cluster = inject('clusterA');
  name = `gc_${randomUUID().slice(0, 8)}`;
  // The batcher's pool is the database's own role, as the log's is; the superuser only watches and kills.
  pool = new pg.Pool({ connectionString: await createDatabase(cluster, name), max: 4 });
  admin = new pg.Pool({ connectionString: adminUrl(cluster, name), max: 2 });
  // A connection terminated while idle reports an error on the pool: expected here.
  pool.on('error', () => {});
  admin.on('error', () => {});
  await pool.query('CREATE TABLE gc_rows (id uuid PRIMARY KEY, status text NOT NULL)');
});

afterAll(async () => {
  await Promise.allSettled([pool?.end(), admin?.end()]);
});

async function insertRows(count: number, status: string): Promise<string[]> {
  const ids = Array.from({ length: count }, () => randomUUID());
  await pool.query('INSERT INTO gc_rows (id, status) SELECT unnest($1::uuid[]), $2', [ids, status]);
  return ids;
}

async function statusOf(ids: string[]): Promise<string[]> {
  const r = await admin.query<{ id: string; status: string }>('SELECT id::text, status FROM gc_rows WHERE id = ANY($1::uuid[])', [ids]);
  const byId = new Map(r.rows.map((row) => [row.id, row.status]));
  return ids.map((id) => byId.get(id)!);
}

describe('group commit on Postgres', () => {
  it('gives each of many concurrent callers its own compare-and-set result from shared statements', async () => {
    const ids = await insertRows(300, 'open');
    const sizes: number[] = [];
    const batcher = new GroupCommit({ name: 'cas', write: casWriter(pool, sizes), maxBatch: 64, maxQueued: 1000 });
    // Every third caller expects a state its row is not in: its write must fail, and only its own.
    const stale = (i: number) => i % 3 === 0;
    const moves = ids.map((id, i) => ({ id, from: stale(i) ? 'pending' : 'open', to: 'closed' }));
    const outcomes = await Promise.allSettled(moves.map((m) => batcher.submit(m)));
    outcomes.forEach((o, i) => {
      if (stale(i)) {
        expect(o.status).toBe('rejected');
        const err = (o as PromiseRejectedResult).reason as StaleStateError;
        expect(err).toBeInstanceOf(StaleStateError);
        expect(err.transactionId).toBe(ids[i]);
      } else {
        expect(o).toEqual({ status: 'fulfilled', value: 'closed' });
      }
    });
    expect(await statusOf(ids)).toEqual(ids.map((_, i) => (stale(i) ? 'open' : 'closed')));
    // The first went alone at once; the rest shared bounded statements.
    expect(sizes).toEqual([1, 64, 64, 64, 64, 43]);
    await batcher.close();
  });

  it('serves independent drivers, each waiting for its own writes, in batches that follow the load', async () => {
    const drivers = 40;
    const ids = await insertRows(drivers, 's0');
    const sizes: number[] = [];
    const batcher = new GroupCommit({ name: 'cas', write: casWriter(pool, sizes), maxBatch: 16, maxQueued: 1000 });
    // Each driver moves its row s0 → s1 → … → s5, and once tries a stale move that must fail alone.
    const results = await Promise.all(
      ids.map(async (id, d) => {
        const seen: string[] = [];
        for (let step = 1; step <= 5; step++) {
          if (step === 1 + (d % 5)) {
            const err = await batcher.submit({ id, from: `s${step + 1}`, to: 'wrong' }).catch((e: unknown) => e);
            seen.push(err instanceof StaleStateError ? 'stale' : `unexpected ${String(err)}`);
          }
          seen.push(await batcher.submit({ id, from: `s${step - 1}`, to: `s${step}` }));
        }
        return seen;
      }),
    );
    for (const [d, seen] of results.entries()) {
      const expected = ['s1', 's2', 's3', 's4', 's5'];
      expected.splice(d % 5, 0, 'stale');
      expect(seen).toEqual(expected);
    }
    expect(await statusOf(ids)).toEqual(ids.map(() => 's5'));
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(drivers * 6);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(16);
    expect(sizes.length).toBeLessThan(drivers * 6);
    console.log(`group commit, ${drivers} drivers × 6 writes: ${sizes.length} statements, mean batch ${((drivers * 6) / sizes.length).toFixed(1)}`);
    await batcher.close();
  });

  it('fails exactly the callers of a batch whose connection is killed mid-statement', async () => {
    const ids = await insertRows(5, 'open');
    const [a, b, c, d, e] = ids as [string, string, string, string, string];
    const sizes: number[] = [];
    const batcher = new GroupCommit({ name: 'cas', write: casWriter(pool, sizes), maxBatch: 16, maxQueued: 100 });
    const move = (id: string) =>
      batcher.submit({ id, from: 'open', to: 'closed' }).then(
        (v) => ({ v }),
        (err: unknown) => ({ err }),
      );
    // A lock held open keeps each batch's statement waiting, so it is surely in flight when killed.
    const holder = await admin.connect();
    const blocked = async (other: number | null) => {
      const rows = await eventually(
        () =>
          admin
            .query<{ pid: number }>(
              `SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' AND query LIKE '%UPDATE gc_rows%' AND pid IS DISTINCT FROM $2`,
              [name, other],
            )
            .then((r) => r.rows),
        (r) => r.length === 1,
        'a batch waiting on the held lock',
      );
      return rows[0]!.pid;
    };
    try {
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE gc_rows IN EXCLUSIVE MODE');
      const first = move(a);
      const firstPid = await blocked(null);
      const second = [move(b), move(c)];
      await admin.query('SELECT pg_terminate_backend($1)', [firstPid]);
      const firstOutcome = await first;
      // The killed statement's only caller fails; b and c, queued behind it, now form the next batch.
      const secondPid = await blocked(firstPid);
      const third = [move(d), move(e)];
      await admin.query('SELECT pg_terminate_backend($1)', [secondPid]);
      const secondOutcomes = await Promise.all(second);
      await holder.query('COMMIT');
      const thirdOutcomes = await Promise.all(third);

      for (const outcome of [firstOutcome, ...secondOutcomes]) {
        // 57P01 admin_shutdown: the server says the connection was terminated, as an outage would.
        expect((outcome as { err: { code?: string } }).err?.code).toBe('57P01');
      }
      expect(thirdOutcomes).toEqual([{ v: 'closed' }, { v: 'closed' }]);
      expect(sizes).toEqual([1, 2, 2]);
      // Here the killed statements were rolled back; a caller could not know that, and must not assume it.
      expect(await statusOf(ids)).toEqual(['open', 'open', 'open', 'closed', 'closed']);
    } finally {
      await holder.query('ROLLBACK').catch(() => {});
      holder.release();
    }
    // The pool recovers: the next write takes a fresh connection.
    expect(await batcher.submit({ id: a, from: 'open', to: 'closed' })).toBe('closed');
    await batcher.close();
  });
});
