import { sql, type Kysely } from 'kysely';

/*
 * Branches joined to an interactive transaction after its begin (POST /v1/transactions/:id/branches).
 * - branch_count: how many branches the transaction has. A join increments it in the same
 *   compare-and-set that checks status = 'active', so the join and the decision serialize on the
 *   transaction's row, and the new branch's index is read from the row itself (not from a scan of
 *   tpc_branches that a concurrent join could make stale). The commit decision checks it, so a
 *   branch that joins after the commit looked at the databases makes that decision fail.
 *   Finished transactions are left at 0: nothing joins or decides them any more.
 * - one branch per resource and transaction, which begin already ensures: two joins of the same
 *   resource racing each other cannot both add a branch; the loser retries and finds the winner's.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE tpc_transactions ADD COLUMN branch_count smallint NOT NULL DEFAULT 0;
    UPDATE tpc_transactions t SET branch_count = (SELECT count(*) FROM tpc_branches b WHERE b.transaction_id = t.id)
      WHERE status NOT IN ('committed', 'aborted');
    CREATE UNIQUE INDEX tpc_branches_resource_once ON tpc_branches (transaction_id, resource);
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP INDEX tpc_branches_resource_once;
    ALTER TABLE tpc_transactions DROP COLUMN branch_count;
  `.execute(db);
}
