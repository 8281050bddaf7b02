import { sql } from 'kysely';
import type { BeginOutcome, BeginRecord } from '../engine/log-port.ts';
import { UnavailableError } from '../errors.ts';
import { GroupCommit, type GroupCommitObserver } from './group-commit.ts';
import type { LogDb } from './log-database.ts';

// As the transitions' bounds (transition-writer.ts).
const MAX_BATCH = 64;
const MAX_QUEUED = 2_000;

/** A lean row's branches as first written: each active, with its gid. */
const activeBranches = (r: BeginRecord) => r.branches.map((b) => ({ index: b.index, resource: b.resource, gid: b.gid, status: 'active' }));
const branchesJson = (r: BeginRecord) => JSON.stringify(activeBranches(r));

/**
 * Begin records: one lean row each (migration 0005), with its branches in the row and no event
 * (the 'begun' event is derived from the row when read).
 */
export class BeginWriter {
  readonly #db: LogDb;
  readonly #unkeyed: GroupCommit<BeginRecord, BeginOutcome>;
  #batchSql: string | undefined;

  constructor(db: LogDb, observer?: GroupCommitObserver) {
    this.#db = db;
    this.#unkeyed = new GroupCommit({ name: 'begin', maxBatch: MAX_BATCH, maxQueued: MAX_QUEUED, observer, write: (records) => this.#batch(records) });
  }

  /**
   * Not forced, except with a key: an unkeyed record lost in a failover costs only its own
   * transaction (its driver rolls back, see TransactionRun), but a lost key would let a retry start
   * a second transaction while the first one's prepared branches, driven by a process that died
   * too, wait for the orphan timeout. Forced, the key reaches the synchronous standby before any
   * branch is touched (keyed requests await it anyway), so a retry always finds the first attempt.
   */
  async write(record: BeginRecord): Promise<BeginOutcome> {
    if (!record.idempotency) return this.#unkeyed.submit(record);
    // The key was seen taken, then not found by the lookup (its transaction pruned in between, or
    // the two reads met different servers across a failover): the insert is tried again.
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.#once(record);
      if (outcome) return outcome;
      if (attempt >= 3)
        throw new UnavailableError('the Idempotency-Key could not be read back from the transaction log; nothing was done', { retryAfterSeconds: 1 });
    }
  }

  close(): Promise<void> {
    return this.#unkeyed.close();
  }

  /**
   * Unkeyed begin records of concurrent requests in one statement (group commit); one alone is
   * written with the single-record statement. No key, so a batch either writes them all or fails
   * each of its callers, as its own write would have. A deferred record (engine/deferred-begin.ts)
   * may find recovery's tombstone in its place, a transaction whose deadline passed before it
   * reached the log: it is left there (`ON CONFLICT DO NOTHING`), and the driver's decision, a
   * compare-and-set from active, then finds the tombstone and follows it.
   */
  async #batch(records: BeginRecord[]): Promise<BeginOutcome[]> {
    if (records.length === 1) return [(await this.#once(records[0]!))!];
    const rows = JSON.stringify(
      records.map((r) => ({
        id: r.id,
        namespace: r.namespace,
        deadline: r.deadline,
        submitted_by: r.submittedBy,
        driver: r.driver,
        branches: activeBranches(r),
        timeout_ms: r.timeoutMs,
        interactive: r.interactive ?? false,
      })),
    );
    // Its only parameter is the batch: the text is compiled once, not per batch.
    this.#batchSql ??= sql`
      INSERT INTO tpc_transactions (id, namespace, deadline, submitted_by, driver, lease_until, branch_count, branches, timeout_ms, interactive, version)
      SELECT id, namespace, deadline, submitted_by, driver, deadline, jsonb_array_length(branches), branches, timeout_ms, interactive, 1
      FROM jsonb_to_recordset(${rows}::jsonb) AS x(id uuid, namespace text, deadline timestamptz, submitted_by text, driver text,
        branches jsonb, timeout_ms int, interactive boolean)
      ON CONFLICT (id) DO NOTHING
    `.compile(this.#db.relaxed).sql;
    await this.#db.prepared('relaxed', 'tpc_begin_batch', { sql: this.#batchSql, parameters: [rows] });
    return records.map(() => ({ created: true }));
  }

  async #once(record: BeginRecord): Promise<BeginOutcome | null> {
    const key = record.idempotency;
    const query = sql<{ created: number }>`
      WITH k AS (
        INSERT INTO tpc_idempotency_keys (token_name, key, request_hash, transaction_id)
        SELECT ${key?.tokenName ?? null}, ${key?.key ?? null}, ${key?.requestHash ?? null}, ${record.id}::uuid
        WHERE ${key !== undefined}
        ON CONFLICT DO NOTHING
        RETURNING transaction_id
      ), t AS (
        INSERT INTO tpc_transactions (id, namespace, deadline, submitted_by, driver, lease_until, branch_count, branches, timeout_ms, interactive, version)
        SELECT ${record.id}::uuid, ${record.namespace}, ${record.deadline}, ${record.submittedBy}, ${record.driver}, ${record.deadline},
          ${record.branches.length}, ${branchesJson(record)}::jsonb, ${record.timeoutMs}::int, ${record.interactive ?? false}, 1
        WHERE ${key === undefined} OR EXISTS (SELECT 1 FROM k)
        ON CONFLICT (id) DO NOTHING
        RETURNING id
      )
      SELECT (SELECT count(*) FROM t)::int AS created
    `.compile(this.#db.relaxed);
    const result = await this.#db.prepared(key ? 'forced' : 'relaxed', 'tpc_begin', query);
    if (result.rows[0]?.created === 1 || !key) return { created: true };
    const existing = await this.#db.forced
      .selectFrom('tpc_idempotency_keys')
      .select(['transaction_id', 'request_hash'])
      .where('token_name', '=', key.tokenName)
      .where('key', '=', key.key)
      .executeTakeFirst();
    return existing ? { created: false, existingId: existing.transaction_id, requestHash: existing.request_hash } : null;
  }
}
