import type { LoggedTransaction } from '../engine/log-port.ts';
import { GroupCommit, type GroupCommitObserver } from './group-commit.ts';
import type { LogDb } from './log-database.ts';
import { loggedFrom, TRANSACTION_COLUMNS, type TransactionRow } from './transaction-read.ts';

export interface LeaseRequest {
  id: string;
  driver: string;
  leaseMs: number;
  /** Operators only: an undecided transaction's lease may be taken from a live holder (RecoveryLog.acquire). */
  takeOverUndecided: boolean;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_BATCH = 64;
const MAX_QUEUED = 2_000;

/*
 * One statement takes the leases of a batch and reads each leased transaction: the jobs that a
 * backlog's drain runs side by side each took a lease and then read the row, two statements and two
 * round trips per job, and the read was planned again on most calls. The transactions of one batch
 * also resume together, so their phase 2 leaves for each participant in one write (coalesced-queries).
 *
 * `ord BETWEEN 1 AND MAX_BATCH` plans the batch as one row (see TransitionWriter#many): a nested
 * loop over the primary key at every size, with a generic plan kept for the connection's life.
 *
 * A lease batch and a transition batch (transition-writer.ts) name one row together only when two
 * drivers act on one transaction, which takes a lease run out (a driver stalled 30 s): then the two
 * may lock their rows in opposite orders, and Postgres ends one of them as a deadlock. Its callers
 * fail as if their write was lost, which each of them already handles; no ordering is paid for on
 * every batch to spare that.
 *
 * Not forced: a lease lost with the log's unflushed WAL (a crash, a failover) lets a second driver
 * in, which costs a duplicate COMMIT PREPARED at most: phase 2 is idempotent, and every state change
 * checks `driver = me`, so one of the two finds the row moved and follows the log. A decision is
 * forced, and its flush makes every earlier record durable, this lease included: no durable
 * decision ever rests on a lease that was lost. A forced lease cost a WAL flush per job attempt, most
 * of the log's work while a backlog drains.
 */
const LEASE_SQL = `
  WITH x AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(id uuid, driver text, lease_secs float8, take_over boolean, ord int)
    WHERE x.ord BETWEEN 1 AND ${MAX_BATCH}
  )
  UPDATE tpc_transactions AS t SET driver = x.driver, lease_until = now() + make_interval(secs => x.lease_secs)
  FROM x
  WHERE t.id = x.id AND t.status NOT IN ('committed', 'aborted')
    AND (t.driver IS NULL OR t.driver = x.driver OR t.lease_until < now() OR (x.take_over AND t.status = 'active'))
  RETURNING x.ord, ${TRANSACTION_COLUMNS}`;

/**
 * Leases on the log's transactions, taken in batches (group commit): each caller gets the
 * transaction as it stands once the lease is its own, or null when another driver holds a live
 * lease or the transaction is finished or unknown.
 */
export class LeaseWriter {
  readonly #batches: GroupCommit<LeaseRequest, LoggedTransaction | null>;

  constructor(db: LogDb, observer?: GroupCommitObserver) {
    this.#batches = new GroupCommit<LeaseRequest, LoggedTransaction | null>({
      name: 'lease',
      maxBatch: MAX_BATCH,
      maxQueued: MAX_QUEUED,
      observer,
      write: async (requests) => {
        // One row named twice in one UPDATE … FROM is updated once, for one item Postgres picks;
        // the other would read as refused anyway, so it is refused here, before the statement.
        const first = new Map<string, number>();
        const items = requests.flatMap((r, i) => {
          if (first.has(r.id)) return [];
          first.set(r.id, i);
          return [{ id: r.id, driver: r.driver, lease_secs: r.leaseMs / 1000, take_over: r.takeOverUndecided, ord: i + 1 }];
        });
        const result = await db.prepared<TransactionRow & { ord: number }>('relaxed', 'tpc_lease_batch', {
          sql: LEASE_SQL,
          parameters: [JSON.stringify(items)],
        });
        const leased = new Map(result.rows.map((row) => [row.ord, row]));
        return requests.map((_, i) => {
          const row = leased.get(i + 1);
          return row ? loggedFrom(row) : null;
        });
      },
    });
  }

  take(request: LeaseRequest): Promise<LoggedTransaction | null> {
    // Not a uuid: it would fail the cast, and with it every other caller of its batch.
    if (!UUID.test(request.id)) return Promise.resolve(null);
    return this.#batches.submit(request);
  }

  /** Takes what is queued; later requests are refused (the service is stopping). */
  close(): Promise<void> {
    return this.#batches.close();
  }
}
