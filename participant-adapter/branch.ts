import type pg from 'pg';
import { batchWrites } from './batched-writes.ts';
import { sendCancelRequest } from './cancel-request.ts';
import { ParticipantError, toParticipantError } from './errors.ts';
import { gidLiteral } from './gid.ts';
import type { BranchSession, BranchState } from './participant.ts';
import { settleSession, untouchedSettled } from './session-reset.ts';
import { sendQuery, sendQueryThen } from './sent-query.ts';
import { assertStatementAllowed } from './statement-guard.ts';
import type { StatementNames } from './statement-names.ts';

export interface StatementResult {
  command: string;
  rowCount: number;
  rows: Record<string, unknown>[];
}

export interface PrepareResult {
  /** False when the server turned the PREPARE into a ROLLBACK because the transaction had already failed. */
  prepared: boolean;
  /** `pg_current_xact_id()` of the branch, or null when it wrote nothing (read-only). */
  xid: string | null;
}

const XID_PROBE = 'SELECT pg_catalog.pg_current_xact_id_if_assigned()::pg_catalog.text AS xid';

/** 25P02: "current transaction is aborted, commands ignored until end of transaction block". */
function isFailedTransaction(err: unknown): boolean {
  return err instanceof ParticipantError && err.sqlState === '25P02';
}

/**
 * One open database transaction on one pinned connection (BEGIN … PREPARE must share a session).
 * The pool runs in pipeline mode, so calls made without awaiting the previous one travel together:
 * BEGIN, the statements, the xid probe and PREPARE cost one round trip between them.
 */
