import { sql, type Kysely } from 'kysely';

/*
 * Recovery: who drives a transaction (a lease with expiry, checked by every state change as a
 * fencing token), how often phase 2 has been tried and why it failed, and the flags operators
 * need: in doubt (phase 2 keeps failing) and heuristic hazard (a branch ended against the decision).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE tpc_transactions
      ADD COLUMN driver       text,
      ADD COLUMN lease_until  timestamptz,
      ADD COLUMN attempts     integer NOT NULL DEFAULT 0,
      ADD COLUMN last_error   jsonb,
      ADD COLUMN in_doubt     boolean NOT NULL DEFAULT false,
      ADD COLUMN heuristic    boolean NOT NULL DEFAULT false;
    ALTER TABLE tpc_branches
      ADD COLUMN heuristic    text,
      ADD COLUMN last_error   jsonb;
    CREATE INDEX tpc_transactions_in_doubt ON tpc_transactions (created_at DESC) WHERE in_doubt;
    CREATE INDEX tpc_transactions_retention ON tpc_transactions (completed_at) WHERE status IN ('committed', 'aborted');
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP INDEX tpc_transactions_retention;
    DROP INDEX tpc_transactions_in_doubt;
    ALTER TABLE tpc_branches DROP COLUMN last_error, DROP COLUMN heuristic;
    ALTER TABLE tpc_transactions DROP COLUMN heuristic, DROP COLUMN in_doubt, DROP COLUMN last_error,
      DROP COLUMN attempts, DROP COLUMN lease_until, DROP COLUMN driver;
  `.execute(db);
}
