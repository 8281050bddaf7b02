import { setTimeout as sleep } from 'node:timers/promises';
import type { Outcome } from './client.ts';
import { answerDetail, type CoordinatorCall } from './coordinator-call.ts';

/** Options of {@link TpcClient.outcome}. */
export interface OutcomeOptions {
  /**
   * How long to wait for the transaction to become final, in milliseconds (default 0: one look).
   * An undecided transaction is aborted by the coordinator at its deadline, so waiting a little
   * past `transaction.deadline` settles it unless the coordinator is down.
   */
  waitMs?: number;
}

/** What the coordinator says of a transaction: see {@link TpcClient.outcome}. */
export interface OutcomeReport {
  /** The global transaction's id. */
  id: string;
  /**
   * The coordinator's status at the last look: `committed` or `aborted` (final); `committing` or
   * `aborting` (decided, phase 2 still running); `active` or `preparing` (not decided yet); or
   * `unreachable` when no look got an answer within `waitMs`.
   */
  status: string;
  /**
   * What was decided, or null while nothing is (or the coordinator could not be asked). A decision
   * is durable and never changes: `commit` means every branch is, or will be after recovery,
   * committed; `abort` means none is, so the work may be done again.
   */
  decision: 'commit' | 'abort' | null;
  /** Every branch is finished (`committed` or `aborted`). */
  final: boolean;
  /** The coordinator's last answer (`GET /v1/transactions/:id`), or null when it never answered. */
  transaction: Outcome | null;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// Phase 2 usually ends within tens of milliseconds of the decision, so the first looks come soon;
// doubling up to 1 s keeps a long wait (a coordinator down for minutes) from flooding it.
const FIRST_POLL_MS = 50;
const MAX_POLL_MS = 1_000;
// A coordinator that answers at all answers a read in milliseconds; 1 s gives a busy one room, and
// lets `waitMs: 0` still make one real look without outlasting the caller's bound by much.
const MIN_LOOK_MS = 1_000;

/**
 * Reads the transaction until it is final or `waitMs` has passed. A coordinator that does not
 * answer (or answers 5xx) is asked again: it may be restarting. An answer that no retry can change
 * (no such transaction, a token without the `read` scope) throws.
 */
export async function awaitOutcome(call: CoordinatorCall, id: string, options: OutcomeOptions = {}): Promise<OutcomeReport> {
  if (!UUID.test(id)) throw new Error(`"${String(id).slice(0, 80)}" is not a transaction id`);
  const waitMs = options.waitMs ?? 0;
  if (!(waitMs >= 0)) throw new Error(`waitMs must be zero or more, not ${waitMs}`);
  const until = Date.now() + waitMs;
  let last: Outcome | null = null;
  for (let pause = FIRST_POLL_MS; ; pause = Math.min(pause * 2, MAX_POLL_MS)) {
    const r = await call('GET', `/v1/transactions/${id.toLowerCase()}`, undefined, { timeoutMs: Math.max(MIN_LOOK_MS, until - Date.now()) });
    if (r.status === 200 && typeof r.body?.status === 'string') {
      last = r.body as Outcome;
      if (last.status === 'committed' || last.status === 'aborted') break;
    } else if (r.status === 404) {
      throw new Error(`transaction ${id} is not known to the coordinator (${answerDetail(r)})`);
    } else if (r.status === 401 || r.status === 403) {
      throw new Error(`the coordinator refused to show transaction ${id} (${answerDetail(r)}); outcome() needs a token with the "read" scope`);
    } else if (r.status !== 0 && r.status < 500) {
      throw new Error(`the coordinator did not show transaction ${id}: ${answerDetail(r)}`);
    }
    const left = until - Date.now();
    if (left <= 0) break;
    await sleep(Math.min(pause, left));
  }
  return report(id, last);
}

function report(id: string, seen: Outcome | null): OutcomeReport {
  if (!seen) return { id, status: 'unreachable', decision: null, final: false, transaction: null };
  const decision =
    seen.status === 'committed' || seen.status === 'committing' ? 'commit' : seen.status === 'aborted' || seen.status === 'aborting' ? 'abort' : null;
  return { id, status: seen.status, decision, final: seen.status === 'committed' || seen.status === 'aborted', transaction: seen };
}
