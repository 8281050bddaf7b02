import { randomUUID } from 'node:crypto';
import { describe, expect, inject, it } from 'vitest';
import { migrateLog, openLogDatabase } from '../coordinator/log/log-database.ts';
import { RecoveryStore } from '../coordinator/log/recovery-store.ts';
import { TransactionsStore } from '../coordinator/log/transactions-store.ts';
import { createDatabase } from './harness/world.ts';

/*
 * The reads every completion job and every interactive commit makes (the lease, the transaction,
 * who owns it) are named prepared statements: planning the transaction's read cost the log four
 * times what running it did, once per job, and the drain of a backlog is thousands of jobs.
 */
describe('the log reads of recovery and of interactive commits', () => {
  it('are prepared once per connection, and answer as before', async () => {
    const url = await createDatabase(inject('clusterA'), `pr_${Math.random().toString(36).slice(2, 8)}`);
    await migrateLog(url);
    // One connection per pool: the statements listed below are those of the session that ran them.
    const db = openLogDatabase({ url, maxConnections: 1 });
    const store = new TransactionsStore(db);
    const recovery = new RecoveryStore(db, store);
    try {
      const id = randomUUID();
      await store.begin({
        id,
        namespace: 'pr',
        deadline: new Date(Date.now() + 60_000),
        submittedBy: 'svc',
        driver: 'a',
        branches: [
          { index: 0, resource: 'bank_a', gid: `tpc:pr:${id}:0` },
          { index: 1, resource: 'bank_b', gid: `tpc:pr:${id}:1` },
        ],
        timeoutMs: 60_000,
      });
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
      expect(await named('relaxed')).toEqual(expect.arrayContaining(['tpc_acquire', 'tpc_access']));
    } finally {
      await db.close();
    }
  });
});
