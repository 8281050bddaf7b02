import { sql } from 'kysely';
import type { TxStatus } from '../engine/states.ts';
import type { IdRange } from './id-prefix.ts';
import type { LogDb } from './log-database.ts';

export interface ListFilter {
  namespace?: string;
  status?: TxStatus[];
  inDoubt?: boolean;
  resource?: string;
  /** Ids starting with a prefix (id-prefix.ts): a range of the primary key. */
  idRange?: IdRange;
  /** Only transactions wholly within these resources (a limited token's), filtered in SQL so that pages and `next` count only those. */
  visible?: readonly string[];
  since?: Date;
  before?: Date;
  /** Opaque position from a previous page. */
  cursor?: { createdAt: string; id: string };
  limit: number;
}

export interface TransactionSummary {
  id: string;
  status: TxStatus;
  createdAt: string;
  deadline: string;
  decidedAt: string | null;
  completedAt: string | null;
  inDoubt: boolean;
  heuristic: boolean;
  attempts: number;
  lastError: unknown;
  error: unknown;
  resources: string[];
}

/** Newest first, keyset-paginated on (created_at, id), so pages stay stable while rows are added. */
export async function listTransactions(db: LogDb, f: ListFilter): Promise<{ items: TransactionSummary[]; next: { createdAt: string; id: string } | null }> {
  const conditions = [sql`true`];
  if (f.namespace) conditions.push(sql`t.namespace = ${f.namespace}`);
  if (f.status?.length) conditions.push(sql`t.status::text = ANY(${f.status}::text[])`);
  if (f.inDoubt !== undefined) conditions.push(sql`t.in_doubt = ${f.inDoubt}`);
  if (f.resource) conditions.push(sql`EXISTS (SELECT 1 FROM tpc_branch_rows b WHERE b.transaction_id = t.id AND b.resource = ${f.resource})`);
  if (f.idRange) conditions.push(sql`t.id BETWEEN ${f.idRange.low}::uuid AND ${f.idRange.high}::uuid`);
  if (f.visible) {
    conditions.push(sql`NOT EXISTS (SELECT 1 FROM tpc_branch_rows b WHERE b.transaction_id = t.id AND NOT (b.resource = ANY(${[...f.visible]}::text[])))`);
  }
  if (f.since) conditions.push(sql`t.created_at >= ${f.since}`);
  if (f.before) conditions.push(sql`t.created_at < ${f.before}`);
  if (f.cursor) conditions.push(sql`(t.created_at, t.id) < (${f.cursor.createdAt}::timestamptz, ${f.cursor.id}::uuid)`);
  const rows = await sql<{
    id: string;
    status: TxStatus;
    created_at: Date;
    created_key: string;
    deadline: Date;
    decided_at: Date | null;
    completed_at: Date | null;
    in_doubt: boolean;
    heuristic: boolean;
    attempts: number;
    last_error: unknown;
    error: unknown;
    resources: string[];
  }>`
    SELECT t.id, t.status, t.created_at, to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_key,
      t.deadline, t.decided_at, t.completed_at, t.in_doubt, t.heuristic, t.attempts, t.last_error, t.error,
      ARRAY(SELECT b.resource FROM tpc_branch_rows b WHERE b.transaction_id = t.id ORDER BY b.index) AS resources
    FROM tpc_transactions t
    WHERE ${sql.join(conditions, sql` AND `)}
    ORDER BY t.created_at DESC, t.id DESC
    LIMIT ${f.limit + 1}
  `.execute(db.forced);
  const page = rows.rows.slice(0, f.limit);
  const last = page[page.length - 1];
  const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);
  return {
    items: page.map((r) => ({
      id: r.id,
      status: r.status,
      createdAt: iso(r.created_at)!,
      deadline: iso(r.deadline)!,
      decidedAt: iso(r.decided_at),
      completedAt: iso(r.completed_at),
      inDoubt: r.in_doubt,
      heuristic: r.heuristic,
      attempts: r.attempts,
      lastError: r.last_error ?? null,
      error: r.error ?? null,
      resources: r.resources,
    })),
    // created_key keeps microseconds, which a JS Date would drop and so skip rows on the next page.
    next: rows.rows.length > f.limit && last ? { createdAt: last.created_key, id: last.id } : null,
  };
}
