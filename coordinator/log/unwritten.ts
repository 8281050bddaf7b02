import { GroupCommitClosedError, GroupCommitOverloadError } from './group-commit.ts';

// Errors of getting a connection, before the statement was sent (LogDb.prepared marks them).
const neverSent = new WeakSet<object>();

/** Marks `err` as a failure to get a connection, before any statement was sent; returns it. */
export function markNeverSent(err: unknown): unknown {
  if (typeof err === 'object' && err !== null) neverSent.add(err);
  return err;
}

/**
 * Whether a failed log write certainly changed nothing. True when the server answered the
 * statement with an ERROR (it rolls back the statement's own transaction: a commit that happened
 * cannot be followed by one), when no connection could be had (refused, timed out, or accepted and
 * dropped while being set up: markNeverSent), or when the batcher refused the item before sending
 * it. False for everything else, above all a connection lost after the statement was sent, or a
 * FATAL that ended the session (an administrator's shutdown can come after the commit record):
 * those writes may have happened.
 */
export function certainlyUnwritten(err: unknown): boolean {
  if (err instanceof GroupCommitOverloadError || err instanceof GroupCommitClosedError) return true;
  if (typeof err !== 'object' || err === null) return false;
  return neverSent.has(err) || (err as { severity?: unknown }).severity === 'ERROR';
}
