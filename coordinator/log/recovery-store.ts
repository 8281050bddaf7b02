import { sql } from 'kysely';
import type { AbandonedRecord, AuditEntry, LoggedTransaction, RecoveryLog, SettledBranch } from '../engine/log-port.ts';
import type { TxStatus } from '../engine/states.ts';
import type { LogDb } from './log-database.ts';
import type { GroupCommitObserver } from './group-commit.ts';
import { LeaseWriter } from './lease-writer.ts';

/**
 * The log queries of recovery: leases (who drives a transaction), attempts and the in-doubt flag,
 * the scans of reconciliation and the retention prune.
 */
export class RecoveryStore implements RecoveryLog {
  readonly #leases: LeaseWriter;

  constructor(
    private readonly db: LogDb,
    observer?: GroupCommitObserver,
  ) {
    this.#leases = new LeaseWriter(db, observer);
  }

  /**
   * Takes the lease on an unfinished transaction for `leaseMs`, if nobody holds it: no driver (handed
   * over), this driver already, or a lease run out (its driver died or stalled). Every later state
   * change checks `driver = me`, so a driver that lost its lease cannot write over the new one.
   * Concurrent leases share one statement, which also reads each transaction (lease-writer.ts).
   */
  acquire(id: string, driver: string, leaseMs: number, options: { takeOverUndecided?: boolean } = {}): Promise<LoggedTransaction | null> {
    // takeOverUndecided (operators only): an undecided transaction's lease may be taken from a live
    // lease holder, because the decision itself is a compare-and-set on status = 'active': whichever
    // of the two writes it first wins, and the other, fenced out, follows the log.
    return this.#leases.take({ id, driver, leaseMs, takeOverUndecided: options.takeOverUndecided ?? false });
  }

  /** Takes the leases queued; later ones are refused (the service is stopping). */
  close(): Promise<void> {
    return this.#leases.close();
  }

  /** Hands the transaction over: the next acquire by anyone succeeds at once. */
  async release(id: string, driver: string): Promise<void> {
    await sql`UPDATE tpc_transactions SET driver = NULL, lease_until = NULL WHERE id = ${id}::uuid AND driver = ${driver}`.execute(this.db.relaxed);
  }

  /**
   * Counts a failed phase-2 attempt. From `inDoubtAfter` attempts on, the transaction is flagged in
   * doubt for operators (and an event says when it became so). Returns whether it is now in doubt.
   */
  async recordFailedAttempt(id: string, errorOf: unknown, inDoubtAfter: number, settled: readonly SettledBranch[] = []): Promise<boolean> {
    // The settled branches' statuses only ever move from prepared (or active, under abort) to the
    // decided outcome, which a branch that finished as decided keeps, whoever drives next: so this
    // needs no lease, and a status already final is left as it is.
    // Prepared: in an outage every job attempt ends here.
    const done = JSON.stringify(settled);
    const error = JSON.stringify(errorOf);
    const query = sql<{ in_doubt: boolean }>`
      WITH before AS (SELECT in_doubt FROM tpc_transactions WHERE id = ${id}::uuid),
      t AS (
        UPDATE tpc_transactions SET attempts = attempts + 1, last_error = ${error}::jsonb,
          in_doubt = in_doubt OR attempts + 1 >= ${inDoubtAfter}, updated_at = now(),
          branches = CASE WHEN branches IS NULL OR ${done}::jsonb = '[]'::jsonb THEN branches ELSE (
            SELECT jsonb_agg(CASE WHEN o.value->>'status' IN ('prepared', 'active') THEN o.value || coalesce(u.value, '{}'::jsonb) ELSE o.value END ORDER BY o.ord)
            FROM jsonb_array_elements(branches) WITH ORDINALITY AS o(value, ord)
            LEFT JOIN jsonb_array_elements(${done}::jsonb) AS u(value) ON u.value->'index' = o.value->'index') END
        WHERE id = ${id}::uuid AND status NOT IN ('committed', 'aborted')
        RETURNING id, in_doubt, attempts, branches IS NULL AS classic
      ), b AS (
        UPDATE tpc_branches AS br SET status = x.status::tpc_branch_status
        FROM t, jsonb_to_recordset(${done}::jsonb) AS x(index int, status text)
        WHERE t.classic AND br.transaction_id = t.id AND br.index = x.index AND br.status IN ('prepared', 'active')
      ), e AS (
        INSERT INTO tpc_events (transaction_id, kind, detail)
        SELECT t.id, 'in_doubt', jsonb_build_object('attempts', t.attempts, 'error', ${error}::jsonb)
        FROM t, before WHERE t.in_doubt AND NOT before.in_doubt
      )
      SELECT t.in_doubt FROM t
    `.compile(this.db.relaxed);
    const r = await this.db.prepared('relaxed', 'tpc_failed_attempt', query);
    return r.rows[0]?.in_doubt ?? false;
  }

