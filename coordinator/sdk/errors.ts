import type { Outcome } from './client.ts';

/**
 * Why a global transaction did not commit:
 * - `deadline_exceeded`: the attempt ran past `timeoutMs` (the callback, a statement waiting on a
 *   lock, or the commit arrived late at the coordinator);
 * - `begin_failed` / `join_failed`: the coordinator did not begin the transaction or add a branch
 *   (unreachable, unknown resource, the token may not use it);
 * - `prepare_failed`: a local branch could not be prepared;
 * - `commit_refused`: the coordinator decided abort, e.g. a joined branch was not prepared by the
 *   other service;
 * - `outcome_unknown`: the coordinator could not be reached after the commit was asked for; the
 *   outcome is in its log (`GET /v1/transactions/:id`), and without a decision its deadline aborts.
 */
export type AbortCode = 'deadline_exceeded' | 'begin_failed' | 'join_failed' | 'prepare_failed' | 'commit_refused' | 'outcome_unknown';

/**
 * The global transaction did not commit: every local branch was rolled back and, once the
 * coordinator knew the transaction, its abort rolled back what other services had prepared.
 * An error thrown by the callback itself is rethrown as it is, not wrapped in this class.
 */
export class TransactionAbortedError extends Error {
  override readonly name = 'TransactionAbortedError';
  constructor(
    /** A stable code to switch on; see {@link AbortCode}. */
    readonly code: AbortCode,
    message: string,
    /** The coordinator's answer (id, status, error, refusal), or null when it never knew the transaction. */
    readonly outcome: Outcome | null,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
