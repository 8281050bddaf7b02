import type { Kysely } from 'kysely';
import type pg from 'pg';
import { ParticipantError } from './errors.ts';
import { batchWrites } from './batched-writes.ts';
import { gidLiteral } from './gid.ts';
import { pinnedKysely } from './pinned-kysely.ts';
import { settleSession } from './session-reset.ts';

export interface PrepareBranchOptions {
  /**
   * Server-side bound on each statement, in milliseconds: pass the time left until the global
   * transaction's deadline, so that a statement stuck on a lock cannot outlive the transaction.
   */
  timeoutMs: number;
}

/** BEGIN with its statement bound, as one simple query: one round trip, not two. */
export function beginStatement(timeoutMs: number): string {
  // Whole milliseconds, at least 1: statement_timeout = 0 would mean no bound at all.
  return `BEGIN; SET LOCAL statement_timeout = ${Math.max(1, Math.ceil(timeoutMs))}`;
}

/**
 * Ends the open transaction on `client` with `ending` (COMMIT, ROLLBACK or PREPARE TRANSACTION) and
 * resets the session in the same flight, so the reset costs no round trip. Statements can leave
 * state on the session that outlives the transaction (set_config(…, false), advisory locks,
 * temporary tables): `sessionReset` false means the connection must be destroyed, not pooled. The
 * pool's own named statements survive the reset, verified (session-reset.ts). `touched` false: the
 * caller knows that nothing the transaction ran can have left state on the session, and the reset
 * is not sent (the session is only checked idle).
 */
export async function endTransaction(client: pg.ClientBase, ending: string, touched = true): Promise<{ command: string; sessionReset: boolean }> {
  // pg queues queries in order: the reset runs right after the ending, whether or not it failed,
  // and on a pipelined connection leaves in the same write.
  batchWrites(client);
  const end = client.query(ending);
  const reset = settleSession(client, end, touched);
  const r = await end.finally(() => reset);
  return { command: r.command, sessionReset: await reset };
}

/**
 * Prepares the open transaction on `client` under `gid` (checked against the strict pattern before
 * it reaches SQL). Returns false when the server rolled back instead: the transaction had already
 * failed, for instance on an error that the caller's code caught and went on from.
 */
export async function prepareTransaction(client: pg.ClientBase, gid: string, touched = true): Promise<{ prepared: boolean; sessionReset: boolean }> {
  const { command, sessionReset } = await endTransaction(client, `PREPARE TRANSACTION ${gidLiteral(gid)}`, touched);
  return { prepared: command === 'PREPARE', sessionReset };
}

/**
 * The other service's side of a joined branch: runs `fn` inside a transaction on its own database
 * and leaves it prepared under `gid` (given by the coordinator, e.g. from the SDK's `tx.join()`),
 * for the coordinator to commit or roll back by its decision. A thrown error rolls back and is
 * rethrown; nothing is prepared then, and the coordinator's commit check refuses the transaction.
 *
 * ```ts
 * const { gid, deadline } = joinedBranchFromTheCaller;
 * await prepareBranch<StockDB, void>(stockPool, gid, async (db) => {
 *   await db.updateTable('items').set({ reserved: true }).where('sku', '=', sku).execute();
 * }, { timeoutMs: Date.parse(deadline) - Date.now() });
 * ```
 *
 * @returns what `fn` returned, once the branch is prepared.
 */
export async function prepareBranch<DB, T>(pool: pg.Pool, gid: string, fn: (db: Kysely<DB>) => Promise<T>, options: PrepareBranchOptions): Promise<T> {
  gidLiteral(gid); // a bad gid fails before any work is done
  if (!(options.timeoutMs > 0)) {
    throw new ParticipantError('deadline_exceeded', `no time left to prepare the branch ${gid}`, { retryable: false });
  }
  const client = await pool.connect();
  // A checked-out connection whose socket dies emits 'error'; with no listener the process would crash.
  const onError = () => {};
  client.on('error', onError);
  let reusable = false;
  try {
    await client.query(beginStatement(options.timeoutMs));
    let result: T;
    try {
      result = await fn(pinnedKysely<DB>(client));
    } catch (err) {
      reusable = await endTransaction(client, 'ROLLBACK').then(
        (r) => r.sessionReset,
        () => false,
      );
      throw err;
    }
    const { prepared, sessionReset } = await prepareTransaction(client, gid);
    reusable = sessionReset;
    if (!prepared) {
      throw new ParticipantError('not_prepared', `the transaction for ${gid} had failed, so the server rolled it back instead of preparing it`, {
        retryable: false,
      });
    }
    return result;
  } finally {
    client.off('error', onError);
    client.release(reusable ? undefined : true);
  }
}
