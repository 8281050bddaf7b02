import { sql, type Kysely } from 'kysely';
import type { LogDatabase } from './schema.ts';

// What the hot path and recovery do to each table. Missing any of these fails a transaction
// somewhere, so the log is not ready without it.
const NEEDED: readonly [table: string, privileges: string][] = [
  ['tpc_transactions', 'SELECT, INSERT, UPDATE'],
  ['tpc_branches', 'SELECT, INSERT, UPDATE'],
  ['tpc_branch_rows', 'SELECT'],
  ['tpc_events', 'SELECT, INSERT'],
  ['tpc_idempotency_keys', 'SELECT, INSERT'],
];

/**
 * Whether the log can really be used, not only reached: `SELECT 1` answered while a role default
 * (`search_path = pwned`) made every real query fail. Each table is named the way the hot path
 * names it (so a broken search_path, a renamed or dropped table, or a revoked SELECT fails here
 * with Postgres' own message), the write privileges are checked without writing, and a log that
 * cannot take writes at all (a standby, read-only sessions) is not ready either. One statement on
 * the caller's connection; LIMIT 0 reads no rows.
 */
export async function probeLog(db: Kysely<LogDatabase>): Promise<void> {
  const tables = NEEDED.map(([t]) => sql`(SELECT 1 FROM ${sql.table(t)} LIMIT 0)`);
  const checks = NEEDED.flatMap(([t, privs]) => privs.split(', ').map((p) => sql`(${t}, ${p})`));
  const r = await sql<{ missing: string[]; standby: boolean; read_only: string }>`
    SELECT num_nulls(${sql.join(tables)}) AS tables,
      ARRAY(SELECT p || ' on ' || t FROM (VALUES ${sql.join(checks)}) AS needed(t, p) WHERE NOT has_table_privilege(t, p)) AS missing,
      pg_is_in_recovery() AS standby, current_setting('transaction_read_only') AS read_only`.execute(db);
  const row = r.rows[0]!;
  if (row.standby) throw new Error("the log database is a standby in recovery: it cannot take the log's writes");
  if (row.read_only === 'on') throw new Error("the log's sessions are read-only (default_transaction_read_only): it cannot take the log's writes");
  if (row.missing.length) throw new Error(`the log's role lacks ${row.missing.join(', ')}`);
}
