import { sql, type Kysely } from 'kysely';

/*
 * The lean log (DESIGN.md, "The hot path"): a happy-path transaction touches one row.
 * - branches: the transaction's branches as a jsonb array of
 *   {index, resource, gid, status, xid?, read_only?, results?, error?, heuristic?}. NULL on rows
 *   written by revisions before this one, whose branches are rows of tpc_branches; both kinds live
 *   side by side, and tpc_branch_rows reads them alike.
 * - timeout_ms, interactive: what the 'begun' event carried; the happy path's events (begun, the
 *   commit decision, the completion) are derived from the row's timestamps when read, and
 *   tpc_events keeps what is not the happy path.
 * - version: bumped by every status change this revision makes. A coordinator of an earlier
 *   revision, running beside this one during a rolling upgrade, sees a lean row with no branches
 *   in tpc_branches: left alone, it would "complete" it over zero branches (leaving the real ones
 *   prepared) or decide it without checking them. The trigger refuses any status change of a lean
 *   row that does not bump version, which such a coordinator never does: its write fails, it
 *   retries later, and the new revision drives the transaction. Its orphan scan finds the lean
 *   row by id (the gid carries it), so it never rolls back a lean branch as unknown.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE tpc_transactions
      ADD COLUMN branches     jsonb,
      ADD COLUMN timeout_ms   integer,
      ADD COLUMN interactive  boolean NOT NULL DEFAULT false,
      ADD COLUMN version      integer NOT NULL DEFAULT 0;

    CREATE FUNCTION tpc_lean_row_guard() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        RAISE EXCEPTION 'transaction % keeps its branches in tpc_transactions.branches: a coordinator of a revision before migration 0005_lean_log cannot change its status; upgrade it', OLD.id
          USING ERRCODE = 'object_not_in_prerequisite_state';
      END $$;
    CREATE TRIGGER tpc_transactions_lean_row_guard BEFORE UPDATE ON tpc_transactions
      FOR EACH ROW WHEN (OLD.branches IS NOT NULL AND NEW.status IS DISTINCT FROM OLD.status AND NEW.version = OLD.version)
      EXECUTE FUNCTION tpc_lean_row_guard();

    -- Every branch, whichever kind of row holds it. A filter on transaction_id reaches each arm
    -- (a primary-key lookup in both).
    CREATE VIEW tpc_branch_rows AS
      SELECT transaction_id, index, resource, gid, status, xid, read_only, results, error, heuristic, last_error
      FROM tpc_branches
      UNION ALL
      SELECT t.id, (b->>'index')::smallint, b->>'resource', b->>'gid', (b->>'status')::tpc_branch_status, b->>'xid',
        coalesce((b->>'read_only')::boolean, false), b->'results', b->'error', b->>'heuristic', b->'last_error'
      FROM tpc_transactions t, jsonb_array_elements(t.branches) AS b
      WHERE t.branches IS NOT NULL;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP VIEW tpc_branch_rows;
    DROP TRIGGER tpc_transactions_lean_row_guard ON tpc_transactions;
    DROP FUNCTION tpc_lean_row_guard();
    ALTER TABLE tpc_transactions DROP COLUMN version, DROP COLUMN interactive, DROP COLUMN timeout_ms, DROP COLUMN branches;
  `.execute(db);
}
