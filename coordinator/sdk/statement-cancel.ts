/**
 * Whether `err` (or an error it wraps as `cause`) is SQLSTATE 57014, query_canceled. Postgres
 * raises it for a statement_timeout (the bound the SDK sets on each branch at BEGIN, or one the
 * callback set itself) and for a cancel request (the SDK's own at the deadline, or anyone's
 * `pg_cancel_backend`). The code alone does not say which: the caller weighs it against the clock.
 */
export function isStatementCanceled(err: unknown): boolean {
  // A few levels: a callback may wrap the driver's error once or twice; a cycle must not hang us.
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if ((e as { code?: unknown }).code === '57014') return true;
  }
  return false;
}
