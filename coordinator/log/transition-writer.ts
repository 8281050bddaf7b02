import { sql, type RawBuilder } from 'kysely';
import type { Failpoints } from '../engine/failpoints.ts';
import { StaleStateError } from '../errors.ts';
import { FINAL_TX_STATUSES, type TxStatus } from '../engine/states.ts';
import { GroupCommit, type GroupCommitObserver } from './group-commit.ts';
import type { LogDb } from './log-database.ts';
import type { TransitionRecord } from './transactions-store.ts';

const DECISIONS: readonly TxStatus[] = ['committing', 'aborting', 'preparing'];

/**
 * A lean row's branches with `updates` merged in: each update replaces the fields it names of the
 * branch with its index, in the row's order. The row's own branches are read, not rewritten from
 * the caller's memory, so a branch joined meanwhile is never dropped. When `whole` (a boolean
 * expression: TransitionRecord.branchesWhole) is given and true, and `updates` counts as many
 * branches as the row, they are taken as they stand: the merge was half of a completion's cost
 * to the log (about 30 µs of server CPU per row against 35 for the rest of the UPDATE, batches
 * of 20), and a whole list gives the same row.
 */
function branchesAfter(updates: RawBuilder<unknown>, current: RawBuilder<unknown> = sql`branches`, whole?: RawBuilder<unknown>): RawBuilder<unknown> {
  const merged = sql`(SELECT jsonb_agg(o.value || coalesce(u.value, '{}'::jsonb) ORDER BY o.ord)
    FROM jsonb_array_elements(${current}) WITH ORDINALITY AS o(value, ord)
    LEFT JOIN jsonb_array_elements(${updates}) AS u(value) ON u.value->'index' = o.value->'index')`;
  // Without `whole`, `updates` appears once: given as a parameter, each appearance is one more to parse.
  if (!whole) return merged;
  return sql`CASE WHEN ${whole} AND jsonb_array_length(${current}) = jsonb_array_length(${updates}) THEN ${updates} ELSE ${merged} END`;
}

/** One transition as the statement reads it (snake_case: the jsonb keys are the columns). */
export interface TransitionRow {
  id: string;
  from: TxStatus;
  to: TxStatus;
  driver: string;
  one_phase: boolean;
  heuristic: boolean;
  decides: boolean;
  completes: boolean;
  error: unknown;
  branches_checked: number | null;
  branches: Record<string, unknown>[];
  /** `branches` is every branch whole (TransitionRecord.branchesWhole): a lean row takes it as it stands. */
  whole: boolean;
  event_kind: string;
  event_actor: string | null;
  event_detail: Record<string, unknown>;
  /** A happy-path event: a lean row derives it from its timestamps (happy-path-events.ts), so it is not written. */
  derivable: boolean;
}

/** A branch update with its unset fields left out: merged into a lean row's branch, it changes only what it names. */
export function branchJson(b: NonNullable<TransitionRecord['branches']>[number]): Record<string, unknown> {
  // Built up rather than pruned with delete, which would leave V8 a slow dictionary object to serialize.
  const fields: Record<string, unknown> = { index: b.index };
  if (b.resource != null) fields.resource = b.resource;
  if (b.gid != null) fields.gid = b.gid;
  if (b.status != null) fields.status = b.status;
  if (b.xid != null) fields.xid = b.xid;
  if (b.readOnly != null) fields.read_only = b.readOnly;
  if (b.results != null) fields.results = b.results;
  if (b.error != null) fields.error = b.error;
  if (b.heuristic != null) fields.heuristic = b.heuristic;
  return fields;
}

/** A transition as its statements read it. */
export function transitionRow(record: TransitionRecord): TransitionRow {
  return {
    id: record.id,
    from: record.from,
    to: record.to,
    driver: record.driver,
    one_phase: record.onePhase ?? false,
    heuristic: record.heuristic ?? false,
    decides: DECISIONS.includes(record.to) || (record.from === 'active' && FINAL_TX_STATUSES.includes(record.to)),
    completes: FINAL_TX_STATUSES.includes(record.to),
    error: record.error === undefined ? null : record.error,
    branches_checked: record.branchesChecked ?? null,
    branches: (record.branches ?? []).map(branchJson),
    whole: record.branchesWhole ?? false,
    event_kind: record.event.kind,
    event_actor: record.event.actor ?? null,
    event_detail: record.event.detail ?? {},
    derivable: record.event.derivable ?? false,
  };
}

