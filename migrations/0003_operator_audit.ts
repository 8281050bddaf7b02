import { sql, type Kysely } from 'kysely';

/*
 * Operator actions that concern no transaction of the log (an orphan prepared branch has none):
 * who did what to which gid, why, and what came of it. Append-only, like tpc_events.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE tpc_audit (
      id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      at              timestamptz NOT NULL DEFAULT clock_timestamp(),
      actor           text NOT NULL,
      action          text NOT NULL,
      resource        text,
      gid             text,
      transaction_id  uuid,
      reason          text,
      detail          jsonb NOT NULL DEFAULT '{}'
    );
    CREATE INDEX tpc_audit_at ON tpc_audit (at DESC);
    -- The heuristic gauge and the operators' filter read only flagged rows.
    CREATE INDEX tpc_transactions_heuristic ON tpc_transactions (created_at DESC) WHERE heuristic;
    CREATE TRIGGER tpc_audit_no_update BEFORE UPDATE ON tpc_audit
      FOR EACH ROW EXECUTE FUNCTION tpc_events_append_only();
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX tpc_transactions_heuristic; DROP TABLE tpc_audit`.execute(db);
}
