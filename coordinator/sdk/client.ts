import type { Kysely } from 'kysely';
import type pg from 'pg';
import { Attempt } from './attempt.ts';
import { coordinatorCall, type InProcessCoordinator } from './coordinator-call.ts';
import { awaitOutcome, type OutcomeOptions, type OutcomeReport } from './outcome.ts';
import { submitTransaction, type Submission, type SubmitOptions } from './submit.ts';

/** How a service reaches the coordinator, and the pools it works on. */
export interface ClientOptions {
  /** The coordinator's base URL, e.g. `http://127.0.0.1:8080`. Give exactly one of `url` and `coordinator`. */
  url?: string;
  /** An embedded coordinator ({@link createCoordinator}): no HTTP hop, same log and recovery workers. */
  coordinator?: InProcessCoordinator;
  /** Bearer token with the `submit` scope, and every resource the service uses (none when the coordinator runs without tokens). */
  token?: string;
  /**
   * This service's own pools, by the resource names the coordinator knows those databases by.
   * Only resources the service opens with `tx.branch()` need one; joined resources do not.
   */
  resources: Record<string, pg.Pool>;
}

/** Options of one {@link TpcClient.transaction} call. */
export interface TransactionOptions {
  /**
   * The overall budget of one attempt, in milliseconds (default 10 000): the deadline is the
   * start of the attempt plus this. It bounds the callback, every statement (one waiting on a lock
   * is cancelled at the deadline) and the coordinator's transaction, which is begun with the time
   * left. Past it the attempt rolls everything back and throws {@link TransactionAbortedError}
   * with code `deadline_exceeded`.
   */
  timeoutMs?: number;
  /**
   * How many times to run the callback again after a serialization failure or deadlock (SQLSTATE
   * 40001 / 40P01); 0 by default. Each attempt is a new global transaction with a new budget, so
   * the callback must be safe to run again (no side effects outside its branches).
   */
  retries?: number;
}

/**
 * How a transaction ended: the coordinator's answer (`id`, `status` such as `committed`,
 * `branches`, `error`), or `{ id: null, status: 'committed' }` when every branch only read and the
 * coordinator was never asked.
 */
export interface Outcome {
  /** The global transaction's id in the coordinator's log, or null when it was never needed. */
  id: string | null;
  /** `committed`; `committing` when the decision is durable but phase 2 is still running (it will finish). */
  status: string;
  [key: string]: unknown;
}

/** A branch that another service prepares on its own database: see {@link GlobalTransaction.join}. */
export interface JoinedBranch {
  /** The global transaction's id in the coordinator's log. */
  transactionId: string;
  /** The gid to prepare the branch under (`PREPARE TRANSACTION '<gid>'`, or `prepareBranch`). */
  gid: string;
  /** When the coordinator aborts the transaction if it has not committed (ISO 8601). */
  deadline: string;
}

/** What the transaction's callback works with. */
export interface GlobalTransaction {
  /**
   * A Kysely handle inside an open transaction on `resource`, using the pool given to
   * {@link createClient} for it; opened on first use, the same handle after that. Its statements
   * are bounded by the time left until the deadline. The handle refuses queries once the
   * transaction has ended, so it must not be kept beyond the callback.
   */
  branch<DB>(resource: string): Promise<Kysely<DB>>;
  /**
   * Adds a branch on `resource` that ANOTHER service prepares on its own database, under the gid
   * returned here (for example with `prepareBranch` from `pg-2pc-coordinator/participant-adapter`),
   * before this callback returns. The first join begins the coordinator's transaction at once;
   * at commit the coordinator checks that the joined branch is really prepared, and a thrown error
   * or an abort rolls back whatever the other service prepared. Joining the same resource twice
   * returns the same branch; a resource cannot be both joined and a local branch.
   */
  join(resource: string): Promise<JoinedBranch>;
}