export class Branch implements BranchSession {
  readonly resource: string;
  #client: pg.PoolClient;
  #state: BranchState = 'open';
  #connectionError: Error | undefined;
  #sessionReset = false;
  readonly #names: StatementNames | undefined;
  /** A named statement failed: it may be stale on the server, so the reset drops them all. */
  #namedFailed = false;
  /** A statement ran that may leave state on the session past the transaction (session-neutral.ts). */
  #touchesSession = false;
  /** BEGIN's answer: pending, or whether it ran (a promise for it is made only if someone waits, see #begun). */
  #beginState: 'pending' | 'ran' | 'failed' = 'pending';
  #beginWaiters: ((ran: boolean) => void)[] | null = null;
  #beginFailed = false;
  /** Queries sent and not yet answered. */
  #inFlight = 0;
  /** A cancel request was sent: it may still be on its way, so this connection is never pooled again. */
  #cancelSent = false;
  /**
   * A statement was refused by the guard before it reached the server. The server's transaction
   * has not failed (it never saw the statement), so a PREPARE or COMMIT sent now would succeed
   * and make durable a branch missing part of its work: the branch may only roll back.
   */
  #refused: ParticipantError | undefined;
  readonly #onError = (err: Error) => {
    // A checked-out client with no listener would crash the process when its socket dies.
    this.#connectionError = err;
    this.#state = 'broken';
  };

  /** `names` picks the statements sent as named (parsed and planned once per connection); without it, all are unnamed. */
  constructor(resource: string, client: pg.PoolClient, statementTimeoutMs: number, names?: StatementNames) {
    this.resource = resource;
    this.#client = client;
    this.#names = names;
    client.on('error', this.#onError);
    // statement_timeout is the server-side backstop for the deadline: if our cancel request is lost,
    // a statement waiting on a lock still ends. Whole milliseconds, at least 1 (0 would disable it).
    const timeout = Math.max(1, Math.ceil(statementTimeoutMs));
    batchWrites(client);
    this.#inFlight++;
    // A callback, not a promise: every branch sends BEGIN, and only a cancel ever waits for it.
    const begun = (err: unknown) => {
      this.#inFlight--;
      if (err) {
        this.#mapped(err, 'BEGIN'); // for its effect: a connection failure marks the branch broken
        this.#beginFailed = true;
      }
      this.#beginState = err ? 'failed' : 'ran';
      const waiters = this.#beginWaiters;
      this.#beginWaiters = null;
      if (waiters) for (const w of waiters) w(!err);
    };
    try {
      sendQueryThen(client, { text: `BEGIN; SET LOCAL statement_timeout = ${timeout}` }, begun);
    } catch (err) {
      begun(err ?? new Error('BEGIN refused'));
    }
  }

  /** Resolves true once BEGIN has run; false if it failed. */
  #begun(): Promise<boolean> {
    if (this.#beginState !== 'pending') return Promise.resolve(this.#beginState === 'ran');
    return new Promise<boolean>((resolve) => {
      this.#beginWaiters ??= [];
      this.#beginWaiters.push(resolve);
    });
  }

  get state(): BranchState {
    return this.#state;
  }

  /** Runs one statement. Calls may be issued back to back; they are pipelined in order. */
  run(sql: string, params: readonly unknown[] = []): Promise<StatementResult> {
    try {
      if (assertStatementAllowed(sql).touchesSession) this.#touchesSession = true;
    } catch (err) {
      this.#refused ??= err as ParticipantError;
      return Promise.reject(err);
    }
    const name = this.#names?.nameFor(sql);
    // One reaction does the bookkeeping and the mapping: a branch's statement is on the hot path,
    // and each extra promise there is an allocation and a microtask (issue 13).
    this.#inFlight++;
    return sendQuery(this.#client, { name, text: sql, values: params, extended: true }).then(
      (r) => {
        this.#inFlight--;
        return { command: r.command, rowCount: r.rowCount ?? 0, rows: r.rows as Record<string, unknown>[] };
      },
      (err: unknown) => {
        this.#inFlight--;
        // Refused only because an earlier statement failed (25P02), it is not stale.
        if (name !== undefined && (err as { code?: string } | null)?.code !== '25P02') this.#namedFailed = true;
        throw this.#mapped(err, 'statement');
      },
    );
  }

  /**
   * The branch's transaction id, or null if it has written nothing. It runs after the user's
   * statements, inside their transaction, where a `SET LOCAL search_path` of theirs could put a
   * function of the same name first: hence the schema-qualified names.
   */
  async xid(): Promise<string | null> {
    const r = await this.#track(sendQuery(this.#client, { text: XID_PROBE, extended: true }), 'xid lookup');
    return (r.rows[0]?.xid as string | null | undefined) ?? null;
  }

  /**
   * Records the xid and prepares under `gid`, in one round trip. The xid probe and PREPARE are one
   * simple query (one message and one answer for the server, not two); the probe stays unnamed:
   * a function the branch calls could re-make a named one and fake the xid the log records.
   */
  prepare(gid: string): Promise<PrepareResult> {
    let literal: string;
    try {
      literal = gidLiteral(gid);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#refused) {
      return this.rollback().then(() => {
        this.#assertBegun();
        return { prepared: false, xid: null };
      });
    }
    batchWrites(this.#client);
    this.#inFlight++;
    const ending = sendQuery(this.#client, { text: `${XID_PROBE}; PREPARE TRANSACTION ${literal}` }) as unknown as Promise<pg.QueryResult[]>;
    if (this.#touchesSession) {
      // The reset leaves now, in PREPARE's flight, and is waited for before the answer.
      const reset = this.#resetSession(ending);
      return ending.then(
        (results) => {
          this.#inFlight--;
          return reset.then(() => this.#prepared(results));
        },
        (err: unknown) => {
          this.#inFlight--;
          const mapped = this.#mapped(err, 'PREPARE TRANSACTION');
          return reset.then(() => this.#prepareFailed(mapped));
        },
      );
    }
    // Nothing to reset (the usual branch): the session is settled in PREPARE's own reaction, as
    // settleSession would, without a chain of promises per branch (issue 13).
    return ending.then(
      (results) => {
        this.#inFlight--;
        return this.#settledUntouched(() => this.#prepared(results));
      },
      (err: unknown) => {
        this.#inFlight--;
        const mapped = this.#mapped(err, 'PREPARE TRANSACTION');
        return this.#settledUntouched(() => this.#prepareFailed(mapped));
      },
    );
  }

  /** settleSession's rule for an untouched session, once its ending is answered; then `next`. */
  #settledUntouched<T>(next: () => T | Promise<T>): T | Promise<T> {
    const ok = untouchedSettled(this.#client, this.#namedFailed);
    if (typeof ok !== 'boolean') {
      return ok.then((poolable) => {
        this.#sessionReset = poolable;
        return next();
      });
    }
    this.#sessionReset = ok;
    return next();
  }

  /** PREPARE's answer read: prepared with its xid, or rolled back by the server instead. */
  #prepared([probe, prepare]: pg.QueryResult[]): PrepareResult {
    this.#assertBegun();
    if (prepare?.command !== 'PREPARE') {
      // The transaction had failed earlier; the server rolled it back instead.
      this.#state = 'finished';
      return { prepared: false, xid: null };
    }
    this.#state = 'prepared';
    return { prepared: true, xid: (probe?.rows[0]?.xid as string | null | undefined) ?? null };
  }

  #prepareFailed(err: ParticipantError): Promise<PrepareResult> {
    this.#assertBegun();
    if (isFailedTransaction(err) && this.#client.getTransactionStatus() === 'E') {
      // An earlier statement had failed: the probe was refused, so PREPARE never ran (the
      // server skips the rest of a query after an error) and the reset behind it was refused
      // too. Rolling back is what PREPARE would have done; it costs a round trip on this path only.
      return this.#rollBackFailed();
    }
    this.#state = 'broken';
    throw err;
  }

  async #rollBackFailed(): Promise<PrepareResult> {
    try {
      await this.#track(this.#client.query('ROLLBACK'), 'ROLLBACK');
    } catch (err) {
      this.#state = 'broken';
      throw err;
    }
    this.#state = 'finished';
    await this.#resetSession(Promise.resolve());
    return { prepared: false, xid: null };
  }

  /** One-phase commit. Returns false when the server rolled back instead (the transaction had failed). */
  async commit(): Promise<boolean> {
    if (this.#refused) {
      await this.rollback();
      this.#assertBegun();
      return false;
    }
    batchWrites(this.#client);
    const commit = this.#track(this.#client.query('COMMIT'), 'COMMIT');
    const reset = this.#resetSession(commit);
    const r = await commit.finally(() => reset);
    this.#state = 'finished';
    this.#assertBegun();
    return r.command === 'COMMIT';
  }

  async rollback(): Promise<void> {
    if (this.#state !== 'open') return;
    batchWrites(this.#client);
    const rollback = this.#track(this.#client.query('ROLLBACK'), 'ROLLBACK');
    const reset = this.#resetSession(rollback);
    await rollback.finally(() => reset);
    this.#state = 'finished';
  }

  /**
   * Asks the server to cancel whatever statement this branch is running (deadline or a failed
   * sibling). A cancel names a backend, not a statement, so two rules keep it from landing where it
   * must not: it is sent only after BEGIN has run (a cancelled BEGIN would let the pipelined
   * statements behind it run in autocommit and commit on their own), and a connection that was
   * sent one is destroyed at release, never handed to another transaction the cancel could hit.
   */
  async cancel(): Promise<void> {
    if (this.#state !== 'open' || this.#inFlight === 0) return;
    if (!(await this.#begun())) return;
    const c = this.#client as unknown as { host: string; port: number; processID: number | null; secretKey: number | null };
    if (c.processID == null || c.secretKey == null || this.#state !== 'open' || this.#inFlight === 0) return;
    this.#cancelSent = true;
    await sendCancelRequest({ host: c.host, port: c.port, processID: c.processID, secretKey: c.secretKey });
  }

  /**
   * Gives the connection back. A connection whose transaction is still open or whose state is
   * unknown is destroyed rather than pooled: the server then rolls back whatever it holds.
   */
  release(): void {
    const client = this.#client;
    client.off('error', this.#onError);
    const clean = (this.#state === 'prepared' || this.#state === 'finished') && this.#sessionReset && !this.#cancelSent;
    if (!clean) this.#state = 'broken';
    client.release(clean ? undefined : (this.#connectionError ?? true));
  }

  /**
   * Sent in the same flight as `ending`, the statement that ends the transaction; false: destroy,
   * do not pool (session-reset.ts). When nothing the branch ran can have left state on the session,
   * nothing is sent (the reset is about a fifth of a branch's server CPU): the session must only be
   * idle, and a named statement that failed is still dropped, which is known once `ending` is answered.
   */
  #resetSession(ending: Promise<unknown>): Promise<void> {
    return settleSession(this.#client, ending, this.#touchesSession, { discardIf: () => this.#namedFailed }).then((ok) => {
      this.#sessionReset = ok;
    });
  }

  /**
   * BEGIN failed while the statements behind it were already sent: they ran outside a transaction.
   * That must surface as an error, never as an ordinary "not prepared".
   */
  #assertBegun(): void {
    if (!this.#beginFailed) return;
    this.#state = 'broken';
    throw new ParticipantError('begin_failed', `BEGIN failed on ${this.resource}: the branch's statements did not run inside a transaction`, {
      retryable: false,
      resource: this.resource,
    });
  }

  #track<T>(promise: Promise<T>, what: string): Promise<T> {
    this.#inFlight++;
    return promise.then(
      (v) => {
        this.#inFlight--;
        return v;
      },
      (err: unknown) => {
        this.#inFlight--;
        throw this.#mapped(err, what);
      },
    );
  }

  /** The error as a ParticipantError; a connection failure leaves the branch broken. */
  #mapped(err: unknown, what: string): ParticipantError {
    if (err instanceof ParticipantError) return err;
    const mapped = toParticipantError(err, this.resource, what);
    if (mapped.code === 'connection_failure') this.#state = 'broken';
    return mapped;
  }
}
