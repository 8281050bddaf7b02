import { ConflictError } from '../errors.ts';
import type { BranchStatus, TxStatus } from './states.ts';

/*
 * The transaction log as the engine needs it: storage, declared here and implemented in
 * coordinator/log/ (Postgres) and test/harness/memory-log.ts (in memory, for the state machine's
 * fast tests). The log knows rows; which changes are allowed, and what each one records, is the
 * engine's (state-changes.ts). Rows cross this boundary in camelCase.
 */

export interface BeginRecord {
  id: string;
  namespace: string;
  deadline: Date;
  submittedBy: string | null;
  /** The instance driving it; its lease runs until the deadline (see RecoveryLog.acquire). */
  driver: string;
  branches: { index: number; resource: string; gid: string }[];
  /** The timeout the client asked for (the deadline is the request's arrival plus it). */
  timeoutMs: number;
  /** Begun by POST /v1/transactions/interactive: its branches prepare elsewhere and may be joined. */
  interactive?: boolean;
  idempotency?: { tokenName: string; key: string; requestHash: string };
}

export type BeginOutcome = { created: true } | { created: false; existingId: string; requestHash: string };

export interface BranchUpdate {
  index: number;
  /** Given, with gid, only in a whole list (TransitionRecord.branchesWhole): what the row already holds. */
  resource?: string;
  gid?: string;
  status: BranchStatus;
  /** How the branch really ended when that was against the decision. */
  heuristic?: string;
  xid?: string | null;
  readOnly?: boolean;
  results?: unknown;
  error?: unknown;
}

/** One state change as the log writes it. Built only by state-changes.ts, which checks it first. */
export interface TransitionRecord {
  id: string;
  from: TxStatus;
  to: TxStatus;
  /** Wait for the WAL flush: required for the commit decision, the commit point. */
  forced: boolean;
  /**
   * Not forced, and no answer waits on it (a driver's completion, written after its answer): it
   * may wait a few milliseconds for others to share its statement. Not for a write a job or a
   * client waits on, whose wait it would lengthen.
   */
  lingers?: boolean;
  /** Fencing: the change applies only while this instance holds the transaction's lease. */
  driver: string;
  onePhase?: boolean;
  /** A branch was found ended against the decision: flagged for operators, never a clean success. */
  heuristic?: boolean;
  error?: unknown;
  branches?: BranchUpdate[];
  /**
   * `branches` lists every branch of the transaction with every field its row holds for it, as they
   * are to be after this change: the log may write them as they stand instead of merging them into
   * the row's (a merge of jsonb arrays cost the log about 30 µs per row, half of a completion).
   * Only a driver that wrote every earlier change of the row knows that much (TransactionRun); the
   * other writers that touch a row's branches only move a branch's status to the decided outcome
   * (RecoveryLog.recordFailedAttempt), which such a list sets too, or change the status, which
   * makes this compare-and-set fail.
   */
  branchesWhole?: boolean;
  /**
   * The change applies only if the transaction has at most this many branches: the ones the
   * caller checked. A branch joined since then (POST …/branches) makes it fail with StaleStateError.
   */
  branchesChecked?: number;
  /**
   * derivable: a happy-path event (a commit decision, a clean completion), which a lean row derives
   * from its timestamps (log/happy-path-events.ts) rather than writing it.
   */
  event: { kind: string; actor?: string | null; detail?: Record<string, unknown>; derivable?: boolean };
  /**
   * The transaction has no row yet (its begin record was deferred, see engine/deferred-begin.ts):
   * the row is inserted straight into `to`, from this record, with `branches` applied. A row that
   * exists already (recovery's tombstone, see RecoveryLog.abandon) makes the write stale.
   */
  insert?: BeginRecord;
}

export interface JoinRecord {
  id: string;
  resource: string;
  /** The gid of the new branch is this followed by its index (see engine/gid.ts). */
  gidPrefix: string;
  actor: string | null;
}

export interface JoinedBranchRecord {
  index: number;
  gid: string;
  deadline: Date;
  /** False when the resource already had a branch in the transaction: that one is returned. */
  created: boolean;
}

export interface LoggedBranch {
  index: number;
  resource: string;
  gid: string;
  status: BranchStatus;
  xid: string | null;
  readOnly: boolean;
  results: unknown;
  error: unknown;
  heuristic: string | null;
  lastError: unknown;
}

export interface LoggedEvent {
  at: Date | string;
  kind: string;
  actor: string | null;
  detail: Record<string, unknown>;
}

