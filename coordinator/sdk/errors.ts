import type { Outcome } from './client.ts';

/**
 * Why a global transaction did not commit:
 * - `deadline_exceeded`: the attempt ran past `timeoutMs` (the callback, a statement waiting on a
 *   lock, or the commit arrived late at the coordinator), whichever of the SDK's timer and the
 *   server's statement timeout noticed first;
 * - `begin_failed` / `join_failed`: the coordinator did not begin the transaction or add a branch
 *   (unreachable, unknown resource, the token may not use it);
 * - `prepare_failed`: a local branch could not be prepared;
 * - `commit_refused`: the coordinator decided abort, e.g. a joined branch was not prepared by the
 *   other service;
 * - `submission_aborted`: a transaction given with its statements (`submit`) was aborted: a
 *   statement failed or touched another number of rows than `expect` asked; `outcome.error` names
 *   the branch, the statement and why (past the deadline the code is `deadline_exceeded`);
 * - `outcome_unknown`: no longer thrown as a `TransactionAbortedError` (the transaction may well
 *   have committed): see {@link TransactionOutcomeUnknownError}. Kept so that existing `switch`
 *   statements still compile.
 */
export type AbortCode = 'deadline_exceeded' | 'begin_failed' | 'join_failed' | 'prepare_failed' | 'commit_refused' | 'submission_aborted' | 'outcome_unknown';

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

/**
 * The commit was asked for and no answer came: the coordinator may have decided commit (and will
 * then finish it, whatever happens to this process) or not (and its deadline then aborts it).
 * Deliberately NOT a {@link TransactionAbortedError}: the transaction must be treated as possibly
 * committed. Ask `tpc.outcome(err.transactionId, { waitMs })` for the truth before doing the work
 * again, or hand the id to something that will. Every local branch is prepared under the
 * coordinator's gid, so nothing of it is lost or applied twice by the coordinator itself.
 */
export class TransactionOutcomeUnknownError extends Error {
  override readonly name = 'TransactionOutcomeUnknownError';
  /** A stable code, as the other SDK errors have. */
  readonly code = 'outcome_unknown' as const;
  constructor(
    /** The global transaction's id in the coordinator's log: the key for `tpc.outcome()`. */
    readonly transactionId: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * A transaction given with its statements (`submit`) got no answer that says what became of it
 * (no answer at all, or the coordinator could not settle it yet): it may have committed. Send the
 * same submission again with the same `idempotencyKey`: the coordinator answers the first
 * attempt's outcome and applies nothing twice. Without a key, only the coordinator's log can tell
 * (`tpc transactions`, or the console).
 */
export class SubmissionOutcomeUnknownError extends Error {
  override readonly name = 'SubmissionOutcomeUnknownError';
  readonly code = 'outcome_unknown' as const;
  constructor(
    /** The key the submission was sent with, if any: the way to its outcome. */
    readonly idempotencyKey: string | undefined,
    message: string,
    /** The coordinator's answer (a problem document), or null when none came. */
    readonly answer: Record<string, unknown> | null,
  ) {
    super(message);
  }
}