/** A client made by {@link createClient}. */
export interface TpcClient {
  /**
   * Runs `fn` as one global transaction across every database it touches.
   *
   * Returning normally commits: branches that only read commit locally, writing branches are
   * prepared under the gids the coordinator gives, joined branches must have been prepared by
   * their services, and the coordinator decides. A thrown error rolls every branch back (and
   * aborts at the coordinator, if it knew the transaction) and is rethrown as it was; a
   * transaction that did not commit for any other reason throws {@link TransactionAbortedError}
   * (past the deadline always with code `deadline_exceeded`). When the commit was asked for and
   * no answer came, it throws {@link TransactionOutcomeUnknownError} instead: the transaction may
   * have committed; ask {@link TpcClient.outcome} before doing the work again.
   *
   * @returns the callback's result and the outcome.
   */
  transaction<T>(fn: (tx: GlobalTransaction) => Promise<T>, options?: TransactionOptions): Promise<{ result: T; outcome: Outcome }>;
  /**
   * What became of transaction `id` (for example `err.transactionId` of a
   * {@link TransactionOutcomeUnknownError}): reads it from the coordinator (`GET
   * /v1/transactions/:id`, or the embedded coordinator's log) until it is committed or aborted or
   * `waitMs` has passed, asking again while the coordinator does not answer. Over HTTP the token
   * needs the `read` scope.
   *
   * @returns `decision: 'commit'` (done: never do it again), `'abort'` (nothing applied), or null
   *   (still undecided, or `status: 'unreachable'`); `final` once every branch is finished.
   * @throws Error when the coordinator does not know the id, or refuses to show it.
   */
  outcome(id: string, options?: OutcomeOptions): Promise<OutcomeReport>;
  /**
   * Runs a transaction given whole, with its statements (the body of `POST /v1/transactions`):
   * the coordinator sends each branch's BEGIN, statements and PREPARE in one flight and decides.
   * For work that needs no answer in between; with an embedded coordinator, no HTTP either, the
   * cheapest way through it. Checked as REST checks it: the statement guard, `expect`, the
   * deadline; over HTTP the token needs `submit` (and `sql` for raw SQL).
   *
   * @returns the outcome, `committed` (or `committing`: decided, phase 2 still running), with
   *   each statement's `rowCount` and `rows` in `branches[i].results`.
   * @throws TransactionAbortedError `submission_aborted` / `deadline_exceeded` (aborted; nothing
   *   applied) or `begin_failed` (refused; nothing ran); SubmissionOutcomeUnknownError when no
   *   answer says what became of it (send it again with the same `idempotencyKey`).
   */
  submit(submission: Submission, options?: SubmitOptions): Promise<Outcome>;
}

const RETRYABLE = new Set(['40001', '40P01']);
// 10 s: long enough for ordinary work across a few databases, short enough that locks held by a
// stuck transaction are freed soon. Kept within the coordinator's default TPC_MAX_TIMEOUT_MS.
const DEFAULT_TIMEOUT_MS = 10_000;

/**
 * The SDK: ordinary code spans several PostgreSQL databases atomically. The callback works
 * through Kysely handles on open transactions of the service's own pools, and may join branches
 * that other services prepare; the coordinator (over REST, or embedded) decides and recovers.
 *
 * ```ts
 * import { createClient } from 'pg-2pc-coordinator';
 *
 * const tpc = createClient({ url: 'http://127.0.0.1:8080', token, resources: { orders: ordersPool, stock: stockPool } });
 * const { result, outcome } = await tpc.transaction(async (tx) => {
 *   const stock = await tx.branch<StockDB>('stock');
 *   const orders = await tx.branch<OrdersDB>('orders');
 *   await stock.updateTable('items').set((eb) => ({ left: eb('left', '-', 1) })).where('sku', '=', sku).execute();
 *   return orders.insertInto('orders').values({ sku }).returning('id').executeTakeFirstOrThrow();
 * }, { timeoutMs: 5000 });
 * ```
 *
 * @throws Error when not given exactly one of `url` and `coordinator`.
 */
export function createClient(options: ClientOptions): TpcClient {
  if (!options.url === !options.coordinator) throw new Error('createClient needs exactly one of url and coordinator');
  const call = coordinatorCall(options);
  return {
    outcome: (id, opts) => awaitOutcome(call, id, opts),
    submit: (submission, opts) => submitTransaction(call, submission, opts),
    async transaction<T>(fn: (tx: GlobalTransaction) => Promise<T>, opts: TransactionOptions = {}) {
      const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
      if (!(timeoutMs > 0)) throw new Error(`timeoutMs must be positive, not ${timeoutMs}`);
      for (let tries = 0; ; tries++) {
        try {
          return await new Attempt(options.resources, call, timeoutMs).run(fn);
        } catch (err) {
          const code = (err as { code?: string }).code;
          if (tries < (opts.retries ?? 0) && code && RETRYABLE.has(code)) continue;
          throw err;
        }
      }
    },
  };
}