// 64 transitions per statement: a few hundred microseconds of server work, and few row locks held
// at once. 2000 waiting: about five seconds of commits at the benchmark's rate; beyond that the log
// is down or far behind, and a fast 503 serves a client better than a longer queue.
export const MAX_BATCH = 64;
export const MAX_QUEUED = 2_000;

// A driver's completion record follows its answer: only a read of the transaction from this
// instance, and shutdown, wait for it. Holding a free slot 10 ms for company about doubled those
// batches at 32 clients: the log's CPU per transfer 0.233 against 0.307 ms, the coordinator's 1.277
// against 1.423 ms (bench, alternating rounds, one run). Recovery's completions do not linger: a
// job waits on each, and a backlog of 10 000 then drained in 22.5 s instead of 12.6.
const LINGER_MS = 10;

/** #lean's statement; its branches as branchesAfter makes them. */
const LEAN_TRANSITION = `
  UPDATE tpc_transactions SET
    status = $2::tpc_tx_status,
    one_phase = one_phase OR $3::boolean,
    heuristic = heuristic OR $4::boolean,
    in_doubt = in_doubt AND NOT $5::boolean,
    error = COALESCE($6::jsonb, error),
    decided_at = CASE WHEN $7::boolean THEN now() ELSE decided_at END,
    completed_at = CASE WHEN $5::boolean THEN now() ELSE completed_at END,
    updated_at = now(),
    version = version + 1,
    branches = CASE WHEN $12::boolean AND jsonb_array_length(branches) = jsonb_array_length($8::jsonb) THEN $8::jsonb
      ELSE (SELECT jsonb_agg(o.value || coalesce(u.value, '{}'::jsonb) ORDER BY o.ord)
        FROM jsonb_array_elements(branches) WITH ORDINALITY AS o(value, ord)
        LEFT JOIN jsonb_array_elements($8::jsonb) AS u(value) ON u.value->'index' = o.value->'index') END
  WHERE id = $1::uuid AND status = $9::tpc_tx_status AND driver = $10 AND branches IS NOT NULL
    AND ($11::int IS NULL OR branch_count <= $11::int)`;

/**
 * The log's state changes, with group commit (DESIGN.md, "The hot path"): concurrent transitions
 * share one statement, one for forced writes (the decisions, whose flush is then shared too), one
 * for relaxed ones, and one for the relaxed ones that may linger (TransitionRecord.lingers). Every
 * transition stays a compare-and-set of its own (status = from, driver = me, the branches checked):
 * an item that matched no row fails alone with StaleStateError. A batch lost mid-flight fails each
 * of its callers with that error, as their own write would.
 */
export class TransitionWriter {
  readonly #db: LogDb;
  readonly #forced: GroupCommit<TransitionRow, true>;
  readonly #relaxed: GroupCommit<TransitionRow, true>;
  readonly #lingering: GroupCommit<TransitionRow, true>;
  #manySql: string | undefined;

