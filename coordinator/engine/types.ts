import type { BranchStatus, TxStatus } from './states.ts';

export interface StatementSpec {
  sql: string;
  params: unknown[];
  /** When set, a statement touching another number of rows aborts the transaction. */
  expect?: { rowCount?: number };
}

export interface BranchSpec {
  resource: string;
  statements: StatementSpec[];
}

export type WaitFor = 'completed' | 'decided';

export interface SubmitRequest {
  branches: BranchSpec[];
  timeoutMs: number;
  wait: WaitFor;
}

export interface SubmitContext {
  /** Who submitted (the token's name), recorded in the log and the audit trail. */
  actor: string | null;
  idempotency?: { tokenName: string; key: string; requestHash: string };
  /**
   * When the request reached this process (epoch ms). The deadline counts from it: under a burst,
   * a request can wait in the event loop before the engine sees it, and that time is the client's.
   */
  receivedAt?: number;
  /**
   * Called when the Idempotency-Key was seen before and the answer is the first attempt's (a
   * replay), before that answer is known: the API marks it so (`Idempotent-Replayed: true`).
   */
  onReplay?: () => void;
}

/** Why a transaction aborted: which branch, which statement, which error, or the deadline. */
export interface TxError {
  resource: string | null;
  /** Index of the statement within its branch, or null when no statement was at fault. */
  statement: number | null;
  /** SQLSTATE, or a coordinator code such as `deadline_exceeded` or `expectation_failed`. */
  code: string;
  message: string;
}

export interface StatementOutcome {
  rowCount: number;
  rows: Record<string, unknown>[];
}

export interface BranchView {
  resource: string;
  status: BranchStatus;
  readOnly: boolean;
  results: StatementOutcome[];
}

export interface TransactionView {
  id: string;
  status: TxStatus;
  branches: BranchView[];
  error: TxError | null;
}

export interface TransactionEvent {
  at: string;
  kind: string;
  actor: string | null;
  detail: Record<string, unknown>;
}

/** A branch as its database sees it now, next to what the log says. */
export interface LiveBranch {
  resource: string;
  gid: string;
  xid: string | null;
  heuristic: string | null;
  lastError: unknown;
  /** Asked only while the transaction is unfinished (a finished one has nothing prepared). */
  live?: { reachable: true; prepared: boolean; preparedAt: string | null; locks: number | null } | { reachable: false; error: string };
}

export interface TransactionDetail extends TransactionView {
  /** Per branch, the log's record and the live view from its database. */
  branchDetails?: LiveBranch[];
  /** Phase 2 keeps failing: shown to operators until it completes. */
  inDoubt: boolean;
  /** A branch ended against the decision (rolled back by hand after a commit, or the reverse). */
  heuristic: boolean;
  attempts: number;
  lastError: unknown;
  deadline: string;
  createdAt: string;
  decidedAt: string | null;
  completedAt: string | null;
  onePhase: boolean;
  events: TransactionEvent[];
}
