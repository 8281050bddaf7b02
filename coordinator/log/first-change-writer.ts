import { sql } from 'kysely';
import type { BeginRecord } from '../engine/log-port.ts';
import type { Failpoints } from '../engine/failpoints.ts';
import { StaleStateError } from '../errors.ts';
import { GroupCommit, type GroupCommitObserver } from './group-commit.ts';
import type { LogDb } from './log-database.ts';
import type { TransitionRecord } from './transactions-store.ts';
import { MAX_BATCH, MAX_QUEUED, transitionRow, type TransitionRow } from './transition-writer.ts';

/** A first state change: the row it inserts, already in its new state. */
interface FirstChangeRow extends TransitionRow {
  namespace: string;
  deadline: string;
  submitted_by: string | null;
  timeout_ms: number;
  interactive: boolean;
  /** The begin record's branches with the change's updates merged in (as the log merges them in place). */
  row_branches: Record<string, unknown>[];
}

function firstChangeRow(record: TransitionRecord & { insert: BeginRecord }): FirstChangeRow {
  const change = transitionRow(record);
  const seed = record.insert;
  // The change's row is its own (transitionRow made it): completed in place rather than copied.
  return Object.assign(change, {
    namespace: seed.namespace,
    deadline: seed.deadline.toISOString(),
    submitted_by: seed.submittedBy,
    timeout_ms: seed.timeoutMs,
    interactive: seed.interactive ?? false,
    // A whole list (TransitionRecord.branchesWhole) already holds every field the merge would give.
    row_branches:
      change.whole && change.branches.length === seed.branches.length
        ? change.branches
        : seed.branches.map((b) => ({
            index: b.index,
            resource: b.resource,
            gid: b.gid,
            status: 'active',
            ...change.branches.find((u) => u.index === b.index),
          })),
  });
}

const INSERT_ONE = `
  INSERT INTO tpc_transactions (id, namespace, status, one_phase, heuristic, deadline, submitted_by, driver, lease_until,
    branch_count, branches, timeout_ms, interactive, version, error, created_at, decided_at, completed_at, updated_at)
  VALUES ($1::uuid, $2, $3::tpc_tx_status, $4, $5, $6::timestamptz, $7, $8, $6::timestamptz, $9::int, $10::jsonb, $11::int, $12, 1, $13::jsonb,
    LEAST($6::timestamptz - make_interval(secs => $11::int / 1000.0), now()),
    CASE WHEN $14::boolean THEN now() END, CASE WHEN $15::boolean THEN now() END, now())
  ON CONFLICT (id) DO NOTHING`;

/** A batch's rows inserted from its items `x`: both batch statements' INSERT, but for its source. */
const INSERT_FROM_X = `
  INSERT INTO tpc_transactions (id, namespace, status, one_phase, heuristic, deadline, submitted_by, driver, lease_until,
    branch_count, branches, timeout_ms, interactive, version, error, created_at, decided_at, completed_at, updated_at)
  SELECT id, namespace, "to", one_phase, heuristic, deadline, submitted_by, driver, deadline,
    jsonb_array_length(row_branches), row_branches, timeout_ms, interactive, 1, NULLIF(error, 'null'::jsonb),
    LEAST(deadline - make_interval(secs => timeout_ms / 1000.0), now()),
    CASE WHEN decides THEN now() END, CASE WHEN completes THEN now() END, now()`;

/** #leanMany's statement: INSERT_ONE for a batch. */
const INSERT_LEAN_BATCH = `${INSERT_FROM_X}
  FROM jsonb_to_recordset($1::jsonb) AS x(
    id uuid, namespace text, deadline timestamptz, submitted_by text, driver text, timeout_ms int, interactive boolean,
    "to" tpc_tx_status, one_phase boolean, heuristic boolean, decides boolean, completes boolean, error jsonb, row_branches jsonb)
  ON CONFLICT (id) DO NOTHING
  RETURNING id`;

/**
 * The first state change of a transaction whose begin record was deferred (engine/deferred-begin.ts)
 * inserts its row, already decided (or final): the begin record folded into the decision. Group
 * commit as for the transitions, forced and relaxed apart. `ON CONFLICT DO NOTHING`: a row there
 * already is recovery's tombstone (its deadline passed with nothing in the log, see
 * RecoveryLog.abandon), which this write must not pass, so the item fails with StaleStateError
 * and its driver reads the log, as for any compare-and-set that lost.
 *
 * The row's created_at is the request's arrival (the deadline less the timeout), not now(): the
 * 'begun' event derived from it says when the transaction began, as a begin record's would.
 */
export class FirstChangeWriter {
  readonly #db: LogDb;
  readonly #forced: GroupCommit<FirstChangeRow, true>;
  readonly #relaxed: GroupCommit<FirstChangeRow, true>;
  #sql: string | undefined;

