import type { Kysely } from 'kysely';
import type pg from 'pg';
import type { GlobalTransaction, JoinedBranch, Outcome } from './client.ts';
import { answerDetail, type CoordinatorAnswer, type CoordinatorCall } from './coordinator-call.ts';
import { TransactionAbortedError, TransactionOutcomeUnknownError, type AbortCode } from './errors.ts';
import { LocalBranch } from './local-branch.ts';
import { isStatementCanceled } from './statement-cancel.ts';

// A cancelled statement this close to the deadline is taken for the deadline. The branch's
// statement_timeout (set at BEGIN to the time left, rounded up) should not fire before the
// deadline, but its error can reach this process before the SDK's own timer runs (an I/O callback
// may run before a due timer), and the server's clock and ours tick apart by a few milliseconds.
// A cancel from elsewhere this close to the deadline changes nothing: no prepare and commit round
// trip could have been completed in the time left.
const DEADLINE_MARGIN_MS = 50;

/** The coordinator's transaction, once begun: its id, deadline and the gid of every branch it knows. */
interface Global {
  id: string;
  deadline: string;
  gids: Map<string, string>;
}

/**
 * One run of a transaction's callback, under one overall budget: the deadline is the start of the
 * attempt plus `timeoutMs`, as in the engine. Each branch opened later gets the time left as its
 * statement_timeout (the server-side backstop), a timer at the deadline cancels the statements in
 * flight, and the coordinator's transaction gets the time left as its own timeout.
 */
export class Attempt {
  /** On the monotonic clock (as setTimeout's), so a step of the wall clock cannot move it. */
  readonly #deadlineAt: number;
  /** Local branches by resource, while they open (a second branch() call waits on the first). */
  readonly #locals = new Map<string, Promise<LocalBranch>>();
  /** Local branches whose BEGIN has completed and whose transaction is not yet ended. */
  readonly #open = new Set<LocalBranch>();
  /** Resources joined for other services (at once, so a local branch on one is refused before the call returns). */
  readonly #joined = new Set<string>();
  #global: Global | null = null;
  /** Begin and join calls, one after the other: two first joins must not begin two transactions. */
  #turn: Promise<unknown> = Promise.resolve();
  /** No new branch or join: the callback has returned or failed, or the deadline passed. */
  #closed = false;
  #deadlinePassed = false;
  readonly #expired: Promise<never>;
  readonly #timer: NodeJS.Timeout;
  /** The timer's work, one turn after it fired (see the constructor). */
  #due: NodeJS.Immediate | undefined;