  /**
   * Flags in doubt every decided transaction of the namespace still unfinished `olderThanMs` after
   * its decision, in one statement, whatever its count of attempts: in a long outage with a large
   * backlog each transaction's job runs seldom, so counting attempts alone would show operators a
   * fraction of what is stuck. Returns how many were flagged now.
   */
  async flagOverdue(namespace: string, olderThanMs: number): Promise<number> {
    const r = await sql<{ flagged: number }>`
      WITH t AS (
        UPDATE tpc_transactions SET in_doubt = true, updated_at = now()
        WHERE namespace = ${namespace} AND NOT finished AND status IN ('committing', 'aborting')
          AND NOT in_doubt AND decided_at < now() - make_interval(secs => ${olderThanMs / 1000})
        RETURNING id, attempts, decided_at, last_error
      ), e AS (
        INSERT INTO tpc_events (transaction_id, kind, detail)
        SELECT t.id, 'in_doubt', jsonb_build_object('attempts', t.attempts, 'error', t.last_error, 'unfinishedSince', t.decided_at)
        FROM t
      )
      SELECT count(*)::int AS flagged FROM t
    `.execute(this.db.relaxed);
    return r.rows[0]?.flagged ?? 0;
  }

  /** Unfinished transactions of the namespace that nobody holds a live lease on: work that may have been lost. */
  async unattended(namespace: string, limit: number): Promise<{ id: string; status: TxStatus; deadline: Date }[]> {
    const r = await sql<{ id: string; status: TxStatus; deadline: Date }>`
      SELECT id, status, deadline FROM tpc_transactions
      WHERE namespace = ${namespace} AND NOT finished
        AND (lease_until IS NULL OR lease_until < now())
      ORDER BY deadline LIMIT ${limit}
    `.execute(this.db.forced);
    return r.rows;
  }

  /** What the log knows of each of `ids`: its status, and whether a driver holds a live lease on it. */
  async abandon(r: AbandonedRecord): Promise<'created' | TxStatus> {
    const branches = JSON.stringify(r.branches.map((b) => ({ index: b.index, resource: b.resource, gid: b.gid, status: 'aborted' })));
    // One statement: the second read sees the snapshot from before the insert, so it returns the
    // row that made the insert do nothing (a decision that won the race), or nothing.
    const result = await sql<{ created: number; status: TxStatus | null }>`
      WITH t AS (
        INSERT INTO tpc_transactions (id, namespace, status, deadline, driver, lease_until, branch_count, branches, interactive, version, error,
          created_at, decided_at, completed_at)
        VALUES (${r.id}::uuid, ${r.namespace}, 'aborted', ${r.deadline}, ${r.driver}, now(), ${r.branches.length}, ${branches}::jsonb, false, 1,
          ${JSON.stringify(r.reason)}::jsonb, LEAST(${r.deadline}::timestamptz, now()), now(), now())
        ON CONFLICT (id) DO NOTHING
        RETURNING id
      ), e AS (
        INSERT INTO tpc_events (transaction_id, kind, actor, detail)
        SELECT id, 'aborted', NULL, ${JSON.stringify({ outcome: 'aborted', by: 'recovery', reason: r.reason })}::jsonb FROM t
      )
      SELECT (SELECT count(*) FROM t)::int AS created, (SELECT status FROM tpc_transactions WHERE id = ${r.id}::uuid) AS status
    `.execute(this.db.forced);
    const row = result.rows[0]!;
    // No row either way (it vanished between the two): claim nothing, the next pass looks again.
    return row.created === 1 ? 'created' : (row.status ?? 'active');
  }