  constructor(db: LogDb, observer?: GroupCommitObserver, failpoints?: Failpoints) {
    this.#db = db;
    const writer = (mode: 'forced' | 'relaxed') =>
      new GroupCommit<FirstChangeRow, true>({
        name: `first-change-${mode}`,
        maxBatch: MAX_BATCH,
        maxQueued: MAX_QUEUED,
        observer,
        write: async (rows) => {
          const results = await this.#insert(mode, rows);
          if (mode === 'forced') failpoints?.hit('after-decision-written');
          return results;
        },
      });
    this.#forced = writer('forced');
    this.#relaxed = writer('relaxed');
  }

  write(record: TransitionRecord & { insert: BeginRecord }): Promise<true> {
    return (record.forced ? this.#forced : this.#relaxed).submit(firstChangeRow(record));
  }

  async close(): Promise<void> {
    await Promise.all([this.#forced.close(), this.#relaxed.close()]);
  }

  async #insert(mode: 'forced' | 'relaxed', rows: FirstChangeRow[]): Promise<(true | Error)[]> {
    if (rows.length === 1 && rows[0]!.derivable) return [await this.#one(mode, rows[0]!)];
    if (rows.every((r) => r.derivable)) return this.#leanMany(mode, rows);
    const json = JSON.stringify(rows.map((r, i) => ({ ...r, ord: i + 1 })));
    // Its only parameter is the batch: the text is compiled once, and one plan serves every size
    // (an INSERT of a recordset joins no table, so no estimate of its rows can mislead it).
    this.#sql ??= sql`
      WITH x AS (
        SELECT * FROM jsonb_to_recordset(${json}::jsonb) AS x(
          id uuid, namespace text, deadline timestamptz, submitted_by text, driver text, timeout_ms int, interactive boolean,
          "to" tpc_tx_status, one_phase boolean, heuristic boolean, decides boolean, completes boolean, error jsonb,
          row_branches jsonb, event_kind text, event_actor text, event_detail jsonb, derivable boolean, ord int)
      ), t AS (${sql.raw(INSERT_FROM_X)}
        FROM x
        ON CONFLICT (id) DO NOTHING
        RETURNING id
      ), e AS (
        INSERT INTO tpc_events (transaction_id, kind, actor, detail)
        SELECT x.id, x.event_kind, x.event_actor, x.event_detail FROM x JOIN t USING (id)
        WHERE NOT x.derivable
      )
      SELECT x.ord FROM x JOIN t USING (id)
    `.compile(this.#db.forced).sql;
    const result = await this.#db.prepared<{ ord: number }>(mode, 'tpc_first_change', { sql: this.#sql, parameters: [json] });
    const inserted = new Set(result.rows.map((r) => r.ord));
    return rows.map((r, i) => (inserted.has(i + 1) ? true : new StaleStateError(r.id, r.from, r.to)));
  }

  /**
   * A batch whose events are all derived (the happy path's decisions under load): one INSERT from
   * the recordset, without the CTEs that join it back to write events and number the items. The
   * general statement cost the log 431 µs of execution per batch of about four (bench, 32 clients,
   * pg_stat_statements). Which items were inserted is read from the ids returned.
   */
  async #leanMany(mode: 'forced' | 'relaxed', rows: FirstChangeRow[]): Promise<(true | Error)[]> {
    const json = JSON.stringify(
      rows.map((r) => ({
        id: r.id,
        namespace: r.namespace,
        deadline: r.deadline,
        submitted_by: r.submitted_by,
        driver: r.driver,
        timeout_ms: r.timeout_ms,
        interactive: r.interactive,
        to: r.to,
        one_phase: r.one_phase,
        heuristic: r.heuristic,
        decides: r.decides,
        completes: r.completes,
        error: r.error,
        row_branches: r.row_branches,
      })),
    );
    const result = await this.#db.prepared<{ id: string }>(mode, 'tpc_first_change_lean_batch', { sql: INSERT_LEAN_BATCH, parameters: [json] });
    if (result.rows.length === rows.length) return rows.map(() => true);
    const inserted = new Set(result.rows.map((r) => r.id));
    return rows.map((r) => (inserted.has(r.id.toLowerCase()) ? true : new StaleStateError(r.id, r.from, r.to)));
  }

  /**
   * A batch of one whose event is derived (the happy path, and every first change at low load): a
   * plain single-row INSERT with typed parameters. The batch statement parses its one parameter as
   * a JSON recordset and joins through three CTEs: 200 µs of the log's execution per call at one
   * client against about 60 for this (issue 13), on the commit's critical path.
   */
  async #one(mode: 'forced' | 'relaxed', r: FirstChangeRow): Promise<true | Error> {
    const error = r.error === null ? null : JSON.stringify(r.error);
    // biome-ignore format: the parameters in the order of the statement's $1…$15
    const parameters = [r.id, r.namespace, r.to, r.one_phase, r.heuristic, r.deadline, r.submitted_by, r.driver, r.row_branches.length,
      JSON.stringify(r.row_branches), r.timeout_ms, r.interactive, error, r.decides, r.completes];
    const result = await this.#db.prepared(mode, 'tpc_first_change_one', { sql: INSERT_ONE, parameters });
    return result.rowCount === 1 ? true : new StaleStateError(r.id, r.from, r.to);
  }
}
