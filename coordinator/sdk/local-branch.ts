import type { Kysely } from 'kysely';
import type pg from 'pg';
import { sendCancelRequest } from '../../participant-adapter/cancel-request.ts';
import { pinnedKysely } from '../../participant-adapter/pinned-kysely.ts';
import { gidLiteral } from '../../participant-adapter/gid.ts';
import { batchWrites } from '../../participant-adapter/batched-writes.ts';
import { beginStatement, endTransaction, prepareTransaction } from '../../participant-adapter/prepare-branch.ts';
import { settleSession } from '../../participant-adapter/session-reset.ts';

type State = 'open' | 'ending' | 'ended';

const XID_PROBE = 'SELECT pg_catalog.pg_current_xact_id_if_assigned()::pg_catalog.text AS xid';
// A query that starts with SELECT reads, unless a function it calls writes: the probe tells.
const READS = /^\s*select\b/i;

/**
 * One branch the SDK runs on the service's own pool: an open transaction on a pinned connection,
 * handed to the callback as a Kysely. The branch counts the queries it has in flight, so the
 * deadline can cancel exactly those, and it refuses queries once its transaction is over: a
 * callback that kept its handle past the end would otherwise run them on a pooled connection that
 * by then belongs to someone else.
 */
export class LocalBranch {
  readonly db: Kysely<unknown>;
  #state: State = 'open';
  #inFlight = 0;
  #onlySelects = true;
  /**
   * A statement ran that may leave state on the session past the transaction (or no one could
   * tell): the session is reset when the transaction ends, before the pool hands the connection on.
   */
  #touchesSession: boolean;
  /** A cancel request may still be on its way: the connection is destroyed, never pooled again. */
  #cancelSent = false;
  #broken = false;
  readonly #onError = () => {
    this.#broken = true;
  };

  /**
   * BEGIN, sent with the branch's first query. On a pool in pipeline mode both leave in one write
   * and the statement does not wait for BEGIN's answer: one round trip less per branch, as the
   * coordinator's own branches do (participant-adapter/branch.ts). On any other pool the statement
   * is sent once BEGIN has succeeded, as before. Resolves true once BEGIN has run, false if it failed.
   */
  #begun: Promise<boolean> | undefined;
  #beginError: unknown;
  readonly #pipelined: boolean;

  private constructor(
    readonly resource: string,
    private readonly client: pg.PoolClient,
    private readonly statementTimeoutMs: number,
    private readonly mayLeaveSessionState: ((sql: string) => boolean) | undefined,
  ) {
    this.#touchesSession = mayLeaveSessionState === undefined;
    // A checked-out connection whose socket dies emits 'error'; with no listener the process would crash.
    client.on('error', this.#onError);
    this.#pipelined = (client as unknown as { pipeline?: boolean }).pipeline === true;
    this.db = pinnedKysely({ query: (text, values) => this.#query(text, values) });
  }

  /**
   * Checks out a connection for a branch whose statements are each bounded by `statementTimeoutMs`;
   * BEGIN goes with the first. `mayLeaveSessionState` reads each statement (the embedded
   * coordinator's guard): without it, the session is reset at the end whatever ran.
   */
  static async open(pool: pg.Pool, resource: string, statementTimeoutMs: number, mayLeaveSessionState?: (sql: string) => boolean): Promise<LocalBranch> {
    return new LocalBranch(resource, await pool.connect(), statementTimeoutMs, mayLeaveSessionState);
  }

  #begin(): Promise<boolean> {
    if (!this.#begun) {
      batchWrites(this.client);
      this.#begun = this.client.query(beginStatement(this.statementTimeoutMs)).then(
        () => true,
        (err: unknown) => {
          this.#beginError = err;
          return false;
        },
      );
    }
    return this.#begun;
  }

  /** Sends BEGIN if it was not sent yet, and waits for it: what ends the transaction must find one open. */
  async #begunOrThrow(): Promise<void> {
    if (!(await this.#begin())) throw this.#beginError;
  }

  #query(text: string, values?: unknown[]): Promise<pg.QueryResult> {
    if (this.#state !== 'open') {
      return Promise.reject(new Error(`the branch on ${this.resource} is closed: its global transaction has ended`));
    }
    this.#inFlight++;
    if (this.#onlySelects && !READS.test(text)) this.#onlySelects = false;
    if (!this.#touchesSession && this.mayLeaveSessionState!(text)) this.#touchesSession = true;
    const begun = this.#begin();
    // Pipelined, the statement follows BEGIN in the same write; a BEGIN that fails there has lost
    // its connection, and the statement with it (a cancel waits for BEGIN: see cancel()).
    const sent = this.#pipelined
      ? this.client.query(text, values)
      : begun.then((ok) => (ok ? this.client.query(text, values) : Promise.reject(this.#beginError)));
    return sent.finally(() => {
      this.#inFlight--;
    });
  }

  /**
   * Cancels the statement this branch is running, if any. A cancel names a backend, not a
   * statement: the connection is marked so that release() destroys it, and a late cancel can never
   * reach the next user of the pool. It waits for BEGIN to have run, so a cancel cannot leave the
   * branch's statements running outside a transaction.
   */
  async cancel(): Promise<void> {
    if (this.#state !== 'open' || this.#inFlight === 0 || this.#cancelSent) return;
    // Never while BEGIN may still be running: a cancelled BEGIN would let the statement pipelined
    // behind it run, and commit, on its own.
    if (!(await this.#begin()) || this.#state !== 'open' || this.#inFlight === 0 || this.#cancelSent) return;
    const c = this.client as unknown as { host: string; port: number; processID: number | null; secretKey: number | null };
    if (c.processID == null || c.secretKey == null) return;
    this.#cancelSent = true;
    await sendCancelRequest({ host: c.host, port: c.port, processID: c.processID, secretKey: c.secretKey });
  }

  /** The callback has returned: from now on only the SDK ends the transaction; a kept handle is refused. */
  seal(): void {
    if (this.#state === 'open') this.#state = 'ending';
  }

  /**
   * The branch's xid, or null if it has written nothing (a read-only branch takes no part in the
   * decision). The embedded coordinator records it with the decision without asking again.
   */
  async xid(): Promise<string | null> {
    await this.#begunOrThrow();
    const r = await this.client.query<{ xid: string | null }>('SELECT pg_current_xact_id_if_assigned()::text AS xid');
    return r.rows[0]?.xid ?? null;
  }

  /**
   * Whether the branch ran a statement other than a SELECT: it almost surely wrote, and is then
   * prepared without asking first (prepareWithXid); a branch of SELECTs alone is asked (xid()).
   */
  get mayHaveWritten(): boolean {
    return !this.#onlySelects;
  }

  /**
   * Prepares the branch under `gid` and learns its xid in the same round trip: the probe and
   * PREPARE as one simple query, the session reset right behind it. `prepared` false: the server
   * rolled back instead (the transaction had failed). An xid of null: the branch wrote nothing
   * after all, and is a prepared read-only branch (committed with the others, its fate moot).
   */
  async prepareWithXid(gid: string): Promise<{ prepared: boolean; xid: string | null }> {
    this.#state = 'ending';
    const literal = gidLiteral(gid);
    let results: pg.QueryResult[];
    let reset: Promise<boolean> | undefined;
    try {
      await this.#begunOrThrow();
      // The reset behind the ending, in the same write: uncorked, each left in a write of its own.
      batchWrites(this.client);
      const ending = this.client.query(`${XID_PROBE}; PREPARE TRANSACTION ${literal}`) as unknown as Promise<pg.QueryResult[]>;
      reset = settleSession(this.client, ending, this.#touchesSession);
      results = await ending.finally(() => reset);
    } catch (err) {
      await reset;
      // 25P02: an earlier statement had failed, so the probe was refused and PREPARE never ran
      // (nor the reset behind it). Rolling back is what PREPARE would have done.
      if ((err as { code?: string }).code === '25P02') {
        await this.finish('ROLLBACK');
        return { prepared: false, xid: null };
      }
      this.#release(false);
      throw err;
    }
    this.#release(await reset);
    const [probe, prepare] = results;
    if (prepare?.command !== 'PREPARE') return { prepared: false, xid: null };
    return { prepared: true, xid: (probe?.rows[0]?.xid as string | null | undefined) ?? null };
  }

  /** Ends the transaction with COMMIT or ROLLBACK and gives the connection back. Never throws for ROLLBACK. */
  async finish(ending: 'COMMIT' | 'ROLLBACK'): Promise<void> {
    if (this.#state === 'ended') return;
    this.#state = 'ending';
    try {
      const { sessionReset } = await endTransaction(this.client, ending, this.#touchesSession);
      this.#release(sessionReset);
    } catch (err) {
      this.#release(false);
      if (ending === 'COMMIT') throw err;
    }
  }

  /** Prepares the branch under `gid` and gives the connection back; false if the server rolled back instead. */
  async prepare(gid: string): Promise<boolean> {
    this.#state = 'ending';
    try {
      await this.#begunOrThrow();
      const { prepared, sessionReset } = await prepareTransaction(this.client, gid, this.#touchesSession);
      this.#release(sessionReset);
      return prepared;
    } catch (err) {
      this.#release(false);
      throw err;
    }
  }

  #release(reusable: boolean): void {
    if (this.#state === 'ended') return;
    this.#state = 'ended';
    this.client.off('error', this.#onError);
    this.client.release(reusable && !this.#cancelSent && !this.#broken ? undefined : true);
  }
}
