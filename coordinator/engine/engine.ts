import { ConflictError, NotFoundError, OverloadedError, UnavailableError, ValidationError } from '../errors.ts';
import { RETRY_AFTER_SECONDS } from './admission.ts';
import { branchGid } from './gid.ts';
import { DeferredBegin } from './deferred-begin.ts';
import type { BeginRecord } from './log-port.ts';
import type { EngineDeps } from './ports.ts';
import { abortInteractive, beginInteractive, commitInteractive, joinInteractive, type InteractiveBegin, type JoinedBranch } from './interactive.ts';
import { replayKeyed } from './keyed-replay.ts';
import { liveBranch } from './live-branch.ts';
import { detailOf, viewOf } from './transaction-views.ts';
import { resumeTransaction, type ResumeResult } from './resume-from-log.ts';
import { isFinal } from './states.ts';
import { deadlineStampedId } from './transaction-id.ts';
import { TransactionRun } from './transaction-run.ts';
import { commitTrusted, type CallerTransaction, type TrustedAnswer } from './trusted-commit.ts';
import type { LiveBranch, SubmitContext, SubmitRequest, TransactionDetail, TransactionView } from './types.ts';

// 2 s: a hot-path transaction ends in milliseconds, so almost none lives long enough to need a
// Redis reminder of its deadline; one that does (a slow statement, an unreachable database) pays
// two Redis commands, small beside what it already waits for.
const DEADLINE_JOB_GRACE_MS = 2_000;

export interface EngineOptions {
  /** Failed phase-2 attempts after which a transaction is flagged in doubt for operators. */
  inDoubtAfterAttempts: number;
  /**
   * How long a submitted transaction runs before its begin record is written; one decided sooner
   * has its row inserted by the decision (DeferredBegin). 0 writes every begin record at once.
   */
  beginDeferMs: number;
  /**
   * How long a `wait: "completed"` answer waits for phase 2 after the decision before answering
   * 202 with the decided status; phase 2 goes on in the background.
   */
  completionWaitMs: number;
}

/** The protocol engine: knows the log and the participants, nothing of HTTP or queues. */
export class Engine {
  readonly #deps: EngineDeps;
  readonly #options: EngineOptions;
  /** Runs in this process, by id: a replayed request joins the run instead of polling the log. */
  readonly #running = new Map<string, Promise<TransactionView>>();
  /**
   * Keyed begins of this process whose reply has not come back yet: a replay of the same key must
   * not take such a transaction for abandoned (see #replay) while its run is about to start.
   */
  readonly #beginning = new Set<string>();
  /** Interactive transactions begun here whose deadline job is not added yet (see beginInteractive). */
  readonly #interactiveReminders = new Map<string, NodeJS.Timeout>();
  /**
   * Interactive transactions of the embedded SDK whose begin record is deferred: their first
   * state change, the commit, inserts the row (beginInteractive's deferBegin).
   */
  readonly #deferredBegins = new Map<string, DeferredBegin>();
  /**
   * Transactions answered from memory whose completion record is still being written, with what
   * settles once it is: a read of one in this process waits for it, so that a client reading after
   * its answer sees what it was told.
   */
  readonly #completing = new Map<string, Promise<unknown>>();
  /** Transactions a job of this process, or a caller that took their lease (see alone), is driving from the log right now. */
  readonly #resuming = new Map<string, Promise<unknown>>();

  constructor(deps: EngineDeps, options: EngineOptions) {
    this.#deps = deps;
    this.#options = options;
  }

  get namespace(): string {
    return this.#deps.namespace;
  }

  /** Transactions this process is still driving (graceful shutdown waits for them). */
  get inFlight(): number {
    return this.#running.size;
  }

