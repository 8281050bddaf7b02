import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { complete } from '../coordinator/engine/state-changes.ts';
import { BRANCH_STATUSES, TX_STATUSES, TX_TRANSITIONS, canTransition } from '../coordinator/engine/states.ts';
import { StaleStateError } from '../coordinator/errors.ts';
import { migrateLog, openLogDatabase } from '../coordinator/log/log-database.ts';
import { TransactionsStore } from '../coordinator/log/transactions-store.ts';
import { createDatabase } from './harness/world.ts';

async function freshLog(name: string): Promise<string> {
  return createDatabase(inject('clusterA'), `${name}_${Math.random().toString(36).slice(2, 8)}`);
}

/** A migrated log database of its own for `fn`, with its store; closed afterwards. */
async function withStore(name: string, fn: (store: TransactionsStore, url: string) => Promise<void>): Promise<void> {
  const url = await freshLog(name);
  await migrateLog(url);
  const db = openLogDatabase({ url });
  try {
    await fn(new TransactionsStore(db), url);
  } finally {
    await db.close();
  }
}

async function enumValues(url: string, type: string): Promise<string[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const r = await c.query<{ v: string }>(`SELECT unnest(enum_range(NULL::${type}))::text AS v`);
    return r.rows.map((x) => x.v);
  } finally {
    await c.end();
  }
}

describe('the log schema', () => {
  it('applies once when several coordinators migrate at the same time', async () => {
    const url = await freshLog('mig');
    const results = await Promise.all([migrateLog(url), migrateLog(url), migrateLog(url)]);
    expect(results.flat()).toEqual(['0001_log_schema', '0002_recovery', '0003_operator_audit', '0004_branch_joins', '0005_lean_log', '0006_hot_decisions']); // exactly one of them applied it
    expect(await migrateLog(url)).toEqual([]);
  });

  it('has Postgres enums that agree with the TypeScript unions and the transition table', async () => {
    const url = await freshLog('enums');
    await migrateLog(url);
    expect(await enumValues(url, 'tpc_tx_status')).toEqual([...TX_STATUSES]);
    expect(await enumValues(url, 'tpc_branch_status')).toEqual([...BRANCH_STATUSES]);
    expect(Object.keys(TX_TRANSITIONS).sort()).toEqual([...TX_STATUSES].sort());
    for (const targets of Object.values(TX_TRANSITIONS)) for (const t of targets) expect(TX_STATUSES).toContain(t);
    // A written decision never changes.
    expect(canTransition('committing', 'aborted')).toBe(false);
    expect(canTransition('aborting', 'committed')).toBe(false);
    expect(canTransition('committed', 'aborted')).toBe(false);
  });

  it('refuses a state change whose expected state is stale, and keeps events append-only', async () => {
    await withStore('cas', async (store, url) => {
      const id = '00000000-0000-4000-8000-000000000001';
      await store.begin({
        id,
        namespace: 'n',
        deadline: new Date(Date.now() + 1000),
        submittedBy: 'me',
        driver: 'me',
        branches: [{ index: 0, resource: 'r', gid: 'tpc:n:x:0' }],
        timeoutMs: 1000,
      });
      // Fencing: a driver without the lease cannot move the transaction.
      await expect(
        store.transition({ id, driver: 'someone-else', from: 'active', to: 'committing', forced: true, event: { kind: 'decided' } }),
      ).rejects.toBeInstanceOf(StaleStateError);
      await store.transition({ id, driver: 'me', from: 'active', to: 'committing', forced: true, event: { kind: 'decided' } });
      // A second driver that still believes the transaction active loses the compare-and-set.
      await expect(store.transition({ id, driver: 'me', from: 'active', to: 'aborting', forced: false, event: { kind: 'decided' } })).rejects.toBeInstanceOf(
        StaleStateError,
      );
      // The transition table is the engine's: a change against the decision is refused before it reaches the log.
      await expect(complete({ store, instanceId: 'me' }, id, { from: 'committing', outcome: 'aborted' }, { by: 'recovery' })).rejects.toThrow(
        /illegal transition/,
      );
      const tx = await store.load(id);
      expect(tx?.status).toBe('committing');
      expect(tx?.events.map((e) => e.kind)).toEqual(['begun', 'decided']);
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      await expect(c.query("UPDATE tpc_events SET kind = 'forged'")).rejects.toThrow(/append-only/);
      await c.end();
    });
  });

  it('makes a decision that did not see a joined branch fail its compare-and-set', async () => {
    await withStore('join', async (store) => {
      const id = '00000000-0000-4000-8000-000000000002';
      await store.begin({
        id,
        namespace: 'n',
        deadline: new Date(Date.now() + 10_000),
        submittedBy: 'me',
        driver: 'me',
        branches: [{ index: 0, resource: 'r', gid: `tpc:n:${id}:0` }],
        timeoutMs: 10_000,
        interactive: true,
      });
      expect(await store.joinBranch({ id, resource: 's', gidPrefix: `tpc:n:${id}:`, actor: 'me' })).toMatchObject({
        index: 1,
        gid: `tpc:n:${id}:1`,
        created: true,
      });
      expect(await store.joinBranch({ id, resource: 's', gidPrefix: `tpc:n:${id}:`, actor: 'me' })).toMatchObject({ index: 1, created: false });
      // A commit that checked one branch, while there are two now, must not be written.
      await expect(
        store.transition({ id, driver: 'me', from: 'active', to: 'committing', forced: true, branchesChecked: 1, event: { kind: 'decided' } }),
      ).rejects.toBeInstanceOf(StaleStateError);
      await store.transition({ id, driver: 'me', from: 'active', to: 'committing', forced: true, branchesChecked: 2, event: { kind: 'decided' } });
      // Decided: nothing joins any more.
      expect(await store.joinBranch({ id, resource: 't', gidPrefix: `tpc:n:${id}:`, actor: 'me' })).toBeNull();
      expect((await store.load(id))?.branches.map((b) => b.resource)).toEqual(['r', 's']);
    });
  });
});
