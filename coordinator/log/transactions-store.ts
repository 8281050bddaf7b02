import { sql } from 'kysely';
import {
  ConcurrentJoinError,
  type BeginOutcome,
  type BeginRecord,
  type JoinedBranchRecord,
  type JoinRecord,
  type LoggedTransaction,
  type TransactionLog,
  type TransitionRecord,
} from '../engine/log-port.ts';
import type { Failpoints } from '../engine/failpoints.ts';
import { BeginWriter } from './begin-writer.ts';
import type { GroupCommitObserver } from './group-commit.ts';
import type { LogDb } from './log-database.ts';
import { loggedFrom, TRANSACTION_COLUMNS, type TransactionRow } from './transaction-read.ts';
import { UnwrittenError } from '../errors.ts';
import { FirstChangeWriter } from './first-change-writer.ts';
import { TransitionWriter } from './transition-writer.ts';
import { certainlyUnwritten } from './unwritten.ts';

export type { BeginOutcome, BeginRecord, BranchUpdate, JoinedBranchRecord, JoinRecord, TransitionRecord } from '../engine/log-port.ts';

// 23505 (unique_violation): a join of the same resource won the race; the next try finds its branch.
const RACED = '23505';

/** What a write resolves to for its caller: a state change answers nothing. */
function nothing(): void {}

/**
 * The transaction aggregate of the log. A happy-path transaction is one lean row (migration 0005)
 * written twice: inserted at its decision (its begin record folded in, see engine/deferred-begin.ts),
 * then completed; one that runs longer is begun first. Each write is shared with concurrent ones
 * (group commit).
 */
export class TransactionsStore implements TransactionLog {
  readonly #transitions: TransitionWriter;
  readonly #begins: BeginWriter;
  readonly #firstChanges: FirstChangeWriter;

  constructor(
    private readonly db: LogDb,
    observer?: GroupCommitObserver,
    failpoints?: Failpoints,
  ) {
    this.#transitions = new TransitionWriter(db, observer, failpoints);
    this.#begins = new BeginWriter(db, observer);
    this.#firstChanges = new FirstChangeWriter(db, observer, failpoints);
  }

  /** The begin record: a lean row, forced only with an idempotency key (see BeginWriter). */
  begin(record: BeginRecord): Promise<BeginOutcome> {
    return this.#begins.write(record);
  }

  /**
   * One guarded state change: `UPDATE … WHERE id AND status = from`, with its branch updates and
   * its event in the same statement. Zero rows means another process moved first: StaleStateError.
   * Whether from → to is allowed is the engine's to check (engine/state-changes.ts), before this.
   */
  transition(record: TransitionRecord): Promise<void> {
    // Not an async function: one reaction per state change, not a function's promise and an await
    // on top of it (issue 13).
    let written: Promise<unknown>;
    try {
      if (!record.insert) return this.#transitions.write(record).then(nothing);
      written = this.#firstChanges.write({ ...record, insert: record.insert });
    } catch (err) {
      // A record the writers cannot even build fails its caller as a rejected write would.
      return Promise.reject(err);
    }
    // The transaction's first write: one that certainly failed leaves no trace of it anywhere, and
    // its driver, told so, rolls back at once (as for a failed begin record) instead of reading back.
    return written.then(nothing, (err: unknown) => {
      throw certainlyUnwritten(err) ? new UnwrittenError(record.id, err) : err;
    });
  }

  /** Writes the state changes queued for group commit; later ones are refused (the service is stopping). */
  async close(): Promise<void> {
    await Promise.all([this.#begins.close(), this.#firstChanges.close(), this.#transitions.close()]);
  }

  /**
   * Adds a branch on `resource` to an active, interactive transaction before its deadline, or
   * returns the branch it already has there. One statement: the compare-and-set on the
   * transaction's row (status = 'active') takes its row lock, so a concurrent decision either
   * comes after and sees the new branch, or comes first and the join finds nothing to join.
   * Forced: the gid goes to another service, which prepares under it at once. If the log lost
   * the join in a crash, a commit decision taken afterwards would not have checked that branch.
   * Returns null when there is no such transaction to join; the caller reads the log to say why.
   */
  async joinBranch(record: JoinRecord): Promise<JoinedBranchRecord | null> {
    // A join of the same resource racing this one may win the unique index: this statement then
    // fails as a whole (no counter bumped), and the next try finds the winner's branch.
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#joinOnce(record);
      } catch (err) {
        if ((err as { code?: string }).code !== RACED) throw err;
        if (attempt >= 3) throw new ConcurrentJoinError(record.id);
      }
    }
  }