  async submit(request: SubmitRequest, context: SubmitContext): Promise<TransactionView> {
    for (const b of request.branches) {
      if (!this.#deps.participants.has(b.resource)) throw new ValidationError(`unknown resource "${b.resource}"`);
    }
    const receivedAt = Math.min(context.receivedAt ?? Date.now(), Date.now());
    const deadlineAt = receivedAt + request.timeoutMs;
    // The id carries the deadline: a coordinator that dies before the row is written leaves
    // branches that reconciliation can still roll back at their deadline (transaction-id.ts).
    const id = deadlineStampedId(deadlineAt);
    // Slots first, before the begin record is written: a refused request leaves nothing anywhere.
    const gids = request.branches.map((_, i) => branchGid(this.#deps.namespace, id, i));
    const ticket = await this.#deps.admission?.acquire(
      request.branches.map((b) => b.resource),
      gids,
      request.timeoutMs,
      Date.now() - receivedAt,
    );
    const release = () => ticket?.release();
    let view: TransactionView;
    try {
      view = await this.#start(request, context, id, gids, deadlineAt, release);
    } catch (err) {
      release(); // the run never started, or has ended (release is idempotent)
      throw err;
    }
    return decidedChecked(capacityChecked(view));
  }

  /** Writes the begin record and runs the transaction; `release` gives its slots back once the inline run ends. */
  async #start(request: SubmitRequest, context: SubmitContext, id: string, gids: string[], deadlineAt: number, release: () => void): Promise<TransactionView> {
    let onDecided: (v: TransactionView) => void = () => {};
    const decided = new Promise<TransactionView>((resolve) => {
      onDecided = resolve;
    });
    let onEnded: (v: TransactionView) => void = () => {};
    const ended = new Promise<TransactionView>((resolve) => {
      onEnded = resolve;
    });
    const run = new TransactionRun(this.#deps, id, request, gids, deadlineAt, {
      decided: (v) => onDecided(v),
      ended: (v) => {
        // Set by now: the run is registered as soon as it starts, and phase 2 comes after awaits.
        this.#completing.set(id, this.#running.get(id) ?? Promise.resolve());
        // Its branches hold nothing any more (phase 2 has ended on each): the client's next
        // transaction, sent on this answer, must not queue at admission behind this one's log write.
        release();
        onEnded(v);
      },
      followLog: (txId) => this.#followLog(txId),
    });
    const record: BeginRecord = {
      id,
      namespace: this.#deps.namespace,
      deadline: new Date(deadlineAt),
      submittedBy: context.actor,
      driver: this.#deps.instanceId,
      branches: request.branches.map((b, index) => ({ index, resource: b.resource, gid: run.gids[index]! })),
      timeoutMs: request.timeoutMs,
      idempotency: context.idempotency,
    };
    // A keyed record is written at once: the key must be durable before any branch is touched.
    const begin = new DeferredBegin(
      record,
      (r) => this.#deps.store.begin(r),
      context.idempotency ? 0 : this.#options.beginDeferMs,
      () => this.#deps.failpoints.hit('after-begin'),
    );
    if (context.idempotency) {
      // A keyed request must know it is the first before touching any database.
      this.#beginning.add(id);
      const outcome = await begin.start().catch((err: unknown) => {
        this.#beginning.delete(id);
        throw err;
      });
      if (!outcome.created) {
        this.#beginning.delete(id);
        if (outcome.requestHash !== context.idempotency.requestHash) {
          throw new ConflictError('idempotency_key_reused', `Idempotency-Key "${context.idempotency.key}" was used with a different request body`);
        }
        release();
        context.onReplay?.();
        return replayKeyed(
          this.#deps,
          { running: (x) => this.#running.get(x), beginning: (x) => this.#beginning.has(x), completionWaitMs: this.#options.completionWaitMs },
          outcome.existingId,
          request.wait,
        );
      }
    }
    // Insurance against this process dying, at no cost per transaction: reconciliation's sweep
    // aborts an overdue transaction whose driver's lease lapsed within one interval of its
    // deadline. Only one still running after the grace period gets a delayed job at its exact
    // deadline (not awaited, allowed to fail: the sweep covers a lost reminder too).
    const { followUp } = this.#deps;
    let reminded = false;
    const reminder = setTimeout(() => {
      if (deadlineAt <= Date.now()) return;
      reminded = true;
      followUp.deadlineSet(id, deadlineAt).catch(() => {});
    }, DEADLINE_JOB_GRACE_MS);

    const full = run.run(begin);
    this.#running.set(id, full);
    this.#beginning.delete(id);
    const settle = (view?: TransactionView) => {
      clearTimeout(reminder);
      this.#running.delete(id);
      this.#completing.delete(id);
      release();
      if (view && isCapacityRefusal(view)) this.#deps.admission?.exhausted(view.error!.resource!);
      if (reminded && view && isFinal(view.status)) followUp.deadlineCleared(id).catch(() => {});
    };
    full.then(settle, () => settle());
    return this.#answer(full, ended, decided, request.wait);
  }

  /** The overload refusal a submission gets before its body is read, when nothing could admit it now (see Admission.shed). */
  shed(): OverloadedError | null {
    return this.#deps.admission?.shed() ?? null;
  }

  /**
   * Begins an interactive transaction: the service runs and prepares its branches itself.
   * deferBegin (the embedded SDK, which begins only to commit what it already ran, and gives the id
   * to no one else before): the begin record is deferred as a submission's is, and the trusted
   * commit inserts the row; any other call naming the transaction first writes it.
   */
  async beginInteractive(resources: string[], timeoutMs: number, actor: string | null, options: { deferBegin?: boolean } = {}): Promise<InteractiveBegin> {
    for (const r of resources) if (!this.#deps.participants.has(r)) throw new ValidationError(`unknown resource "${r}"`);
    const defer = options.deferBegin && this.#options.beginDeferMs > 0 ? (record: BeginRecord) => this.#deferBegin(record) : undefined;
    const begun = await beginInteractive(this.#deps, resources, timeoutMs, actor, defer);
    // The service drives it and may die after preparing: reconciliation's sweep rolls it back after
    // its deadline. As for a submission, only one still open after the grace period gets a delayed
    // deadline job (most are committed within milliseconds, by a call to this instance).
    const deadlineAt = Date.parse(begun.deadline);
    const timer = setTimeout(() => {
      this.#interactiveReminders.delete(begun.id);
      if (deadlineAt > Date.now()) this.#deps.followUp.deadlineSet(begun.id, deadlineAt).catch(() => {});
    }, DEADLINE_JOB_GRACE_MS);
    timer.unref();
    this.#interactiveReminders.set(begun.id, timer);
    return begun;
  }

  #deferBegin(record: BeginRecord): void {
    const begin = new DeferredBegin(
      record,
      (r) => this.#deps.store.begin(r),
      this.#options.beginDeferMs,
      () => {
        this.#deferredBegins.delete(record.id);
        this.#deps.failpoints.hit('after-begin');
      },
    );
    this.#deferredBegins.set(record.id, begin);
  }

  /** Writes a deferred begin record now: a call that reads or changes the transaction's row needs it. */
  async #ensureBegun(id: string): Promise<void> {
    const begin = this.#deferredBegins.get(id);
    if (!begin) return;
    await begin.start();
    this.#deferredBegins.delete(id);
  }

  /** Its outcome was asked of this instance: no reminder is needed any more (one already added is removed). */
  #interactiveSettled(id: string): void {
    this.#deferredBegins.get(id)?.dispose();
    this.#deferredBegins.delete(id);
    const timer = this.#interactiveReminders.get(id);
    if (timer) {
      clearTimeout(timer);
      this.#interactiveReminders.delete(id);
    } else {
      // Added already, or by another instance's timer: a job left would drive a finished transaction later.
      this.#deps.followUp.deadlineCleared(id).catch(() => {});
    }
  }

