import { sql } from 'kysely';
import { jsonArrayFrom } from 'kysely/helpers/postgres';
import { UnavailableError } from '../errors.ts';
import { canTransition, type BranchStatus, type TxStatus } from '../engine/states.ts';
import type { Failpoints } from '../engine/failpoints.ts';
import { GroupCommit, type GroupCommitObserver } from './group-commit.ts';
import type { LogDb } from './log-database.ts';
import { TransitionWriter } from './transition-writer.ts';

export interface BeginRecord {
  id: string;
  namespace: string;
  deadline: Date;
  submittedBy: string | null;
  /** The instance driving it; its lease runs until the deadline (see RecoveryStore.acquire). */
  driver: string;
  branches: { index: number; resource: string; gid: string }[];
  detail: Record<string, unknown>;
  idempotency?: { tokenName: string; key: string; requestHash: string };
}

export type BeginOutcome =
  | { created: true }
  | { created: false; existingId: string; requestHash: string };

export interface BranchUpdate {
  index: number;
  status: BranchStatus;
  /** How the branch really ended when that was against the decision. */
  heuristic?: string;
  xid?: string | null;
  readOnly?: boolean;
  results?: unknown;
  error?: unknown;
}

export interface TransitionRecord {
  id: string;
  from: TxStatus;
  to: TxStatus;
  /** Wait for the WAL flush: required for the commit decision, the commit point. */
  forced: boolean;
  /** Fencing: the change applies only while this instance holds the transaction's lease. */
  driver: string;
  onePhase?: boolean;
  /** A branch was found ended against the decision: flagged for operators, never a clean success. */
  heuristic?: boolean;
  error?: unknown;
  branches?: BranchUpdate[];
  /**
   * The change applies only if the transaction has at most this many branches: the ones the
   * caller checked. A branch joined since then (POST …/branches) makes it fail with StaleStateError.
   */
  branchesChecked?: number;
  event: { kind: string; actor?: string | null; detail?: Record<string, unknown> };
}

export interface JoinRecord {
  id: string;
  resource: string;
  /** The gid of the new branch is this followed by its index (see engine/gid.ts). */
  gidPrefix: string;
  actor: string | null;
}

export interface JoinedBranchRecord {
  index: number;
  gid: string;
  deadline: Date;
  /** False when the resource already had a branch in the transaction: that one is returned. */
  created: boolean;
}

export interface StoredBranch {
  index: number;
  resource: string;
  gid: string;
  status: BranchStatus;
  xid: string | null;
  read_only: boolean;
  results: unknown;
  error: unknown;
  heuristic: string | null;
  last_error: unknown;
}

export interface StoredEvent {
  at: string;
  kind: string;
  actor: string | null;
  detail: Record<string, unknown>;
}

export interface StoredTransaction {
  id: string;
  namespace: string;
  status: TxStatus;
  one_phase: boolean;
  deadline: Date;
  submitted_by: string | null;
  error: unknown;
  created_at: Date;
  decided_at: Date | null;
  completed_at: Date | null;
  driver: string | null;
  lease_until: Date | null;
  attempts: number;
  last_error: unknown;
  in_doubt: boolean;
  heuristic: boolean;
  branches: StoredBranch[];
  events: StoredEvent[];
}


/**
 * The transaction aggregate of the log. Each write is one statement (a data-modifying CTE), so the
 * happy path costs three statements: begin, decision, completion.
 */
export class TransactionsStore {
  readonly #transitions: TransitionWriter;
  readonly #unkeyedBegins: GroupCommit<BeginRecord, BeginOutcome>;

  constructor(private readonly db: LogDb, observer?: GroupCommitObserver, failpoints?: Failpoints) {
    this.#transitions = new TransitionWriter(db, observer, failpoints);
    // Bounds as the transitions' (transition-writer.ts).
    this.#unkeyedBegins = new GroupCommit({ name: 'begin', maxBatch: 64, maxQueued: 2_000, observer, write: (records) => this.#beginBatch(records) });
  }

