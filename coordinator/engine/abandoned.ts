import { parseGid } from './gid.ts';
import type { EngineDeps } from './ports.ts';
import type { TxStatus } from './states.ts';
import { stampedDeadline } from './transaction-id.ts';

/**
 * Whether prepared branches of `id` that no log row names may be rolled back now. With a deferred
 * begin record (deferred-begin.ts) a live transaction has no row until its decision, so "unknown to
 * the log" no longer means abandoned by itself: only once the deadline its id carries has passed
 * (a driver decides before its deadline) and a tombstone is in the log. The tombstone fences off a
 * driver still alive but late: its decision, an insert, finds the row and fails, and it rolls back.
 *
 * 'rollback': the tombstone is written (or an abort was there). 'wait': the deadline has not
 * passed, or a decision won the race (the log now knows the transaction; it is driven as any).
 * 'unstamped': the id carries no deadline (an earlier revision's, or not a submitted transaction);
 * the caller's own rule applies (the orphan timeout).
 */
export async function fenceAbandoned(deps: EngineDeps, id: string, resource: string, gids: readonly string[]): Promise<'rollback' | 'wait' | 'unstamped'> {
  const deadline = stampedDeadline(id);
  if (deadline === null) return 'unstamped';
  if (Date.now() < deadline) return 'wait';
  const status: 'created' | TxStatus = await deps.recovery.abandon({
    id,
    namespace: deps.namespace,
    deadline: new Date(deadline),
    branches: gids.map((gid) => ({ index: parseGid(gid)?.index ?? 0, resource, gid })),
    reason: {
      resource: null,
      statement: null,
      code: 'deadline_exceeded',
      message: 'deadline passed before any decision reached the log (its coordinator stopped): rolled back by recovery, nothing was applied',
    },
    driver: deps.instanceId,
  });
  return status === 'created' || status === 'aborted' ? 'rollback' : 'wait';
}