  async #joinOnce(r: JoinRecord): Promise<JoinedBranchRecord | null> {
    const lean = await this.#joinLean(r);
    return lean === 'not lean' ? this.#joinClassic(r) : lean;
  }

  /**
   * A lean row's join appends the branch to the row's own array. Two joins of one resource racing:
   * the second waits on the row lock, then Postgres re-checks its WHERE on the row the first wrote,
   * whose branches now hold the resource; it writes nothing and says so, and the next try returns
   * the winner's branch.
   */
  async #joinLean(r: JoinRecord): Promise<JoinedBranchRecord | null | 'not lean'> {
    const resource = JSON.stringify([{ resource: r.resource }]);
    const result = await sql<JoinedBranchRecord & { lean: boolean; raced: boolean }>`
      WITH tx AS (
        SELECT id, deadline, branches FROM tpc_transactions WHERE id = ${r.id}::uuid AND branches IS NOT NULL
      ), open AS (
        SELECT * FROM tx WHERE EXISTS (SELECT 1 FROM tpc_transactions WHERE id = ${r.id}::uuid AND status = 'active' AND deadline > now() AND interactive)
      ), existing AS (
        SELECT (b->>'index')::int AS index, b->>'gid' AS gid, open.deadline FROM open, jsonb_array_elements(open.branches) AS b WHERE b->>'resource' = ${r.resource}
      ), t AS (
        UPDATE tpc_transactions SET branch_count = branch_count + 1, updated_at = now(),
          branches = branches || jsonb_build_array(jsonb_build_object('index', branch_count, 'resource', ${r.resource}::text, 'gid', ${r.gidPrefix}::text || branch_count, 'status', 'active'))
        WHERE id = (SELECT id FROM open) AND status = 'active' AND deadline > now() AND interactive
          AND NOT EXISTS (SELECT 1 FROM existing) AND NOT branches @> ${resource}::jsonb
        RETURNING id, deadline, branch_count - 1 AS index, ${r.gidPrefix}::text || (branch_count - 1) AS gid
      ), e AS (
        INSERT INTO tpc_events (transaction_id, kind, actor, detail)
        SELECT t.id, 'branch_joined', ${r.actor}, jsonb_build_object('resource', ${r.resource}::text, 'index', t.index) FROM t
      )
      SELECT index, gid, deadline, true AS created, true AS lean, false AS raced FROM t
      UNION ALL
      SELECT index, gid, deadline, false, true, false FROM existing
      UNION ALL
      SELECT NULL, NULL, NULL, NULL, EXISTS (SELECT 1 FROM tx), EXISTS (SELECT 1 FROM open)
      WHERE NOT EXISTS (SELECT 1 FROM t) AND NOT EXISTS (SELECT 1 FROM existing)
    `.execute(this.db.forced);
    const row = result.rows[0];
    if (!row) return null;
    if (row.index !== null) return { index: row.index, gid: row.gid, deadline: row.deadline, created: row.created };
    if (!row.lean) return 'not lean';
    // Open, yet neither joined nor found: a join of the same resource won the row lock (see above).
    if (row.raced) throw Object.assign(new Error(`a concurrent join of ${r.resource} to ${r.id}`), { code: RACED });
    return null;
  }

  /** A join to a row begun by a revision before the lean log (a rolling upgrade): its branches are rows of tpc_branches. */
  async #joinClassic(r: JoinRecord): Promise<JoinedBranchRecord | null> {
    const result = await sql<JoinedBranchRecord>`
      WITH tx AS (
        SELECT id, deadline FROM tpc_transactions
        WHERE id = ${r.id}::uuid AND status = 'active' AND deadline > now() AND branches IS NULL
          AND EXISTS (SELECT 1 FROM tpc_events e WHERE e.transaction_id = ${r.id}::uuid AND e.kind = 'begun' AND e.detail @> '{"interactive": true}')
      ), existing AS (
        SELECT b.index, b.gid, tx.deadline FROM tpc_branches b JOIN tx ON b.transaction_id = tx.id WHERE b.resource = ${r.resource}
      ), t AS (
        -- GREATEST: a transaction begun by a coordinator from before branch_count (a rolling upgrade)
        -- has 0 there; its branches' count is then the next index. Otherwise the row's own counter,
        -- re-read under the row lock, is the one that cannot be stale.
        UPDATE tpc_transactions SET branch_count = GREATEST(branch_count, (SELECT count(*) FROM tpc_branches WHERE transaction_id = ${r.id}::uuid)) + 1, updated_at = now()
        WHERE id = (SELECT id FROM tx) AND status = 'active' AND deadline > now() AND NOT EXISTS (SELECT 1 FROM existing)
        RETURNING id, deadline, branch_count - 1 AS index
      ), b AS (
        INSERT INTO tpc_branches (transaction_id, index, resource, gid)
        SELECT t.id, t.index, ${r.resource}, ${r.gidPrefix}::text || t.index FROM t
        RETURNING index, gid
      ), e AS (
        INSERT INTO tpc_events (transaction_id, kind, actor, detail)
        SELECT t.id, 'branch_joined', ${r.actor}, jsonb_build_object('resource', ${r.resource}::text, 'index', t.index) FROM t
      )
      SELECT b.index, b.gid, t.deadline, true AS created FROM b, t
      UNION ALL
      SELECT index, gid, deadline, false AS created FROM existing
    `.execute(this.db.forced);
    return result.rows[0] ?? null;
  }

  /** An audit event that goes with no state change (an operator's refused or repeated action). */
  async appendEvent(id: string, kind: string, actor: string | null, detail: Record<string, unknown>): Promise<void> {
    await this.db.forced
      .insertInto('tpc_events')
      .values({ transaction_id: id, kind, actor, detail: JSON.stringify(detail) })
      .execute();
  }

  /**
   * Who may act on a transaction: its branches' resources and the token that began it (the
   * `submitted_by` of its begin record), or null when there is no such transaction. One read, so the
   * owner check costs the commit path nothing beyond the access check it already had.
   */
  async accessOf(id: string): Promise<{ resources: string[]; owner: string | null } | null> {
    // Prepared: every commit, abort and join of an interactive transaction asks it first.
    const query = sql<{ resources: string[]; owner: string | null }>`
      SELECT coalesce(array_agg(b.resource ORDER BY b.index) FILTER (WHERE b.resource IS NOT NULL), '{}') AS resources, t.submitted_by AS owner
      FROM tpc_transactions t LEFT JOIN tpc_branch_rows b ON b.transaction_id = t.id
      WHERE t.id = ${id}::uuid GROUP BY t.id`.compile(this.db.relaxed);
    const r = await this.db.prepared<{ resources: string[]; owner: string | null }>('relaxed', 'tpc_access', query);
    return r.rows[0] ?? null;
  }

  /** The whole transaction: its branches whichever row holds them, its written events and, for a lean row, its derived ones. */
  async load(id: string): Promise<LoggedTransaction | null> {
    // A named prepared statement: its joins cost the server about 0.4 ms to plan against 0.1 ms to
    // run, on every GET and on every lease that found another driver (measured with
    // pg_stat_statements during a backlog's drain).
    const found = await this.db.prepared<TransactionRow>('forced', 'tpc_load', { sql: LOAD_SQL, parameters: [id] });
    const row = found.rows[0];
    return row ? loggedFrom(row) : null;
  }
}

const LOAD_SQL = `SELECT ${TRANSACTION_COLUMNS} FROM tpc_transactions t WHERE t.id = $1::uuid`;