  /**
   * The begin record with its branches, its first event and, if given, the idempotency key: one
   * statement. Not forced, except with a key: an unkeyed record lost in a failover costs only its
   * own transaction (its driver rolls back, see TransactionRun), but a lost key would let a retry
   * start a second transaction while the first one's prepared branches, driven by a process that
   * died too, wait for the orphan timeout. Forced, the key reaches the synchronous standby before
   * any branch is touched (keyed requests await it anyway), so a retry always finds the first attempt.
   */
  async begin(record: BeginRecord): Promise<BeginOutcome> {
    if (!record.idempotency) return this.#unkeyedBegins.submit(record);
    // The key was seen taken, then not found by the lookup (its transaction pruned in between, or
    // the two reads met different servers across a failover): the insert is tried again.
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.#beginOnce(record);
      if (outcome) return outcome;
      if (attempt >= 3) throw new UnavailableError('the Idempotency-Key could not be read back from the transaction log; nothing was done', { retryAfterSeconds: 1 });
    }
  }

  /**
   * Unkeyed begin records of concurrent requests in one statement (group commit); one alone is
   * written with the single-record statement. They cannot conflict (fresh ids, no key), so a
   * batch either writes them all or fails each of its callers, as its own write would have.
   */
  async #beginBatch(records: BeginRecord[]): Promise<BeginOutcome[]> {
    if (records.length === 1) return [(await this.#beginOnce(records[0]!))!];
    const rows = JSON.stringify(records.map((r) => ({
      id: r.id, namespace: r.namespace, deadline: r.deadline, submitted_by: r.submittedBy, driver: r.driver,
      branch_count: r.branches.length, branches: r.branches, detail: r.detail,
    })));
    const query = sql<{ created: number }>`
      WITH x AS (
        SELECT * FROM jsonb_to_recordset(${rows}::jsonb) AS x(id uuid, namespace text, deadline timestamptz,
          submitted_by text, driver text, branch_count int, branches jsonb, detail jsonb)
      ), t AS (
        INSERT INTO tpc_transactions (id, namespace, deadline, submitted_by, driver, lease_until, branch_count)
        SELECT id, namespace, deadline, submitted_by, driver, deadline, branch_count FROM x
        RETURNING id
      ), b AS (
        INSERT INTO tpc_branches (transaction_id, index, resource, gid)
        SELECT x.id, y.index, y.resource, y.gid
        FROM x, jsonb_to_recordset(x.branches) AS y(index int, resource text, gid text)
      ), e AS (
        INSERT INTO tpc_events (transaction_id, kind, actor, detail)
        SELECT x.id, 'begun', x.submitted_by, x.detail FROM x
      )
      SELECT (SELECT count(*) FROM t)::int AS created
    `.compile(this.db.relaxed);
    const result = await this.db.prepared('relaxed', 'tpc_begin_batch', query);
    if (result.rows[0]?.created !== records.length) throw new Error(`a batch of ${records.length} begin records wrote ${result.rows[0]?.created}`);
    return records.map(() => ({ created: true }));
  }

  async #beginOnce(record: BeginRecord): Promise<BeginOutcome | null> {
    const key = record.idempotency;
    const branches = JSON.stringify(record.branches);
    const query = sql<{ created: number }>`
      WITH k AS (
        INSERT INTO tpc_idempotency_keys (token_name, key, request_hash, transaction_id)
        SELECT ${key?.tokenName ?? null}, ${key?.key ?? null}, ${key?.requestHash ?? null}, ${record.id}::uuid
        WHERE ${key !== undefined}
        ON CONFLICT DO NOTHING
        RETURNING transaction_id
      ), t AS (
        INSERT INTO tpc_transactions (id, namespace, deadline, submitted_by, driver, lease_until, branch_count)
        SELECT ${record.id}::uuid, ${record.namespace}, ${record.deadline}, ${record.submittedBy}, ${record.driver}, ${record.deadline}, ${record.branches.length}
        WHERE ${key === undefined} OR EXISTS (SELECT 1 FROM k)
        RETURNING id
      ), b AS (
        INSERT INTO tpc_branches (transaction_id, index, resource, gid)
        SELECT t.id, x.index, x.resource, x.gid
        FROM t, jsonb_to_recordset(${branches}::jsonb) AS x(index int, resource text, gid text)
      ), e AS (
        INSERT INTO tpc_events (transaction_id, kind, actor, detail)
        SELECT t.id, 'begun', ${record.submittedBy}, ${JSON.stringify(record.detail)}::jsonb FROM t
      )
      SELECT (SELECT count(*) FROM t)::int AS created
    `.compile(this.db.relaxed);
    const result = await this.db.prepared(key ? 'forced' : 'relaxed', 'tpc_begin', query);
    if (result.rows[0]?.created === 1 || !key) return { created: true };
    const existing = await this.db.forced
      .selectFrom('tpc_idempotency_keys')
      .select(['transaction_id', 'request_hash'])
      .where('token_name', '=', key.tokenName)
      .where('key', '=', key.key)
      .executeTakeFirst();
    return existing ? { created: false, existingId: existing.transaction_id, requestHash: existing.request_hash } : null;
  }

  /**
   * One guarded state change: `UPDATE … WHERE id AND status = from`, with its branch updates and
   * its event in the same statement. Zero rows means another process moved first: StaleStateError.
   */
  async transition(record: TransitionRecord): Promise<void> {
    if (!canTransition(record.from, record.to)) {
      throw new Error(`illegal transition ${record.from} → ${record.to} for ${record.id}`);
    }
    await this.#transitions.write(record);
  }

  /** Writes the state changes queued for group commit; later ones are refused (the service is stopping). */
  async close(): Promise<void> {
    await Promise.all([this.#unkeyedBegins.close(), this.#transitions.close()]);
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
        if ((err as { code?: string }).code !== '23505' || attempt >= 3) throw err;
      }
    }
  }

  async #joinOnce(r: JoinRecord): Promise<JoinedBranchRecord | null> {
    const result = await sql<JoinedBranchRecord>`
      WITH tx AS (
        SELECT id, deadline FROM tpc_transactions
        WHERE id = ${r.id}::uuid AND status = 'active' AND deadline > now()
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
    await this.db.forced.insertInto('tpc_events').values({ transaction_id: id, kind, actor, detail: JSON.stringify(detail) }).execute();
  }

  /**
   * Who may act on a transaction: its branches' resources and the token that began it (the
   * `submitted_by` of its begin record), or null when there is no such transaction. One read, so the
   * owner check costs the commit path nothing beyond the access check it already had.
   */
  async accessOf(id: string): Promise<{ resources: string[]; owner: string | null } | null> {
    const r = await sql<{ resources: string[]; owner: string | null }>`
      SELECT coalesce(array_agg(b.resource ORDER BY b.index) FILTER (WHERE b.resource IS NOT NULL), '{}') AS resources, t.submitted_by AS owner
      FROM tpc_transactions t LEFT JOIN tpc_branches b ON b.transaction_id = t.id
      WHERE t.id = ${id}::uuid GROUP BY t.id`.execute(this.db.relaxed);
    return r.rows[0] ?? null;
  }

  async load(id: string): Promise<StoredTransaction | null> {
    const row = await this.db.forced
      .selectFrom('tpc_transactions as t')
      .selectAll('t')
      .select((eb) => [
        jsonArrayFrom(
          eb.selectFrom('tpc_branches as b')
            .select(['b.index', 'b.resource', 'b.gid', 'b.status', 'b.xid', 'b.read_only', 'b.results', 'b.error', 'b.heuristic', 'b.last_error'])
            .whereRef('b.transaction_id', '=', 't.id')
            .orderBy('b.index'),
        ).as('branches'),
        jsonArrayFrom(
          eb.selectFrom('tpc_events as e')
            .select(['e.at', 'e.kind', 'e.actor', 'e.detail'])
            .whereRef('e.transaction_id', '=', 't.id')
            .orderBy('e.id'),
        ).as('events'),
      ])
      .where('t.id', '=', id)
      .executeTakeFirst();
    return (row as unknown as StoredTransaction | undefined) ?? null;
  }
}
