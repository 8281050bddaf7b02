/*
 * The one home of the transaction and branch states and of every allowed transition.
 * The Postgres enums in migrations/ mirror these unions; test/states.test.ts fails if they drift.
 */
export const TX_STATUSES = ['active', 'preparing', 'committing', 'aborting', 'committed', 'aborted'] as const;
export type TxStatus = (typeof TX_STATUSES)[number];

export const BRANCH_STATUSES = ['active', 'prepared', 'committed', 'aborted'] as const;
export type BranchStatus = (typeof BRANCH_STATUSES)[number];

/**
 * from → allowed targets.
 * - active → preparing: a single writing branch handed to its database for a one-phase COMMIT;
 *   the outcome is then the participant's, so preparing ends in committed or aborted.
 * - active → committing: the commit decision (the commit point, forced to disk).
 * - active → aborting: abort decided while some branch may be prepared.
 * - active → aborted / committed: nothing is prepared (every branch rolled back, or read-only).
 * - committing → committed and aborting → aborted only: a written decision never changes.
 */
export const TX_TRANSITIONS: Readonly<Record<TxStatus, readonly TxStatus[]>> = {
  active: ['preparing', 'committing', 'aborting', 'aborted', 'committed'],
  preparing: ['committed', 'aborted'],
  committing: ['committed'],
  aborting: ['aborted'],
  committed: [],
  aborted: [],
};

export const FINAL_TX_STATUSES: readonly TxStatus[] = ['committed', 'aborted'];

export function isFinal(status: TxStatus): boolean {
  return FINAL_TX_STATUSES.includes(status);
}

export function canTransition(from: TxStatus, to: TxStatus): boolean {
  return TX_TRANSITIONS[from].includes(to);
}
