import type { Outcome } from './client.ts';
import { answerDetail, type CoordinatorCall } from './coordinator-call.ts';
import { SubmissionOutcomeUnknownError, TransactionAbortedError } from './errors.ts';

/** One statement of a {@link Submission}: raw SQL with `$n` parameters, or a statement template's name. */
export interface SubmittedStatement {
  sql?: string;
  /** In place of `sql`: a statement template (TPC_STATEMENTS_FILE) by name. */
  statement?: string;
  params?: unknown[];
  /** A statement that touches another number of rows aborts the transaction. */
  expect?: { rowCount?: number };
}

/** A transaction given whole, as the body of `POST /v1/transactions`. */
export interface Submission {
  branches: { resource: string; statements: SubmittedStatement[] }[];
  /** Bounds everything before the decision (default: the coordinator's TPC_DEFAULT_TIMEOUT_MS). */
  timeoutMs?: number;
  /** `decided`: answer once the decision is durable, phase 2 behind it (status `committing`). */
  wait?: 'completed' | 'decided';
}

export interface SubmitOptions {
  /** Sent as Idempotency-Key: the same key and submission again returns the first outcome and applies nothing twice. */
  idempotencyKey?: string;
}

// Refusals that say nothing ran: too busy to admit it, or a resource that cannot take part.
const NOTHING_RAN = new Set(['urn:tpc:problem:overloaded', 'urn:tpc:problem:resource-unusable']);

/**
 * Submits a transaction with its statements: the coordinator runs each branch in one flight and
 * decides, with no round trip back to this process between a statement and its PREPARE. Returns
 * the outcome (`committed`, or `committing` when `wait: 'decided'` or phase 2 is still running).
 *
 * @throws TransactionAbortedError `submission_aborted` (or `deadline_exceeded`) when the
 *   coordinator aborted it, with the outcome; `begin_failed` when it refused the submission
 *   (invalid, a statement the guard refuses, a resource the token may not use, overloaded):
 *   nothing ran, and the refusal is the error's `cause`.
 * @throws SubmissionOutcomeUnknownError when no answer says what became of it.
 */
export async function submitTransaction(call: CoordinatorCall, submission: Submission, options: SubmitOptions = {}): Promise<Outcome> {
  const r = await call('POST', '/v1/transactions', submission, options);
  const body = r.body;
  if ((r.status === 201 || r.status === 202) && body) return body as Outcome;
  if (r.status === 409 && body?.status === 'aborted') {
    const late = (body.error as { code?: string } | null)?.code === 'deadline_exceeded';
    throw new TransactionAbortedError(
      late ? 'deadline_exceeded' : 'submission_aborted',
      `transaction ${body.id} was aborted: ${answerDetail(r)}`,
      body as Outcome,
    );
  }
  const refused = (r.status >= 400 && r.status < 500) || (r.status === 503 && NOTHING_RAN.has(String(body?.type)));
  if (refused) {
    throw new TransactionAbortedError('begin_failed', `the coordinator refused the submission: ${answerDetail(r)}`, null, { cause: body });
  }
  const next =
    options.idempotencyKey === undefined
      ? "without an idempotency key, only the coordinator's log can tell"
      : `submit it again with the same idempotencyKey (${options.idempotencyKey}) to learn it`;
  throw new SubmissionOutcomeUnknownError(options.idempotencyKey, `the submission's outcome is unknown (${answerDetail(r)}); ${next}`, body);
}