  async statuses(ids: string[]): Promise<Map<string, { status: TxStatus; attended: boolean }>> {
    if (ids.length === 0) return new Map();
    const r = await sql<{ id: string; status: TxStatus; attended: boolean }>`
      SELECT id, status, (driver IS NOT NULL AND lease_until >= now()) AS attended
      FROM tpc_transactions WHERE id = ANY(${ids}::uuid[])
    `.execute(this.db.forced);
    return new Map(r.rows.map((row) => [row.id, { status: row.status, attended: row.attended }]));
  }

  async waitingOn(namespace: string, resource: string, after: string | null, limit: number): Promise<string[]> {
    // The row's own branches (a lean row) or its tpc_branches (an earlier schema's), not the view
    // that unites them: an EXISTS on the view became a semi-join that expanded every row's branches
    // (565 ms at 300 000 rows, against 0.5 ms from the unfinished rows' index this way).
    const r = await sql<{ id: string }>`
      SELECT t.id FROM tpc_transactions t
      WHERE t.namespace = ${namespace} AND NOT t.finished AND t.status IN ('committing', 'aborting')
        AND (t.lease_until IS NULL OR t.lease_until < now())
        AND (${after}::uuid IS NULL OR t.id > ${after}::uuid)
        AND (t.branches @> jsonb_build_array(jsonb_build_object('resource', ${resource}::text))
          OR EXISTS (SELECT 1 FROM tpc_branches b WHERE b.transaction_id = t.id AND b.resource = ${resource}::text))
      ORDER BY t.id LIMIT ${limit}
    `.execute(this.db.relaxed);
    return r.rows.map((row) => row.id);
  }

  /** How many transactions of the namespace are in doubt, and how many carry a heuristic outcome. */
  async counts(namespace: string): Promise<{ inDoubt: number; heuristic: number }> {
    const r = await sql<{ in_doubt: number; heuristic: number }>`
      SELECT (SELECT count(*) FROM tpc_transactions WHERE in_doubt AND namespace = ${namespace})::int AS in_doubt,
             (SELECT count(*) FROM tpc_transactions WHERE heuristic AND namespace = ${namespace})::int AS heuristic
    `.execute(this.db.forced);
    return { inDoubt: r.rows[0]?.in_doubt ?? 0, heuristic: r.rows[0]?.heuristic ?? 0 };
  }

  /** An operator action on something that is not a logged transaction (an orphan branch). */
  async audit(entry: AuditEntry): Promise<void> {
    await this.db.forced
      .insertInto('tpc_audit')
      .values({
        actor: entry.actor,
        action: entry.action,
        resource: entry.resource,
        gid: entry.gid,
        transaction_id: entry.transactionId,
        reason: entry.reason,
        detail: JSON.stringify(entry.detail),
      })
      .execute();
  }

  /** Deletes finished transactions (with their branches, events and idempotency keys) older than `before`, in one batch. */
  async pruneBatch(before: Date, batchSize: number): Promise<number> {
    const r = await sql`
      DELETE FROM tpc_transactions WHERE id IN (
        SELECT id FROM tpc_transactions
        WHERE finished AND completed_at < ${before}
        LIMIT ${batchSize}
      )
    `.execute(this.db.relaxed);
    return Number(r.numAffectedRows ?? 0n);
  }
}