  constructor(db: LogDb, observer?: GroupCommitObserver, failpoints?: Failpoints) {
    this.#db = db;
    const writer = (mode: 'forced' | 'relaxed', name: string, lingerMs: number) =>
      new GroupCommit<TransitionRow, true>({
        name,
        lingerMs,
        maxBatch: MAX_BATCH,
        maxQueued: MAX_QUEUED,
        observer,
        write: async (rows) => {
          // Phase 2 is done on every branch of a completing transaction, its answer may be on its
          // way, and the completion, not forced, is still only in this batch: a crash loses it.
          if (mode === 'relaxed' && rows.some((r) => r.completes && r.from !== 'active')) failpoints?.hit('before-completion-written');
          const results = await (rows.length === 1 ? this.#one(mode, rows[0]!) : this.#many(mode, rows));
          if (mode === 'forced') failpoints?.hit('after-decision-written');
          return results;
        },
      });
    this.#forced = writer('forced', 'transition-forced', 0);
    this.#relaxed = writer('relaxed', 'transition-relaxed', 0);
    this.#lingering = writer('relaxed', 'transition-lingering', LINGER_MS);
  }

  write(record: TransitionRecord): Promise<true> {
    const batcher = record.forced ? this.#forced : record.lingers ? this.#lingering : this.#relaxed;
    return batcher.submit(transitionRow(record));
  }

  /** Writes what is queued; later writes are refused (the service is stopping). */
  async close(): Promise<void> {
    await Promise.all([this.#forced.close(), this.#relaxed.close(), this.#lingering.close()]);
  }

  /** A batch of one: the single-row statement, prepared once per connection (a batch's arrays would be planned anew each time). */
  async #one(mode: 'forced' | 'relaxed', r: TransitionRow): Promise<(true | Error)[]> {
    const error = r.error === null ? null : JSON.stringify(r.error);
    if (r.derivable && (await this.#lean(mode, r, error))) return [true];
    const query = sql<{ moved: number }>`
      WITH t AS (
        UPDATE tpc_transactions SET
          status = ${r.to}::tpc_tx_status,
          one_phase = one_phase OR ${r.one_phase},
          heuristic = heuristic OR ${r.heuristic},
          in_doubt = in_doubt AND NOT ${r.completes},
          error = COALESCE(${error}::jsonb, error),
          decided_at = CASE WHEN ${r.decides} THEN now() ELSE decided_at END,
          completed_at = CASE WHEN ${r.completes} THEN now() ELSE completed_at END,
          updated_at = now(),
          version = version + 1,
          branches = CASE WHEN branches IS NULL THEN NULL ELSE ${branchesAfter(sql`${JSON.stringify(r.branches)}::jsonb`)} END
        WHERE id = ${r.id}::uuid AND status = ${r.from}::tpc_tx_status AND driver = ${r.driver}
          AND (${r.branches_checked}::int IS NULL OR branch_count <= ${r.branches_checked}::int)
        RETURNING id, branches IS NULL AS classic
      ), b AS (
        UPDATE tpc_branches AS br SET
          status = x.status::tpc_branch_status,
          xid = COALESCE(x.xid, br.xid),
          read_only = COALESCE(x.read_only, br.read_only),
          results = COALESCE(x.results, br.results),
          error = COALESCE(x.error, br.error),
          heuristic = COALESCE(x.heuristic, br.heuristic)
        FROM t, jsonb_to_recordset(${JSON.stringify(r.branches)}::jsonb)
          AS x(index int, status text, xid text, read_only boolean, results jsonb, error jsonb, heuristic text)
        WHERE t.classic AND br.transaction_id = t.id AND br.index = x.index
      ), e AS (
        INSERT INTO tpc_events (transaction_id, kind, actor, detail)
        SELECT t.id, ${r.event_kind}, ${r.event_actor}, ${JSON.stringify(r.event_detail)}::jsonb FROM t
        WHERE t.classic OR NOT ${r.derivable}
      )
      SELECT count(*)::int AS moved FROM t
    `.compile(this.#db[mode]);
    const result = await this.#db.prepared(mode, 'tpc_transition', query);
    return [result.rows[0]?.moved === 1 ? true : new StaleStateError(r.id, r.from, r.to)];
  }

  /**
   * The happy path's change of a lean row (its event derived, nothing in tpc_branches): one UPDATE,
   * without the CTEs that serve rows of the earlier schema and written events. 281 µs of the log's
   * execution per completion at one client for the statement below (issue 13). False when it moved
   * nothing: a row of the earlier schema, or a stale write, which the general statement then sorts out.
   */
  async #lean(mode: 'forced' | 'relaxed', r: TransitionRow, error: string | null): Promise<boolean> {
    // biome-ignore format: the parameters in the order of the statement's $1…$12
    const parameters = [r.id, r.to, r.one_phase, r.heuristic, r.completes, error, r.decides, JSON.stringify(r.branches), r.from, r.driver,
      r.branches_checked, r.whole];
    const result = await this.#db.prepared(mode, 'tpc_transition_lean', { sql: LEAN_TRANSITION, parameters });
    return result.rowCount === 1;
  }

  /**
   * Many transitions in one statement. Each keeps its own guard; `ord` says which items moved. A
   * row named twice in one batch (two writers racing on one transaction) is updated once, by the
   * item Postgres picks: the other fails stale, as the loser of that race would alone.
   *
   * `ord BETWEEN 1 AND MAX_BATCH` is always true; it is there for the planner. The plan is generic
   * (a prepared statement, kept for the connection's life), and jsonb_to_recordset is estimated at
   * 100 rows: joined to that, a table that looked small when the plan was made got a hash join
   * over a sequential scan, kept while the table grew under it (3.8 ms per batch in the benchmark,
   * 5.7 ms at 18 000 rows). A range on a column without statistics is estimated at 0.5 % of the
   * rows, so the batch is planned as one row: a nested loop over the primary key at every size,
   * an empty table included.
   */
  async #many(mode: 'forced' | 'relaxed', rows: TransitionRow[]): Promise<(true | Error)[]> {
    const json = JSON.stringify(rows.map((r, i) => ({ ...r, ord: i + 1 })));
    // Its only parameter is the batch: the text is compiled once, not per batch.
    this.#manySql ??= this.#manyQuery(json).sql;
    const result = await this.#db.prepared<{ ord: number }>(mode, 'tpc_transition_batch', { sql: this.#manySql, parameters: [json] });
    const moved = new Set(result.rows.map((r) => r.ord));
    return rows.map((r, i) => (moved.has(i + 1) ? true : new StaleStateError(r.id, r.from, r.to)));
  }

  #manyQuery(json: string) {
    return sql<{ ord: number }>`
      WITH x AS (
        SELECT * FROM jsonb_to_recordset(${json}::jsonb) AS x(
          id uuid, "from" tpc_tx_status, "to" tpc_tx_status, driver text, one_phase boolean, heuristic boolean,
          decides boolean, completes boolean, error jsonb, branches_checked int, branches jsonb, whole boolean,
          event_kind text, event_actor text, event_detail jsonb, derivable boolean, ord int)
        WHERE x.ord BETWEEN 1 AND ${sql.lit(MAX_BATCH)}
      ), t AS (
        UPDATE tpc_transactions AS tx SET
          status = x."to",
          one_phase = tx.one_phase OR x.one_phase,
          heuristic = tx.heuristic OR x.heuristic,
          in_doubt = tx.in_doubt AND NOT x.completes,
          error = COALESCE(NULLIF(x.error, 'null'::jsonb), tx.error),
          decided_at = CASE WHEN x.decides THEN now() ELSE tx.decided_at END,
          completed_at = CASE WHEN x.completes THEN now() ELSE tx.completed_at END,
          updated_at = now(),
          version = tx.version + 1,
          branches = CASE WHEN tx.branches IS NULL THEN NULL ELSE ${branchesAfter(sql`x.branches`, sql`tx.branches`, sql`x.whole`)} END
        FROM x
        WHERE tx.id = x.id AND tx.status = x."from" AND tx.driver = x.driver
          AND (x.branches_checked IS NULL OR tx.branch_count <= x.branches_checked)
        RETURNING x.ord, x.id, x.branches, x.event_kind, x.event_actor, x.event_detail, x.derivable, tx.branches IS NULL AS classic
      ), b AS (
        UPDATE tpc_branches AS br SET
          status = y.status::tpc_branch_status,
          xid = COALESCE(y.xid, br.xid),
          read_only = COALESCE(y.read_only, br.read_only),
          results = COALESCE(y.results, br.results),
          error = COALESCE(y.error, br.error),
          heuristic = COALESCE(y.heuristic, br.heuristic)
        FROM t, jsonb_to_recordset(t.branches)
          AS y(index int, status text, xid text, read_only boolean, results jsonb, error jsonb, heuristic text)
        WHERE t.classic AND br.transaction_id = t.id AND br.index = y.index
      ), e AS (
        INSERT INTO tpc_events (transaction_id, kind, actor, detail)
        SELECT t.id, t.event_kind, t.event_actor, t.event_detail FROM t
        WHERE t.classic OR NOT t.derivable
      )
      SELECT ord FROM t
    `.compile(this.#db.forced);
  }
}
