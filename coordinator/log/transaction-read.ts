import type { LoggedBranch, LoggedEvent, LoggedTransaction } from '../engine/log-port.ts';
import type { BranchStatus, TxStatus } from '../engine/states.ts';
import { withHappyPathEvents, type LogEvent } from './happy-path-events.ts';

/*
 * How the log reads a whole transaction, in one place for the two statements that do: the load
 * (a SELECT) and the lease (an UPDATE … RETURNING, which takes the lease and reads the transaction
 * in one statement). Both name the transaction's row `t`.
 */

/**
 * The row's columns, its branches whichever row holds them (the lean row's jsonb or an earlier
 * schema's tpc_branches, alike through the tpc_branch_rows view) and its written events.
 */
export const TRANSACTION_COLUMNS = `
  t.id, t.namespace, t.status, t.one_phase, t.deadline, t.submitted_by, t.error, t.created_at,
  t.decided_at, t.completed_at, t.driver, t.lease_until, t.attempts, t.last_error, t.in_doubt,
  t.heuristic, t.timeout_ms, t.interactive,
  t.branches IS NOT NULL AS lean,
  t.decided_at IS NOT NULL AND t.decided_at IS DISTINCT FROM t.completed_at AS decided_apart,
  (SELECT coalesce(json_agg(b), '[]') FROM (
     SELECT b.index, b.resource, b.gid, b.status, b.xid, b.read_only, b.results, b.error, b.heuristic, b.last_error
     FROM tpc_branch_rows b WHERE b.transaction_id = t.id ORDER BY b.index) b) AS branch_list,
  (SELECT coalesce(json_agg(e), '[]') FROM (
     SELECT e.at, e.kind, e.actor, e.detail
     FROM tpc_events e WHERE e.transaction_id = t.id ORDER BY e.id) e) AS events`;

/** A branch as the log's columns name it; mapped to LoggedBranch at this boundary. */
interface BranchRow {
  index: number;
  resource: string;
  gid: string;
  status: BranchStatus;
  xid: string | null;
  read_only: boolean;
  results: unknown;
  error: unknown;
  heuristic: string | null;
  last_error: unknown;
}

/** What TRANSACTION_COLUMNS returns. */
export interface TransactionRow {
  id: string;
  namespace: string;
  status: TxStatus;
  one_phase: boolean;
  deadline: Date;
  submitted_by: string | null;
  error: unknown;
  created_at: Date;
  decided_at: Date | null;
  completed_at: Date | null;
  driver: string | null;
  lease_until: Date | null;
  attempts: number;
  last_error: unknown;
  in_doubt: boolean;
  heuristic: boolean;
  timeout_ms: number | null;
  interactive: boolean;
  lean: boolean;
  decided_apart: boolean;
  branch_list: BranchRow[];
  events: LogEvent[];
}

const branchOf = (b: BranchRow): LoggedBranch => ({
  index: b.index,
  resource: b.resource,
  gid: b.gid,
  status: b.status,
  xid: b.xid,
  readOnly: b.read_only,
  results: b.results,
  error: b.error,
  heuristic: b.heuristic,
  lastError: b.last_error,
});

/** The row in the engine's terms; a lean row's happy-path events are derived from its timestamps. */
export function loggedFrom(row: TransactionRow): LoggedTransaction {
  const events = row.lean ? withHappyPathEvents({ ...row, resources: row.branch_list.map((b) => b.resource) }, row.events) : (row.events as LoggedEvent[]);
  return {
    id: row.id,
    namespace: row.namespace,
    status: row.status,
    onePhase: row.one_phase,
    deadline: row.deadline,
    submittedBy: row.submitted_by,
    error: row.error,
    createdAt: row.created_at,
    decidedAt: row.decided_at,
    completedAt: row.completed_at,
    driver: row.driver,
    leaseUntil: row.lease_until,
    attempts: row.attempts,
    lastError: row.last_error,
    inDoubt: row.in_doubt,
    heuristic: row.heuristic,
    branches: row.branch_list.map(branchOf),
    events,
  };
}
