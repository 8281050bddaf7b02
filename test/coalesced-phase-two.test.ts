import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { CoalescedQueries } from '../participant-adapter/coalesced-queries.ts';
import { DirectParticipant } from '../participant-adapter/index.ts';
import { createDatabase } from './harness/world.ts';

async function setUp(prefix: string): Promise<{ url: string; admin: pg.Client }> {
  const url = await createDatabase(inject('clusterB'), `${prefix}_${Math.random().toString(36).slice(2, 8)}`);
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query('CREATE TABLE t (id int PRIMARY KEY)');
  return { url, admin };
}

async function prepareRows(p: DirectParticipant, ids: number[], gid: (id: number) => string): Promise<void> {
  await Promise.all(
    ids.map(async (id) => {
      const b = await p.openBranch({ statementTimeoutMs: 5000 });
      try {
        const insert = b.run('INSERT INTO t VALUES ($1)', [id]);
        expect(await b.prepare(gid(id))).toMatchObject({ prepared: true });
        await insert;
      } finally {
        b.release();
      }
    }),
  );
}

describe('phase 2 issued together', () => {
  it('shares connections and writes, and answers each caller its own outcome', async () => {
    const { url, admin } = await setUp('cq');
    const p = new DirectParticipant({ name: 'cq', connectionString: url, maxConnections: 20 });
    try {
      const ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
      const gid = (id: number) => `tpc:cq:tx${id}:0`;
      await prepareRows(p, ids, gid);
      const backendsBefore = Number((await admin.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tpc-coordinator'")).rows[0].count);

      // In one turn: commits, rollbacks, a gid never prepared and one already finished between
      // them. An error in the middle of a shared connection reaches its caller only.
      const outcomes = await Promise.all([
        ...ids.slice(0, 6).map((id) => p.commitPrepared(gid(id))),
        p.commitPrepared('tpc:cq:never:0'),
        ...ids.slice(6).map((id) => p.rollbackPrepared(gid(id))),
        p.rollbackPrepared('tpc:cq:never:1'),
      ]);
      expect(outcomes).toEqual([
        'committed',
        'committed',
        'committed',
        'committed',
        'committed',
        'committed',
        'not-found',
        'rolled-back',
        'rolled-back',
        'rolled-back',
        'rolled-back',
        'not-found',
      ]);
      expect((await admin.query('SELECT id FROM t ORDER BY id')).rows.map((r) => r.id)).toEqual([1, 2, 3, 4, 5, 6]);
      expect(await p.listPrepared('tpc:cq:')).toEqual([]);
      // Twelve commands at four per connection took three of the connections the branches had opened: none was opened for them.
      const backendsAfter = Number((await admin.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tpc-coordinator'")).rows[0].count);
      expect(backendsAfter).toBe(backendsBefore);
      expect(p.connectionsInUse).toBe(0);
      // Idempotent as before: a second commit of the same gid is "not-found".
      expect(await Promise.all([p.commitPrepared(gid(1)), p.commitPrepared(gid(2))])).toEqual(['not-found', 'not-found']);
    } finally {
      await p.close();
      await admin.end();
    }
  });

  it('sends the commands of one turn in one write on one connection', async () => {
    const { url, admin } = await setUp('cqw');
    const pool = new pg.Pool({ connectionString: url, max: 4, pipeline: true } as pg.PoolConfig);
    const writes: number[] = [];
    const seen = new Set<pg.PoolClient>();
    const connect = async () => {
      const c = await pool.connect();
      seen.add(c);
      const stream = (c as unknown as { connection: { stream: { _writev?: unknown; _write: unknown } } }).connection.stream as unknown as {
        _write: (chunk: Buffer, enc: string, cb: () => void) => void;
        _writev: (chunks: unknown[], cb: () => void) => void;
      };
      if (!(stream as { counted?: boolean }).counted) {
        (stream as { counted?: boolean }).counted = true;
        const w = stream._write.bind(stream);
        const wv = stream._writev.bind(stream);
        stream._write = (chunk, enc, cb) => {
          writes.push(1);
          w(chunk, enc, cb);
        };
        stream._writev = (chunks, cb) => {
          writes.push(chunks.length);
          wv(chunks, cb);
        };
      }
      return c;
    };
    const q = new CoalescedQueries({ connect, timeoutMs: 5000, perConnection: 8 });
    try {
      await admin.query('INSERT INTO t VALUES (1), (2), (3)');
      writes.length = 0;
      const answers = await Promise.allSettled([
        q.query('SELECT 1 AS one'),
        q.query('SELECT * FROM no_such_table'),
        q.query('SELECT count(*)::int AS n FROM t'),
      ]);
      expect(answers[0]).toMatchObject({ status: 'fulfilled', value: { rows: [{ one: 1 }] } });
      expect(answers[1]).toMatchObject({ status: 'rejected', reason: { code: '42P01' } });
      expect(answers[2]).toMatchObject({ status: 'fulfilled', value: { rows: [{ n: 3 }] } });
      expect(seen.size).toBe(1);
      expect(writes).toEqual([3]);
      expect(pool.totalCount - pool.idleCount).toBe(0);
    } finally {
      await pool.end();
      await admin.end();
    }
  });

  it('fails every caller of a connection that is lost, and does not pool it again', async () => {
    const { url, admin } = await setUp('cql');
    const pool = new pg.Pool({ connectionString: url, max: 2, pipeline: true } as pg.PoolConfig);
    pool.on('error', () => {});
    const q = new CoalescedQueries({ connect: () => pool.connect(), timeoutMs: 5000 });
    try {
      const pids = q.query('SELECT pg_backend_pid() AS pid');
      // The server ends the connection while the next command waits behind a sleep on it.
      const lost = Promise.allSettled([q.query('SELECT pg_sleep(5)'), q.query('SELECT 2 AS two')]);
      const { pid } = (await pids).rows[0] as { pid: number };
      await admin.query('SELECT pg_terminate_backend($1)', [pid]);
      const settled = await lost;
      expect(settled.map((s) => s.status)).toEqual(['rejected', 'rejected']);
      // The sleep is ended by the termination (57P01); the one behind it never got an answer.
      expect((settled[0] as PromiseRejectedResult).reason.code).toBe('57P01');
      expect((settled[1] as PromiseRejectedResult).reason).toBeInstanceOf(Error);
      // The broken connection was destroyed: the next command gets a fresh, working one.
      const after = (await q.query('SELECT pg_backend_pid() AS pid')).rows[0] as { pid: number };
      expect(after.pid).not.toBe(pid);
    } finally {
      await pool.end();
      await admin.end();
    }
  });
});
