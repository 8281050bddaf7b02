import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { migrateLog, openLogDatabase } from '../coordinator/log/log-database.ts';
import { RecoveryStore } from '../coordinator/log/recovery-store.ts';
import { TransactionsStore } from '../coordinator/log/transactions-store.ts';
import { beginRecord, insertEarlierSchemaRow } from './harness/begin-record.ts';
import { createDatabase } from './harness/world.ts';

/*
 * The reads every completion job and every interactive commit makes (the lease, the transaction,
 * who owns it) are named prepared statements: planning the transaction's read cost the log four
 * times what running it did, once per job, and the drain of a backlog is thousands of jobs.
 */
/** A fresh log database, migrated, with its stores. */
async function freshLog(prefix: string, maxConnections: number) {
  const url = await createDatabase(inject('clusterA'), `${prefix}_${Math.random().toString(36).slice(2, 8)}`);
  await migrateLog(url);
  const db = openLogDatabase({ url, maxConnections });
  const store = new TransactionsStore(db);
  return { url, db, store, recovery: new RecoveryStore(db) };
}

describe('the log reads of recovery and of interactive commits', () => {
  it('are prepared once per connection, and answer as before', async () => {
    // One connection per pool: the statements listed below are those of the session that ran them.
    const { db, store, recovery } = await freshLog('pr', 1);
    try {
      const record = beginRecord('pr', ['bank_a', 'bank_b'], { submittedBy: 'svc', driver: 'a' });
      const { id } = record;
      await store.begin(record);
      for (let i = 0; i < 3; i++) {
        const loaded = await store.load(id);
        expect(loaded).toMatchObject({ id, namespace: 'pr', status: 'active', submittedBy: 'svc', driver: 'a' });
        expect(loaded!.branches.map((b) => [b.index, b.resource, b.gid, b.status])).toEqual([
          [0, 'bank_a', `tpc:pr:${id}:0`, 'active'],
          [1, 'bank_b', `tpc:pr:${id}:1`, 'active'],
        ]);
        expect(loaded!.events.map((e) => e.kind)).toEqual(['begun']);
        // The lease: taken by its driver again, refused to another while it runs.
        expect((await recovery.acquire(id, 'a', 30_000))?.id).toBe(id);
        expect(await recovery.acquire(id, 'b', 30_000)).toBeNull();
        expect(await store.accessOf(id)).toEqual({ resources: ['bank_a', 'bank_b'], owner: 'svc' });
      }
      expect(await store.load(randomUUID())).toBeNull();
      expect(await store.accessOf(randomUUID())).toBeNull();

      const named = async (mode: 'forced' | 'relaxed') =>
        (await db.prepared<{ name: string }>(mode, `list_${mode}`, { sql: 'SELECT name FROM pg_prepared_statements ORDER BY name', parameters: [] })).rows.map(
          (r) => r.name,
        );
      expect(await named('forced')).toEqual(expect.arrayContaining(['tpc_load']));
      expect(await named('relaxed')).toEqual(expect.arrayContaining(['tpc_lease_batch', 'tpc_access']));
    } finally {
      await db.close();
    }
  });

  it('lists the transactions waiting on a resource: decided, unfinished, unleased, lean rows and earlier ones, in pages', async () => {
    const { url, db, store, recovery } = await freshLog('wo', 2);
    const oracle = new pg.Client({ connectionString: url });
    await oracle.connect();
    try {
      const begin = async (resources: string[], to: 'active' | 'committing' | 'committed', leased = false) => {
        const record = beginRecord('wo', resources, { driver: 'a' });
        const { id } = record;
        await store.begin(record);
        if (to !== 'active') await store.transition({ id, from: 'active', to: 'committing', forced: true, driver: 'a', event: { kind: 'decided' } });
        if (to === 'committed') await store.transition({ id, from: 'committing', to: 'committed', forced: false, driver: 'a', event: { kind: 'completed' } });
        if (!leased) await recovery.release(id, 'a');
        return id;
      };
      const waiting = [
        ...(await Promise.all(Array.from({ length: 5 }, () => begin(['bank_a', 'flaky'], 'committing')))),
        // A row of the schema before the lean log: its branches are rows of tpc_branches.
        await insertEarlierSchemaRow(oracle, 'wo', 'flaky'),
      ].sort();
      await begin(['bank_a', 'other'], 'committing');
      await begin(['flaky'], 'committing', true);
      await begin(['flaky'], 'committed');
      await begin(['flaky'], 'active');
      const seen: string[] = [];
      let after: string | null = null;
      for (;;) {
        const page = await recovery.waitingOn('wo', 'flaky', after, 4);
        seen.push(...page);
        if (page.length < 4) break;
        after = page[page.length - 1]!;
      }
      expect(seen).toEqual(waiting);
      expect(await recovery.waitingOn('other-namespace', 'flaky', null, 10)).toEqual([]);
    } finally {
      await oracle.end();
      await db.close();
    }
  });
});