  /** Adds a branch on `resource` to an active interactive transaction, for another service to prepare. */
  async joinInteractive(id: string, resource: string, actor: string | null): Promise<JoinedBranch> {
    if (!this.#deps.participants.has(resource)) throw new ValidationError(`unknown resource "${resource}"`);
    await this.#ensureBegun(id);
    return joinInteractive(this.#deps, id, resource, actor);
  }

  /** Commits an interactive transaction if every branch is really prepared; otherwise it aborts. */
  async commitInteractive(id: string, actor: string | null): Promise<void> {
    try {
      await this.#ensureBegun(id);
      await this.alone(id, () => commitInteractive(this.#deps, id, actor));
    } finally {
      this.#interactiveSettled(id);
    }
  }

  /**
   * The embedded SDK's commit of branches it prepared itself (see trusted-commit.ts): the answer
   * from memory, or null once committed (or refused) the checked way, whose answer is in the log.
   */
  async commitTrusted(id: string, caller: CallerTransaction, actor: string | null): Promise<TrustedAnswer | null> {
    try {
      const begin = this.#deferredBegins.get(id);
      this.#deferredBegins.delete(id);
      const unwritten = begin ? await begin.claim() : null;
      const fast = await commitTrusted(this.#deps, id, caller, actor, unwritten, (completion) => {
        const recorded = completion.then(
          () => {},
          () => {},
        );
        this.#completing.set(id, recorded);
        void recorded.then(() => this.#completing.delete(id));
      });
      if (fast === 'fallback') {
        // The checked way reads the transaction's row: one never written is written now (recovery's
        // tombstone, if it got there first, stays, and the checked way answers its abort).
        if (unwritten) await this.#deps.store.begin(unwritten);
        await this.alone(id, () => commitInteractive(this.#deps, id, actor));
      }
      return typeof fast === 'object' ? fast : null;
    } finally {
      this.#interactiveSettled(id);
    }
  }

  async abortInteractive(id: string, actor: string | null): Promise<void> {
    try {
      await this.#ensureBegun(id);
      await this.alone(id, () => abortInteractive(this.#deps, id, actor));
    } finally {
      this.#interactiveSettled(id);
    }
  }

  /** The resources of a transaction's branches and the token that began it, from the log alone: for access checks on the hot path. */
  async accessOf(id: string): Promise<{ resources: string[]; owner: string | null }> {
    const access = await this.#deps.store.accessOf(id);
    if (!access) throw new NotFoundError(`transaction ${id} not found`);
    return access;
  }

  /**
   * Resolves once the completion record of every answer this process has already given is written
   * (or its write has failed: that is the run's to handle, and recovery writes it). For the reads
   * that list the log: a client reading after its answer, through this instance, finds what it was told.
   */
  async answersRecorded(): Promise<void> {
    if (this.#completing.size === 0) return;
    await Promise.allSettled(this.#completing.values());
  }

  /** The log's view of a transaction with its audit trail. */
  async get(id: string): Promise<TransactionDetail> {
    // As answersRecorded, for this transaction alone.
    await this.#completing.get(id)?.catch(() => {});
    await this.#ensureBegun(id);
    const tx = await this.#deps.store.load(id);
    if (!tx) throw new NotFoundError(`transaction ${id} not found`);
    const detail = detailOf(tx);
    const unfinished = !isFinal(tx.status);
    detail.branchDetails = await Promise.all(
      tx.branches.map(
        async (b): Promise<LiveBranch> => ({
          resource: b.resource,
          gid: b.gid,
          xid: b.xid,
          heuristic: b.heuristic,
          lastError: b.lastError ?? null,
          ...(unfinished ? { live: await liveBranch(this.#deps.participants, b.resource, b.gid) } : {}),
        }),
      ),
    );
    return detail;
  }

  /**
   * Drives a transaction from the log (the completion and deadline jobs call this). A failed
   * attempt is counted; enough of them flag the transaction in doubt for operators.
   */
  async resume(id: string): Promise<ResumeResult> {
    if (this.#running.has(id)) return { state: 'busy' }; // its driver is in this process
    // One driver per transaction inside this instance too: the lease admits its own holder, so a
    // completion job and a deadline job (or reconciliation's requeue) of one transaction would
    // otherwise both send every COMMIT PREPARED. The second one retries later and finds it done.
    if (this.#resuming.has(id)) return { state: 'busy' };
    const driving = this.#resumeOnce(id);
    this.#resuming.set(id, driving);
    try {
      return await driving;
    } finally {
      this.#resuming.delete(id);
    }
  }

  async #resumeOnce(id: string): Promise<ResumeResult> {
    const result = await resumeTransaction(this.#deps, id);
    if (result.state === 'pending' && result.error) {
      await this.#deps.recovery
        .recordFailedAttempt(id, result.error, this.#options.inDoubtAfterAttempts, result.settled)
        .catch((err: unknown) => this.#deps.logger.warn({ err, transactionId: id }, 'could not record a failed attempt'));
    }
    return result;
  }

  /**
   * Runs `fn` (an operator's resolution, a client's commit or abort: whatever takes the lease of a
   * transaction from the log) as this process's one driver of transaction `id`: once a job of this
   * process driving it has ended, and with jobs that start meanwhile told it is busy. Both act
   * under this instance's id, which the lease admits as its own holder: a job ending with nothing
   * to do let go of the lease `fn` had just taken, whose decision then failed as stale (an operator
   * was refused 409 busy, a client told "decided meanwhile") with nobody else driving it.
   */
  async alone<T>(id: string, fn: () => Promise<T>): Promise<T> {
    for (let held = this.#resuming.get(id); held; held = this.#resuming.get(id)) await held.catch(() => {});
    const run = fn();
    this.#resuming.set(id, run);
    try {
      return await run;
    } finally {
      this.#resuming.delete(id);
    }
  }

  /** Resolves once every transaction this process drives has finished. */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.#running.values(), ...this.#completing.values()]);
  }

  /**
   * The answer: the run's end (`full`, or `ended` just before its completion record), or, once
   * decided, the decision itself, at once for `wait: 'decided'` and after the completion wait
   * otherwise. One promise settled by whichever comes first, rather than races of races: this is
   * every submission's path (issue 13).
   */
  #answer(
    full: Promise<TransactionView>,
    ended: Promise<TransactionView>,
    decided: Promise<TransactionView>,
    wait: SubmitRequest['wait'],
  ): Promise<TransactionView> {
    return new Promise<TransactionView>((resolve, reject) => {
      let answered = false;
      let timer: NodeJS.Timeout | undefined;
      const answer = (v: TransactionView) => {
        if (answered) return;
        answered = true;
        clearTimeout(timer);
        resolve(v);
      };
      full.then(answer, (err: unknown) => {
        if (answered) return;
        answered = true;
        clearTimeout(timer);
        reject(err);
      });
      ended.then(answer);
      decided.then((v) => {
        if (answered) return;
        if (wait === 'decided') answer(v);
        else timer = setTimeout(() => answer(v), this.#options.completionWaitMs);
      });
    });
  }

  /** The log's view after following it, or null when the log holds no such transaction (its record was lost). */
  async #followLog(id: string): Promise<TransactionView | null> {
    await resumeTransaction(this.#deps, id);
    const tx = await this.#deps.store.load(id);
    return tx ? viewOf(tx) : null;
  }
}

// Postgres' "maximum number of prepared transactions reached" (ERRCODE_OUT_OF_MEMORY, class 53).
const PREPARED_SLOTS_FULL = '53200';

/**
 * Aborted because a PREPARE found its cluster's prepared-transaction slots all taken (by someone
 * else). At PREPARE only (no statement index): 53200 from a statement is the server out of memory.
 */
function isCapacityRefusal(view: TransactionView): boolean {
  return (
    (view.status === 'aborted' || view.status === 'aborting') &&
    view.error?.code === PREPARED_SLOTS_FULL &&
    view.error.resource !== null &&
    view.error.statement === null
  );
}

/**
 * A capacity problem is not the client's conflict: the transaction aborted (nothing applied, the
 * reason recorded), and the client is told to come back later, as for a refusal at admission. The
 * same holds when a repeated Idempotency-Key replays it.
 */
function capacityChecked(view: TransactionView): TransactionView {
  if (!isCapacityRefusal(view)) return view;
  throw new OverloadedError(
    `a PREPARE on resource "${view.error!.resource}" was refused: its cluster's prepared-transaction slots are all held (SQLSTATE 53200). ` +
      `Transaction ${view.id} was aborted and nothing was applied; retry after ${RETRY_AFTER_SECONDS} s (with a new Idempotency-Key, if you sent one)`,
    view.error!.resource!,
    'prepare_refused',
    RETRY_AFTER_SECONDS,
    view.id,
  );
}

/**
 * 202 means decided. A transaction still undecided when the answer is due (an operator took it
 * over from its driver; a repeated key's first attempt overdue and held by another recovering
 * process) is answered 503 with Retry-After: asking again, with the same Idempotency-Key or by
 * GET, gives the outcome once it is decided.
 */
function decidedChecked(view: TransactionView): TransactionView {
  if (view.status !== 'active') return view;
  throw new UnavailableError(
    `transaction ${view.id} is not decided yet; ask again after ${RETRY_AFTER_SECONDS} s (GET /v1/transactions/${view.id}, or the same request with the same Idempotency-Key)`,
    { retryAfterSeconds: RETRY_AFTER_SECONDS },
  );
}
