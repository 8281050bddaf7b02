import type { ColumnType, Generated } from 'kysely';
import type { BranchStatus, TxStatus } from '../engine/states.ts';

/** Kysely's view of the log schema (migrations/). */
export interface LogDatabase {
  tpc_transactions: TransactionsTable;
  tpc_branches: BranchesTable;
  /** A view: every branch, in tpc_branches or in a lean row's branches (migration 0005). */
  tpc_branch_rows: BranchesTable;
  tpc_events: EventsTable;
  tpc_idempotency_keys: IdempotencyKeysTable;
  tpc_audit: AuditTable;
}

export interface AuditTable {
  id: Generated<string>;
  at: Generated<Date>;
  actor: string;
  action: string;
  resource: string | null;
  gid: string | null;
  transaction_id: string | null;
  reason: string | null;
  detail: Generated<unknown>;
}

type Timestamp = ColumnType<Date, Date | string, Date | string>;

export interface TransactionsTable {
  id: string;
  namespace: string;
  status: Generated<TxStatus>;
  one_phase: Generated<boolean>;
  deadline: Timestamp;
  submitted_by: string | null;
  error: unknown | null;
  created_at: Generated<Date>;
  decided_at: Date | null;
  completed_at: Date | null;
  updated_at: Generated<Date>;
  driver: string | null;
  lease_until: Date | null;
  attempts: Generated<number>;
  last_error: unknown | null;
  in_doubt: Generated<boolean>;
  heuristic: Generated<boolean>;
  /** Branches the transaction has, counting joined ones (migration 0004). */
  branch_count: Generated<number>;
  /** The branches of a lean row (migration 0005); null on a row whose branches are in tpc_branches. */
  branches: unknown | null;
  timeout_ms: number | null;
  interactive: Generated<boolean>;
  /** Bumped by every status change of this revision (the lean-row guard of migration 0005). */
  version: Generated<number>;
  /** status is committed or aborted: computed by the log (migration 0006), never written. */
  finished: ColumnType<boolean, never, never>;
}

export interface BranchesTable {
  transaction_id: string;
  index: number;
  resource: string;
  gid: string;
  status: Generated<BranchStatus>;
  xid: string | null;
  read_only: Generated<boolean>;
  results: unknown | null;
  error: unknown | null;
  heuristic: string | null;
  last_error: unknown | null;
}

export interface EventsTable {
  id: Generated<string>;
  transaction_id: string;
  at: Generated<Date>;
  kind: string;
  actor: string | null;
  detail: Generated<unknown>;
}

export interface IdempotencyKeysTable {
  token_name: string;
  key: string;
  request_hash: string;
  transaction_id: string;
  created_at: Generated<Date>;
}