  constructor(
    private readonly pools: Record<string, pg.Pool>,
    private readonly call: CoordinatorCall,
    private readonly timeoutMs: number,
  ) {
    this.#deadlineAt = performance.now() + timeoutMs;
    let expire!: (err: Error) => void;
    this.#expired = new Promise<never>((_, reject) => {
      expire = reject;
    });
    this.#expired.catch(() => {}); // not awaited once the callback has returned
    // Due, the timer first yields one turn of the event loop: an answer already received (a
    // statement's own timeout, fired just before the deadline while this process waited for a core)
    // is read first and becomes the failure's cause, instead of losing the race to a late timer.
    this.#timer = setTimeout(() => {
      this.#due = setImmediate(() => {
        this.#deadlinePassed = true;
        this.#closed = true;
        // A statement waiting on a lock would hold the attempt past its deadline: cancel it now.
        for (const b of this.#open) void b.cancel();
        expire(this.#deadlineError(null));
      });
    }, timeoutMs);
  }

  readonly tx: GlobalTransaction = {
    branch: <DB>(resource: string) => this.#branch(resource) as Promise<Kysely<DB>>,
    join: (resource: string) => this.#join(resource),
  };

  async run<T>(fn: (tx: GlobalTransaction) => Promise<T>): Promise<{ result: T; outcome: Outcome }> {
    let result: T;
    try {
      result = await Promise.race([fn(this.tx), this.#expired]);
    } catch (err) {
      // Judged before the rollback, whose time must not turn the callback's own error into a deadline.
      const late = this.#atDeadline(err);
      const aborted = await this.#abandon();
      if (late) throw this.#deadlineError(aborted, err);
      throw err;
    }
    clearTimeout(this.#timer);
    clearImmediate(this.#due);
    return this.#complete(result);
  }

  async #branch(resource: string): Promise<Kysely<unknown>> {
    this.#assertOpen();
    if (this.#joined.has(resource)) {
      throw new Error(`resource "${resource}" is joined for another service in this transaction; it cannot also be a local branch`);
    }
    let opening = this.#locals.get(resource);
    if (!opening) {
      const pool = this.pools[resource];
      if (!pool) throw new Error(`no pool for resource "${resource}" was given to createClient`);
      opening = this.#openLocal(pool, resource);
      this.#locals.set(resource, opening);
    }
    // Waiting for a free connection ends at the deadline too; a connection that comes later rolls itself back.
    return (await Promise.race([opening, this.#expired])).db;
  }

  async #openLocal(pool: pg.Pool, resource: string): Promise<LocalBranch> {
    const b = await LocalBranch.open(pool, resource, this.#remainingMs(), this.call.mayLeaveSessionState);
    if (this.#closed) {
      await b.finish('ROLLBACK');
      throw this.#deadlinePassed ? this.#deadlineError(null) : this.#endedError();
    }
    this.#open.add(b);
    return b;
  }

  async #join(resource: string): Promise<JoinedBranch> {
    this.#assertOpen();
    if (this.#locals.has(resource)) {
      throw new Error(`resource "${resource}" is a local branch of this transaction; it cannot be joined for another service too`);
    }
    this.#joined.add(resource);
    const joined = this.#inTurn(async () => {
      if (!this.#global) await this.#begin([resource]);
      else if (!this.#global.gids.has(resource)) await this.#addBranch(this.#global, resource);
      const g = this.#global!;
      return { transactionId: g.id, gid: g.gids.get(resource)!, deadline: g.deadline };
    });
    return Promise.race([joined, this.#expired]);
  }

  /** Runs coordinator calls one at a time, whatever became of the previous one. */
  #inTurn<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#turn.then(fn);
    this.#turn = run.catch(() => {});
    return run;
  }

  /**
   * forCommit: begun to commit what this attempt ran, the id given to no other service first; an
   * embedded coordinator (the only one with a trusted commit) then defers the begin record and its
   * commit writes the row (Engine.beginInteractive). A REST coordinator is never asked.
   */
  async #begin(resources: string[], forCommit = false): Promise<void> {
    const left = this.#remainingMs();
    if (left <= 0) throw this.#deadlineError(null);
    const r = await this.call('POST', '/v1/transactions', {
      interactive: true,
      branches: resources.map((resource) => ({ resource })),
      timeoutMs: Math.ceil(left),
      ...(forCommit && this.call.commitPrepared ? { deferBegin: true } : {}),
    });
    if (r.status !== 201 || !r.body) throw this.#refused('begin_failed', 'the coordinator did not begin the transaction', r);
    const branches = r.body.branches as { resource: string; gid: string }[];
    this.#global = { id: r.body.id as string, deadline: r.body.deadline as string, gids: new Map(branches.map((b) => [b.resource, b.gid])) };
  }

  async #addBranch(g: Global, resource: string): Promise<void> {
    const r = await this.call('POST', `/v1/transactions/${g.id}/branches`, { resource });
    if ((r.status !== 201 && r.status !== 200) || !r.body) throw this.#refused('join_failed', `the coordinator did not add a branch on ${resource}`, r);
    g.gids.set(resource, r.body.gid as string);
  }

  /**
   * The callback returned: read-only branches commit here and now; if anything else remains, the
   * writing branches become branches of the coordinator's transaction (begun now, or joined to
   * the one begun by tx.join), are prepared under their gids, and the coordinator decides.
   */
  async #complete<T>(result: T): Promise<{ result: T; outcome: Outcome }> {
    this.#closed = true;
    for (const b of this.#open) b.seal();
    await this.#turn; // a join the callback did not wait for
    if (performance.now() >= this.#deadlineAt) {
      this.#deadlinePassed = true;
      throw this.#deadlineError(await this.#abandon());
    }
    const writers: LocalBranch[] = [];
    /** The xid of each branch prepared here, by resource: known from the probe, or learnt with PREPARE. */
    const xids = new Map<string, string | null>();
    try {
      // A branch that ran only SELECTs is asked whether it wrote (all at once, one round trip each,
      // in parallel); one that ran anything else is taken for a writer, and learns its xid with PREPARE.
      const asked = [...this.#open].filter((b) => !b.mayHaveWritten);
      writers.push(...[...this.#open].filter((b) => b.mayHaveWritten));
      const probed = await Promise.allSettled(asked.map((b) => b.xid()));
      const refused = probed.find((w): w is PromiseRejectedResult => w.status === 'rejected');
      if (refused) throw refused.reason;
      const readers: LocalBranch[] = [];
      asked.forEach((b, i) => {
        const xid = (probed[i] as PromiseFulfilledResult<string | null>).value;
        if (xid === null) readers.push(b);
        else {
          writers.push(b);
          xids.set(b.resource, xid);
        }
      });
      await Promise.all(
        readers.map((b) => {
          this.#open.delete(b);
          return b.finish('COMMIT');
        }),
      );
      if (writers.length === 0 && !this.#global) return { result, outcome: { id: null, status: 'committed' } };
      // Begun only to commit what ran here: the id reaches no one else before the commit.
      if (!this.#global)
        await this.#begin(
          writers.map((b) => b.resource),
          true,
        );
      else await Promise.all(writers.filter((b) => !this.#global!.gids.has(b.resource)).map((b) => this.#addBranch(this.#global!, b.resource)));
    } catch (err) {
      // A read-only branch's COMMIT or the check of what a branch wrote can meet the statement bound too.
      const late = !(err instanceof TransactionAbortedError) && this.#atDeadline(err);
      const aborted = await this.#abandon();
      if (late) throw this.#deadlineError(aborted, err);
      if (err instanceof TransactionAbortedError) throw new TransactionAbortedError(err.code, err.message, err.outcome ?? aborted, { cause: err.cause });
      throw err;
    }
    const g = this.#global!;
    const prepared = await Promise.allSettled(
      writers.map(async (b) => {
        this.#open.delete(b);
        const gid = g.gids.get(b.resource)!;
        let ok: boolean;
        if (xids.has(b.resource)) ok = await b.prepare(gid);
        else {
          const r = await b.prepareWithXid(gid);
          ok = r.prepared;
          xids.set(b.resource, r.xid);
        }
        if (!ok) throw new Error(`PREPARE on ${b.resource} was rolled back by the server: its transaction had failed`);
      }),
    );
    const failed = prepared.find((p): p is PromiseRejectedResult => p.status === 'rejected');
    if (failed) {
      const late = this.#atDeadline(failed.reason);
      const aborted = await this.#abandon();
      if (late) throw this.#deadlineError(aborted, failed.reason);
      throw new TransactionAbortedError('prepare_failed', `a branch could not be prepared; transaction ${g.id} is aborted`, aborted, { cause: failed.reason });
    }
    return { result, outcome: await this.#commit(g, xids) };
  }

  /**
   * Asks the coordinator to decide. An embedded one is told each branch this attempt prepared
   * (every PREPARE above succeeded) with its xid, and looks up only the joined ones; over REST the
   * coordinator looks every branch up itself.
   */
  async #commit(g: Global, xids: Map<string, string | null>): Promise<Outcome> {
    const trusted = this.call.commitPrepared;
    const branches = [...g.gids].map(([resource, gid]) => ({ resource, gid, joined: !xids.has(resource), xid: xids.get(resource) ?? null }));
    const r = trusted ? await trusted(g.id, { deadline: g.deadline, branches }) : await this.call('POST', `/v1/transactions/${g.id}/commit`);
    if (r.status === 200 || r.status === 202) return r.body as Outcome;
    if (r.status === 0 || r.status >= 500) {
      // No answer: the decision may or may not be written. An abort request settles it either way:
      // it wins if there is none yet, and answers the outcome if there is.
      const settled = await this.call('POST', `/v1/transactions/${g.id}/abort`);
      const status = settled.body?.status as string | undefined;
      if (status === 'committed' || status === 'committing') return settled.body as Outcome;
      if (status === 'aborted' || status === 'aborting') {
        const late = settled.body?.error?.code === 'deadline_exceeded';
        throw this.#refused(late ? 'deadline_exceeded' : 'commit_refused', `transaction ${g.id} did not commit`, settled);
      }
      // Neither answer says what was decided: only the log knows, and it may well say committed.
      throw new TransactionOutcomeUnknownError(
        g.id,
        `the coordinator did not answer the commit of transaction ${g.id} (${answerDetail(r)}), nor the abort that would settle it ` +
          `(${answerDetail(settled)}); it may have committed: ask tpc.outcome('${g.id}') before doing the work again`,
      );
    }
    const refusal = r.body?.refusal?.code as string | undefined;
    throw this.#refused(refusal === 'deadline_passed' ? 'deadline_exceeded' : 'commit_refused', `transaction ${g.id} did not commit`, r);
  }

  /**
   * Ends everything without a commit: statements still running are cancelled (ROLLBACK would wait
   * behind them), every local branch is rolled back, and the coordinator's transaction, if any, is
   * aborted, which rolls back whatever other services prepared. Returns the abort's answer.
   */
  async #abandon(): Promise<Outcome | null> {
    this.#closed = true;
    clearTimeout(this.#timer);
    clearImmediate(this.#due);
    const open = [...this.#open];
    this.#open.clear();
    await Promise.all(
      open.map(async (b) => {
        await b.cancel();
        await b.finish('ROLLBACK');
      }),
    );
    await this.#turn; // a begin in flight: its transaction must be aborted too
    if (!this.#global) return null;
    const r = await this.call('POST', `/v1/transactions/${this.#global.id}/abort`);
    // No answer: the coordinator's deadline aborts the transaction all the same.
    return (r.body as Outcome | null) ?? null;
  }

  /**
   * Whether a failure belongs to the deadline: the SDK's timer fired, the deadline has passed, or
   * a statement was cancelled within {@link DEADLINE_MARGIN_MS} of it (the branch's own statement
   * bound, which can win the race against the timer). A 57014 well before the deadline is not
   * ours (a statement_timeout the callback set, an operator's cancel) and stays as it is.
   */
  #atDeadline(err: unknown): boolean {
    const now = performance.now();
    return this.#deadlinePassed || now >= this.#deadlineAt || (isStatementCanceled(err) && now >= this.#deadlineAt - DEADLINE_MARGIN_MS);
  }

  #remainingMs(): number {
    return Math.max(0, this.#deadlineAt - performance.now());
  }

  #assertOpen(): void {
    if (this.#deadlinePassed || performance.now() >= this.#deadlineAt) throw this.#deadlineError(null);
    if (this.#closed) throw this.#endedError();
  }

  #endedError(): Error {
    return new Error('the global transaction has ended: branch() and join() are for use inside its callback only');
  }

  #deadlineError(outcome: Outcome | null, cause?: unknown): TransactionAbortedError {
    const because = cause instanceof TransactionAbortedError && cause.code === 'deadline_exceeded' ? undefined : cause;
    return new TransactionAbortedError(
      'deadline_exceeded',
      `the transaction did not commit within its deadline of ${this.timeoutMs} ms; every branch was rolled back`,
      outcome,
      because === undefined ? undefined : { cause: because },
    );
  }

  #refused(code: AbortCode, what: string, answer: CoordinatorAnswer): TransactionAbortedError {
    const isOutcome = typeof answer.body?.status === 'string' && typeof answer.body?.id === 'string';
    return new TransactionAbortedError(code, `${what}: ${answerDetail(answer)}`, isOutcome ? (answer.body as Outcome) : null);
  }
}
