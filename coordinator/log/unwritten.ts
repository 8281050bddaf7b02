import { GroupCommitClosedError, GroupCommitOverloadError } from './group-commit.ts';

// Network errors of a connection attempt: no statement was ever sent.
const NOT_CONNECTED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

// Errors of a connection that never carried the statement (LogDb.prepared marks them).
const neverSent = new WeakSet<object>();

/** Marks `err` as a failure to get a connection, before any statement was sent; returns it. */
export function markNeverSent(err: unknown): unknown {
  if (typeof err === 'object' && err !== null) neverSent.add(err);
  return err;
}

/**
 * Whether a failed log write certainly changed nothing. True when the server answered the
 * statement with an ERROR (it rolls back the statement's own transaction: a commit that happened
 * cannot be followed by one), when no connection was made (or one failed while being set up, before
 * the statement went out: markNeverSent), or when the batcher refused the item
 * before sending it. False for everything else, above all a connection lost after the statement
 * was sent, or a FATAL that ended the session (an administrator's shutdown can come after the
 * commit record): those writes may have happened.
 */
export function certainlyUnwritten(err: unknown): boolean {
  if (err instanceof GroupCommitOverloadError || err instanceof GroupCommitClosedError) return true;
  if (typeof err === 'object' && err !== null && neverSent.has(err)) return true;
  const e = err as { severity?: unknown; code?: unknown; syscall?: unknown; message?: unknown };
  if (e?.severity === 'ERROR') return true;
  if (e?.syscall === 'connect' || (typeof e?.code === 'string' && NOT_CONNECTED.has(e.code))) return true;
  // pg-pool's own message when no connection could be had within connectionTimeoutMillis.
  return typeof e?.message === 'string' && e.message.includes('timeout exceeded when trying to connect');
}
