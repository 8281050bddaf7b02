import { sql } from 'kysely';
import type { TxStatus } from '../engine/states.ts';
import type { LogDb } from './log-database.ts';

export interface CountFilter {
  namespace: string;
  resource?: string;
  since?: Date;
  before?: Date;
  /** The resources the caller may see, or '*': as in the list, a transaction counts only if wholly within them. */
  visible: readonly string[] | '*';
}

export interface TransactionCounts {
  byStatus: Partial<Record<TxStatus, number>>;
  inDoubt: number;
  heuristic: number;
  total: number;
}

/**
 * How many transactions per status, for the console's header. One aggregate over the namespace's
 * rows in the window: retention keeps the table to TPC_RETENTION_DAYS of finished ones, and a
 * console polls it every few seconds, not per transaction.
 */
export async function countTransactions(db: LogDb, f: CountFilter): Promise<TransactionCounts> {
  const conditions = [sql`t.namespace = ${f.namespace}`];
  if (f.resource) conditions.push(sql`EXISTS (SELECT 1 FROM tpc_branch_rows b WHERE b.transaction_id = t.id AND b.resource = ${f.resource})`);
  if (f.since) conditions.push(sql`t.created_at >= ${f.since}`);
  if (f.before) conditions.push(sql`t.created_at < ${f.before}`);
  if (f.visible !== '*') {
    conditions.push(sql`NOT EXISTS (SELECT 1 FROM tpc_branch_rows b WHERE b.transaction_id = t.id AND NOT (b.resource = ANY(${[...f.visible]}::text[])))`);
  }
  const rows = await sql<{ status: TxStatus; n: string; in_doubt: string; heuristic: string }>`
    SELECT t.status, count(*) AS n, count(*) FILTER (WHERE t.in_doubt) AS in_doubt, count(*) FILTER (WHERE t.heuristic) AS heuristic
    FROM tpc_transactions t
    WHERE ${sql.join(conditions, sql` AND `)}
    GROUP BY t.status
  `.execute(db.forced);
  const counts: TransactionCounts = { byStatus: {}, inDoubt: 0, heuristic: 0, total: 0 };
  for (const r of rows.rows) {
    counts.byStatus[r.status] = Number(r.n);
    counts.inDoubt += Number(r.in_doubt);
    counts.heuristic += Number(r.heuristic);
    counts.total += Number(r.n);
  }
  return counts;
}
