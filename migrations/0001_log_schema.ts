import { sql, type Kysely } from 'kysely';

/*
 * The transaction log. Landed migrations are never edited: add a new numbered file instead.
 * Enum values must match coordinator/engine/states.ts (a test checks that they agree).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TYPE tpc_tx_status AS ENUM ('active', 'preparing', 'committing', 'aborting', 'committed', 'aborted');
    CREATE TYPE tpc_branch_status AS ENUM ('active', 'prepared', 'committed', 'aborted');

    CREATE TABLE tpc_transactions (
      id            uuid PRIMARY KEY,
      namespace     text NOT NULL,
      status        tpc_tx_status NOT NULL DEFAULT 'active',
      -- one_phase: a single writing branch committed without PREPARE; its outcome is the participant's.
      one_phase     boolean NOT NULL DEFAULT false,
      deadline      timestamptz NOT NULL,
      submitted_by  text,
      error         jsonb,
      created_at    timestamptz NOT NULL DEFAULT now(),
      decided_at    timestamptz,
      completed_at  timestamptz,
      updated_at    timestamptz NOT NULL DEFAULT now()
    );
    -- Recovery scans only unfinished transactions; retention scans by age.
    CREATE INDEX tpc_transactions_unfinished ON tpc_transactions (deadline) WHERE status NOT IN ('committed', 'aborted');
    CREATE INDEX tpc_transactions_created ON tpc_transactions (created_at DESC, id);

    CREATE TABLE tpc_branches (
      transaction_id  uuid NOT NULL REFERENCES tpc_transactions (id) ON DELETE CASCADE,
      index           smallint NOT NULL,
      resource        text NOT NULL,
      gid             text NOT NULL,
      status          tpc_branch_status NOT NULL DEFAULT 'active',
      -- pg_current_xact_id() of the branch, for pg_xact_status once the gid is gone.
      xid             text,
      read_only       boolean NOT NULL DEFAULT false,
      results         jsonb,
      error           jsonb,
      PRIMARY KEY (transaction_id, index)
    );
    CREATE UNIQUE INDEX tpc_branches_gid ON tpc_branches (gid);
    CREATE INDEX tpc_branches_resource ON tpc_branches (resource, transaction_id);

    -- The audit trail: rows are only ever inserted (and pruned with their transaction).
    CREATE TABLE tpc_events (
      id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      transaction_id  uuid NOT NULL REFERENCES tpc_transactions (id) ON DELETE CASCADE,
      at              timestamptz NOT NULL DEFAULT clock_timestamp(),
      kind            text NOT NULL,
      actor           text,
      detail          jsonb NOT NULL DEFAULT '{}'
    );
    CREATE INDEX tpc_events_transaction ON tpc_events (transaction_id, id);
    CREATE FUNCTION tpc_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'tpc_events is append-only'; END $$;
    CREATE TRIGGER tpc_events_no_update BEFORE UPDATE ON tpc_events
      FOR EACH ROW EXECUTE FUNCTION tpc_events_append_only();

    CREATE TABLE tpc_idempotency_keys (
      token_name      text NOT NULL,
      key             text NOT NULL,
      request_hash    text NOT NULL,
      transaction_id  uuid NOT NULL REFERENCES tpc_transactions (id) ON DELETE CASCADE,
      created_at      timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (token_name, key)
    );
    CREATE INDEX tpc_idempotency_keys_transaction ON tpc_idempotency_keys (transaction_id);
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TABLE tpc_idempotency_keys, tpc_events, tpc_branches, tpc_transactions;
    DROP FUNCTION tpc_events_append_only();
    DROP TYPE tpc_branch_status, tpc_tx_status;
  `.execute(db);
}