export interface LoggedTransaction {
  id: string;
  namespace: string;
  status: TxStatus;
  onePhase: boolean;
  deadline: Date;
  submittedBy: string | null;
  error: unknown;
  createdAt: Date;
  decidedAt: Date | null;
  completedAt: Date | null;
  driver: string | null;
  leaseUntil: Date | null;
  attempts: number;
  lastError: unknown;
  inDoubt: boolean;
  heuristic: boolean;
  branches: LoggedBranch[];
  /** Written events and, for a lean row, the happy path's derived ones, in time order. */
  events: LoggedEvent[];
}

/** A branch a failed phase-2 attempt did finish as decided (no hazard): a fact, whoever drives next. */
export interface SettledBranch {
  index: number;
  status: 'committed' | 'aborted';
}

/** Joins of one resource to one transaction kept racing each other: the caller may try again. */
export class ConcurrentJoinError extends ConflictError {
  constructor(readonly transactionId: string) {
    super('busy', `concurrent joins to transaction ${transactionId}; try again`);
  }
}

/** The transaction aggregate. */
export interface TransactionLog {
  /** The begin record (not forced unless keyed: presumed abort covers a lost one). */
  begin(record: BeginRecord): Promise<BeginOutcome>;
  /**
   * One guarded compare-and-set: applies only where status = from, driver = record.driver and the
   * branch count is at most branchesChecked, with its branch updates and event; otherwise
   * StaleStateError. It does not judge whether from → to is allowed (the engine did).
   */
  transition(record: TransitionRecord): Promise<void>;
  load(id: string): Promise<LoggedTransaction | null>;
  /**
   * Adds a branch to an active interactive transaction before its deadline, or returns the one it
   * has on that resource; null when there is nothing to join. ConcurrentJoinError when joins of
   * one resource kept racing.
   */
  joinBranch(record: JoinRecord): Promise<JoinedBranchRecord | null>;
  /** Its branches' resources and the token that began it, or null when there is no such transaction. */
  accessOf(id: string): Promise<{ resources: string[]; owner: string | null } | null>;
  /** An audit event with no state change (an operator's refused or repeated action). */
  appendEvent(id: string, kind: string, actor: string | null, detail: Record<string, unknown>): Promise<void>;
}

/** What recovery knows of a transaction with prepared branches and no row: see RecoveryLog.abandon. */
export interface AbandonedRecord {
  id: string;
  namespace: string;
  deadline: Date;
  /** The branches found prepared, which the tombstone names (others may be found later). */
  branches: { index: number; resource: string; gid: string }[];
  reason: { resource: null; statement: null; code: string; message: string };
  /** The instance writing it (the row's driver). */
  driver: string;
}

export interface AuditEntry {
  actor: string;
  action: string;
  resource: string;
  gid: string;
  transactionId: string | null;
  reason: string;
  detail: Record<string, unknown>;
}

/** Leases, attempts, the in-doubt flag and the scans of recovery. */
export interface RecoveryLog {
  /**
   * Takes the lease on an unfinished transaction if nobody else holds a live one (or, with
   * takeOverUndecided, from a live holder of an undecided one), and returns it; null otherwise.
   */
  acquire(id: string, driver: string, leaseMs: number, options?: { takeOverUndecided?: boolean }): Promise<LoggedTransaction | null>;
  /** Hands the transaction over: the next acquire by anyone succeeds at once. */
  release(id: string, driver: string): Promise<void>;
  /**
   * Counts a failed phase-2 attempt, and records the branches it did finish (`settled`), so that the
   * next attempt sends them nothing; returns whether the transaction is now in doubt.
   */
  recordFailedAttempt(id: string, error: unknown, inDoubtAfter: number, settled?: readonly SettledBranch[]): Promise<boolean>;
  /** Flags in doubt every decided transaction unfinished `olderThanMs` after its decision; returns how many. */
  flagOverdue(namespace: string, olderThanMs: number): Promise<number>;
  /** Unfinished transactions nobody holds a live lease on. */
  unattended(namespace: string, limit: number): Promise<{ id: string; status: TxStatus; deadline: Date }[]>;
  statuses(ids: string[]): Promise<Map<string, { status: TxStatus; attended: boolean }>>;
  /**
   * Decided, unfinished transactions with a branch on `resource` that nobody holds a live lease on
   * (their phase 2 waits for a retry), by id, the first `limit` after `after`.
   */
  waitingOn(namespace: string, resource: string, after: string | null, limit: number): Promise<string[]>;
  /** An operator action on something that is not a logged transaction (an orphan branch). */
  audit(entry: AuditEntry): Promise<void>;
  /**
   * Records a transaction the log never held as aborted (a tombstone), before its prepared
   * branches are rolled back: its id carried a deadline that has passed, and no row was written
   * (its driver died before its deferred begin record or its decision). Forced. Its driver's late
   * decision, an insert, then finds the row and fails. 'created', or the status of the row found.
   */
  abandon(record: AbandonedRecord): Promise<'created' | TxStatus>;
}
