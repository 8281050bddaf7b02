import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { migrateLog, openLogDatabase } from '../coordinator/log/log-database.ts';
import { RecoveryStore } from '../coordinator/log/recovery-store.ts';
import { TransactionsStore } from '../coordinator/log/transactions-store.ts';
import { beginRecord, insertEarlierSchemaRow } from './harness/begin-record.ts';
import { createDatabase } from './harness/world.ts';

/*
 * Leases taken side by side share one statement that also reads each leased transaction
 * (coordinator/log/lease-writer.ts): what a backlog's drain does with thousands of jobs. Each caller
 * must still get its own answer, exactly as its own statement would have given it.
 */
async function freshLog() {
  const url = await createDatabase(inject('clusterA'), `lease_${Math.random().toString(36).slice(2, 8)}`);
  await migrateLog(url);
  const sizes: number[] = [];
  const db = openLogDatabase({ url, maxConnections: 2 });
  const store = new TransactionsStore(db);
  const recovery = new RecoveryStore(db, { flushed: (name, size) => name === 'lease' && sizes.push(size), refused: () => {} });
  return { url, db, store, recovery, sizes };
}

describe('batched leases', () => {
  it('give each caller its own transaction or null, in one statement per batch', async () => {
    const { url, db, store, recovery, sizes } = await freshLog();
    const oracle = new pg.Client({ connectionString: url });
    await oracle.connect();
    try {
      const begin = async (to: 'active' | 'committing' | 'committed', driver: string | null) => {
        const record = beginRecord('ls', ['bank_a', 'bank_b'], { driver: 'a' });
        await store.begin(record);
        const { id } = record;
        if (to !== 'active') await store.transition({ id, from: 'active', to: 'committing', forced: true, driver: 'a', event: { kind: 'decided' } });
        if (to === 'committed') await store.transition({ id, from: 'committing', to: 'committed', forced: false, driver: 'a', event: { kind: 'completed' } });
        if (driver === null) await recovery.release(id, 'a');
        else if (driver !== 'a')
          await oracle.query(`UPDATE tpc_transactions SET driver = $2, lease_until = now() + interval '1 minute' WHERE id = $1`, [id, driver]);
        return id;
      };
      const free = await Promise.all(Array.from({ length: 20 }, () => begin('committing', null)));
      const mine = await begin('committing', 'me');
      const held = await begin('committing', 'other');
      const undecidedHeld = await begin('active', 'other');
      const finished = await begin('committed', null);
      const expired = await begin('committing', 'other');
      await oracle.query(`UPDATE tpc_transactions SET lease_until = now() - interval '1 second' WHERE id = $1`, [expired]);
      // A row of the schema before the lean log: its branches are rows of tpc_branches.
      const earlier = await insertEarlierSchemaRow(oracle, 'ls', 'bank_c');

      sizes.length = 0;
      const asks = [
        ...free.map((id) => ({ id, takeOver: false, expect: 'leased' })),
        { id: mine, takeOver: false, expect: 'leased' },
        { id: held, takeOver: false, expect: 'null' },
        { id: held, takeOver: true, expect: 'null' }, // decided: an operator cannot take it from a live driver either
        { id: undecidedHeld, takeOver: true, expect: 'leased' },
        { id: finished, takeOver: false, expect: 'null' },
        { id: expired, takeOver: false, expect: 'leased' },
        { id: earlier, takeOver: false, expect: 'leased' },
        { id: randomUUID(), takeOver: false, expect: 'null' },
        // Not a uuid: refused alone, without failing the batch it would have joined.
        { id: 'not-a-uuid', takeOver: false, expect: 'null' },
      ];
      const started = Date.now();
      const answers = await Promise.all(asks.map((a) => recovery.acquire(a.id, 'me', 30_000, { takeOverUndecided: a.takeOver })));
      expect(answers.map((t) => (t ? 'leased' : 'null'))).toEqual(asks.map((a) => a.expect));
      for (const [i, tx] of answers.entries()) {
        if (!tx) continue;
        expect(tx.id).toBe(asks[i]!.id);
        // The row as the lease left it: this driver, a lease running about 30 s from now.
        expect(tx.driver).toBe('me');
        expect(tx.leaseUntil!.getTime()).toBeGreaterThan(started + 20_000);
      }
      const first = answers[0]!;
      expect(first.status).toBe('committing');
      expect(first.branches.map((b) => [b.index, b.resource, b.status])).toEqual([
        [0, 'bank_a', 'active'],
        [1, 'bank_b', 'active'],
      ]);
      // A lean row's happy path is derived from its timestamps.
      expect(first.events.map((e) => e.kind)).toEqual(['begun', 'decided']);
      const old = answers[asks.findIndex((a) => a.id === earlier)]!;
      expect(old.branches.map((b) => [b.resource, b.gid, b.status])).toEqual([['bank_c', `tpc:ls:${earlier}:0`, 'prepared']]);
      // Everything asked at once (the bad id aside) was written in a few statements, not one each.
      expect(sizes.reduce((a, b) => a + b, 0)).toBe(asks.length - 1);
      expect(sizes.length).toBeLessThan(asks.length / 4);

      // In the log: the leased rows are this driver's, the others untouched.
      const drivers = new Map(
        (await oracle.query<{ id: string; driver: string | null }>(`SELECT id, driver FROM tpc_transactions`)).rows.map((r) => [r.id, r.driver]),
      );
      for (const id of [...free, mine, expired, earlier, undecidedHeld]) expect(drivers.get(id)).toBe('me');
      expect(drivers.get(held)).toBe('other');
      expect(drivers.get(finished)).toBeNull();
    } finally {
      await oracle.end();
      await db.close();
    }
  });

  it('lease one transaction asked twice in one batch once', async () => {
    const { db, store, recovery, sizes } = await freshLog();
    try {
      const record = beginRecord('ls', ['bank_a'], { driver: 'a' });
      await store.begin(record);
      await recovery.release(record.id, 'a');
      sizes.length = 0;
      // A blocker in flight first, so that the two asks queue into one batch behind it.
      const answers = await Promise.all([
        recovery.acquire(randomUUID(), 'x', 30_000),
        recovery.acquire(record.id, 'x', 30_000),
        recovery.acquire(record.id, 'y', 30_000),
      ]);
      expect(sizes).toEqual([1, 2]);
      expect(answers[0]).toBeNull();
      expect(answers[1]?.driver).toBe('x');
      expect(answers[2]).toBeNull();
    } finally {
      await db.close();
    }
  });

  it('refuses leases after close, and takes those queued before it', async () => {
    const { db, store, recovery } = await freshLog();
    try {
      const record = beginRecord('ls', ['bank_a'], { driver: 'a' });
      await store.begin(record);
      await recovery.release(record.id, 'a');
      const queued = [recovery.acquire(randomUUID(), 'x', 30_000), recovery.acquire(record.id, 'x', 30_000)];
      const closed = recovery.close();
      await expect(recovery.acquire(record.id, 'x', 30_000)).rejects.toThrow(/closed/);
      await closed;
      expect((await queued[1])?.driver).toBe('x');
      expect(await queued[0]).toBeNull();
    } finally {
      await db.close();
    }
  });
});
