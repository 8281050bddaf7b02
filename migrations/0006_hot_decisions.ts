import { sql, type Kysely } from 'kysely';

/*
 * The commit decision as a HOT update (a heap-only tuple: the new row version on the same page, no
 * index touched). An update is HOT only if no indexed column changes, and a partial index's
 * predicate counts: the two indexes that named `status` in theirs (unfinished, retention) made
 * every status change write a new entry into every index of the table. `finished` is computed
 * from status, stays false from begin to decision, and replaces status in those predicates; only
 * the completion then touches the indexes. fillfactor leaves room on each page for the decision's
 * version. Adding a stored generated column rewrites the table once.
 *
 * During a rolling upgrade an instance of an earlier revision still asks for `status NOT IN (…)`:
 * its scans of unfinished transactions no longer find an index and read the table.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE tpc_transactions ADD COLUMN finished boolean GENERATED ALWAYS AS (status IN ('committed', 'aborted')) STORED;
    ALTER TABLE tpc_transactions SET (fillfactor = 50);
    CREATE INDEX tpc_transactions_open ON tpc_transactions (deadline) WHERE NOT finished;
    CREATE INDEX tpc_transactions_finished ON tpc_transactions (completed_at) WHERE finished;
    DROP INDEX tpc_transactions_unfinished;
    DROP INDEX tpc_transactions_retention;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE INDEX tpc_transactions_unfinished ON tpc_transactions (deadline) WHERE status NOT IN ('committed', 'aborted');
    CREATE INDEX tpc_transactions_retention ON tpc_transactions (completed_at) WHERE status IN ('committed', 'aborted');
    DROP INDEX tpc_transactions_finished;
    DROP INDEX tpc_transactions_open;
    ALTER TABLE tpc_transactions RESET (fillfactor);
    ALTER TABLE tpc_transactions DROP COLUMN finished;
  `.execute(db);
}
