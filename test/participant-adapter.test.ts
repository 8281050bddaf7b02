import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { assertValidGid, DirectParticipant, GID_PATTERN } from '../participant-adapter/index.ts';
import { branchGid } from '../coordinator/engine/gid.ts';
import { createDatabase } from './harness/world.ts';

describe('gids', () => {
  it('accept only the strict pattern, at most 200 bytes', () => {
    expect(assertValidGid('tpc:ns:0b9c:1')).toBe('tpc:ns:0b9c:1');
    for (const bad of ["x'; DROP TABLE t; --", 'a b', '', 'é', 'x'.repeat(201), "tpc:ns:1'"]) {
      expect(() => assertValidGid(bad)).toThrow(/does not match/);
    }
    expect(GID_PATTERN.test('x'.repeat(200))).toBe(true);
    expect(branchGid('ns', '5b0c4c8e-55e4-4f63-9d44-6f0a0f1f2a3b', 3)).toBe('tpc:ns:5b0c4c8e-55e4-4f63-9d44-6f0a0f1f2a3b:3');
  });
});

describe('a participant', () => {
  it('prepares under a gid, finishes it from another session, lists it and reports its fate', async () => {
    const url = await createDatabase(inject('clusterB'), `pa_${Math.random().toString(36).slice(2, 8)}`);
    const p = new DirectParticipant({ name: 'pa', connectionString: url });
    try {
      // DDL is not a branch's work (the statement guard refuses it): set up with a plain connection.
      const setup = new pg.Client({ connectionString: url });
      await setup.connect();
      await setup.query('CREATE TABLE t (id int PRIMARY KEY)');
      await setup.end();

      const b = await p.openBranch({ statementTimeoutMs: 5000 });
      const insert = b.run('INSERT INTO t VALUES ($1)', [1]);
      const prepared = await b.prepare('tpc:pa:tx1:0');
      b.release();
      expect((await insert).rowCount).toBe(1);
      expect(prepared).toMatchObject({ prepared: true, xid: expect.stringMatching(/^\d+$/) });
      expect((await p.listPrepared('tpc:pa:')).map((x) => x.gid)).toEqual(['tpc:pa:tx1:0']);
      expect(await p.listPrepared('tpc:other:')).toEqual([]);
      expect(await p.xactStatus(prepared.xid!)).toBe('in progress');
      // The full state counts the locks it holds; a commit's check asks only for prepared and xid.
      const full = await p.inspectPrepared('tpc:pa:tx1:0');
      expect(full).toMatchObject({ xid: prepared.xid, preparedAt: expect.any(Date), locks: expect.any(Number) });
      expect(full!.locks).toBeGreaterThan(0);
      expect(await p.inspectPrepared('tpc:pa:tx1:0', { locks: false })).toEqual({ ...full, locks: null });
      expect(await p.commitPrepared('tpc:pa:tx1:0')).toBe('committed');
      expect(await p.inspectPrepared('tpc:pa:tx1:0', { locks: false })).toBeNull();
      expect(await p.commitPrepared('tpc:pa:tx1:0')).toBe('not-found'); // idempotent
      expect(await p.xactStatus(prepared.xid!)).toBe('committed');

      const r = await p.openBranch({ statementTimeoutMs: 5000 });
      await r.run('INSERT INTO t VALUES ($1)', [2]);
      const rp = await r.prepare('tpc:pa:tx2:0');
      r.release();
      expect(await p.rollbackPrepared('tpc:pa:tx2:0')).toBe('rolled-back');
      expect(await p.xactStatus(rp.xid!)).toBe('aborted');

      // A failed statement turns PREPARE into a rollback: nothing is left prepared.
      const f = await p.openBranch({ statementTimeoutMs: 5000 });
      const dup = f.run('INSERT INTO t VALUES ($1)', [1]).catch((e: { code: string }) => e.code);
      expect(await f.prepare('tpc:pa:tx3:0')).toEqual({ prepared: false, xid: null });
      expect(await dup).toBe('23505');
      f.release();
      expect(await p.listPrepared('tpc:pa:')).toEqual([]);

      // A read-only branch has no xid.
      const ro = await p.openBranch({ statementTimeoutMs: 5000 });
      await ro.run('SELECT * FROM t');
      expect(await ro.xid()).toBeNull();
      await ro.rollback();
      ro.release();
      // A cancel sent while BEGIN is still in flight waits for it: it can only ever stop a statement
      // inside the transaction, never leave the statements behind it to run in autocommit.
      const c = await p.openBranch({ statementTimeoutMs: 5000 });
      const slow = c.run('INSERT INTO t SELECT 99 FROM pg_sleep(0.3)').catch((e: { sqlState?: string }) => e.sqlState);
      await c.cancel();
      const after = await c.prepare('tpc:pa:tx4:0');
      expect(await slow).toBe('57014');
      expect(after).toEqual({ prepared: false, xid: null });
      c.release();
      const check = await p.openBranch({ statementTimeoutMs: 5000 });
      expect((await check.run('SELECT count(*)::int AS n FROM t WHERE id = 99')).rows).toEqual([{ n: 0 }]);
      await check.rollback();
      check.release();
      expect(p.connectionsInUse).toBe(0);
      expect(await p.health()).toMatchObject({ reachable: true, usable: true, maxPreparedTransactions: 64 });
    } finally {
      await p.close();
    }
  });

  it('gives back a connection that arrives after the branch was stopped, idle or waited for', async () => {
    const url = await createDatabase(inject('clusterB'), `pa_${Math.random().toString(36).slice(2, 8)}`);
    const p = new DirectParticipant({ name: 'pa', connectionString: url, maxConnections: 1 });
    try {
      const warm = await p.openBranch({ statementTimeoutMs: 5000 });
      await warm.rollback();
      warm.release();
      expect(p.connectionsInUse).toBe(0);

      // An idle connection (handed over without a listener on the signal), stopped before it arrives.
      const idle = new AbortController();
      const fromIdle = p.openBranch({ statementTimeoutMs: 5000, signal: idle.signal });
      idle.abort({ kind: 'failure' });
      await expect(fromIdle).rejects.toEqual({ kind: 'failure' });
      expect(p.connectionsInUse).toBe(0);

      // The only connection taken: the next one waits, and is given up at once when stopped.
      const holder = await p.openBranch({ statementTimeoutMs: 5000 });
      const waiting = new AbortController();
      const waited = p.openBranch({ statementTimeoutMs: 5000, signal: waiting.signal });
      waiting.abort({ kind: 'deadline' });
      await expect(waited).rejects.toEqual({ kind: 'deadline' });
      await holder.rollback();
      holder.release();
      // The connection the stopped caller would have had goes back to the pool, not to a leak.
      await new Promise((r) => setTimeout(r, 50));
      expect(p.connectionsInUse).toBe(0);
      const after = await p.openBranch({ statementTimeoutMs: 5000 });
      await after.rollback();
      after.release();
    } finally {
      await p.close();
    }
  });
});
