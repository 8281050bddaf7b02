import { describe, expect, inject, it } from 'vitest';
import { migrateLog, openLogDatabase } from '../coordinator/log/log-database.ts';
import { RecoveryStore } from '../coordinator/log/recovery-store.ts';
import { TransactionsStore } from '../coordinator/log/transactions-store.ts';
import { beginRecord, insertEarlierSchemaRow } from './harness/begin-record.ts';
import { query } from './harness/waits.ts';
import { createDatabase } from './harness/world.ts';

/*
 * A failed phase-2 attempt records the branches it did finish, so that the next attempt sends them
 * nothing: in an outage of one participant, every retry otherwise re-sent the others a COMMIT
 * PREPARED that found no gid, and looked up its xid.
 */
describe('a failed phase-2 attempt', () => {
  it('records the branches it finished, on lean rows and earlier ones, and never rewrites a final status', async () => {
    const url = await createDatabase(inject('clusterA'), `fa_${Math.random().toString(36).slice(2, 8)}`);
    await migrateLog(url);
    const db = openLogDatabase({ url, maxConnections: 2 });
    const store = new TransactionsStore(db);
    const recovery = new RecoveryStore(db);
    try {
      const record = beginRecord('fa', ['bank_a', 'bank_b', 'bank_c'], { driver: 'a' });
      const { id } = record;
      await store.begin(record);
      await store.transition({
        id,
        from: 'active',
        to: 'committing',
        forced: true,
        driver: 'a',
        event: { kind: 'decided' },
        branches: [0, 1, 2].map((index) => ({ index, status: 'prepared' as const, xid: String(100 + index) })),
      });
      const statuses = async (tx: string) => (await store.load(tx))!.branches.map((b) => b.status);
      const error = { resource: 'bank_c', statement: null, code: 'connection_failure', message: 'down' };

      expect(await recovery.recordFailedAttempt(id, error, 5)).toBe(false);
      expect(await statuses(id)).toEqual(['prepared', 'prepared', 'prepared']);
      await recovery.recordFailedAttempt(id, error, 5, [
        { index: 0, status: 'committed' },
        { index: 1, status: 'committed' },
      ]);
      expect(await statuses(id)).toEqual(['committed', 'committed', 'prepared']);
      // A final status is a fact: a later (confused) report cannot turn it.
      await recovery.recordFailedAttempt(id, error, 5, [{ index: 0, status: 'aborted' }]);
      const tx = (await store.load(id))!;
      expect(tx.branches.map((b) => [b.status, b.xid])).toEqual([
        ['committed', '100'],
        ['committed', '101'],
        ['prepared', '102'],
      ]);
      expect(tx.attempts).toBe(3);
      expect(tx.lastError).toEqual(error);

      const earlier = await insertEarlierSchemaRow({ query: (text, values) => query(url, text, values) }, 'fa', 'bank_c');
      await recovery.recordFailedAttempt(earlier, error, 5, [{ index: 0, status: 'committed' }]);
      expect(await statuses(earlier)).toEqual(['committed']);
      expect((await store.load(earlier))!.attempts).toBe(1);
    } finally {
      await db.close();
    }
  });
});
