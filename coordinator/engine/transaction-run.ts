import { performance } from 'node:perf_hooks';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { ParticipantError } from '../../participant-adapter/errors.ts';
import { StaleStateError, UnavailableError, UnwrittenError } from '../errors.ts';
import { runBranchWork, type BranchWork, type BranchWorkOk } from './branch-work.ts';
import { inSpan } from '../observability/tracing.ts';
import { WorkControl } from './deadline.ts';
import { fateStatus, finishAll, type FinishResult, type Outcome, type PreparedRef } from './phase-two.ts';
import type { DeferredBegin } from './deferred-begin.ts';
import type { BeginRecord, BranchUpdate } from './log-port.ts';
import type { EngineDeps } from './ports.ts';
import { complete, decide, hazardError, type Hazard } from './state-changes.ts';
import type { BranchStatus, TxStatus } from './states.ts';
import type { StatementOutcome, SubmitRequest, TransactionView, TxError } from './types.ts';

// How long a driver keeps asking a log it cannot read before it hands the transaction to recovery.
const LOG_WAIT_MS = 5_000;
const LOG_RETRY_MS = 250;

export interface RunHooks {
  /** Called once the decision is durable (or the outcome final), before phase 2 finishes. */
  decided(view: TransactionView): void;
  /**
   * Called once phase 2 has ended every branch after a written decision, with the final answer,
   * just before the completion record is written: the outcome can no longer change (the decision
   * stands, the databases have done it), and the record need not be waited for (not forced; a
   * lost one is written again by recovery, which finds the branches done).
   */
  ended?(view: TransactionView): void;
  /**
   * Resolves the transaction from the log when a compare-and-set found it moved; null when the log
   * holds no such transaction at all. Throws when the log cannot be read.
   */
  followLog(id: string): Promise<TransactionView | null>;
}

/**
 * One submitted transaction driven through presumed abort, from the work to the completion.
 * Holds what it learns in memory, so the answer is built without reading the log back.
 */
export class TransactionRun {
  readonly #deps: EngineDeps;
  readonly #id: string;
  readonly #request: SubmitRequest;
  readonly #gids: string[];
  readonly #control: WorkControl;
  readonly #hooks: RunHooks;
  readonly #started = performance.now();
  #results: StatementOutcome[][];
  #statuses: BranchStatus[];
  #readOnly: boolean[];
  /** Each prepared branch's xid, as the commit decision wrote it (null: read-only, none written). */
  #xids: (string | null)[] = [];
  #fates: (string | undefined)[] = [];
  /** The begin record while no row holds it: the first state change inserts the row (DeferredBegin). */
  #unwritten: BeginRecord | null = null;

  /** `gids`: each branch's, as branchGid names them (the caller made them for admission). */
  constructor(deps: EngineDeps, id: string, request: SubmitRequest, gids: string[], deadlineAt: number, hooks: RunHooks) {
    this.#deps = deps;
    this.#id = id;
    this.#request = request;
    this.#hooks = hooks;
    this.#gids = gids;
    this.#control = new WorkControl(deadlineAt);
    this.#results = request.branches.map(() => []);
    this.#statuses = request.branches.map(() => 'active');
    this.#readOnly = request.branches.map(() => false);
  }

  get gids(): readonly string[] {
    return this.#gids;
  }

  /** `begin` is the begin record, deferred or written by the caller, claimed here before any decision. */
  async run(begin: DeferredBegin): Promise<TransactionView> {
    const resources = this.#request.branches.map((b) => b.resource);
    return inSpan('tpc.transaction', { 'tpc.transaction.id': this.#id, 'tpc.resources': resources }, async (span) => {
      try {
        const view = await this.#drive(begin);
        span.setAttribute('tpc.transaction.status', view.status);
        if (view.error) span.setAttribute('tpc.error.code', view.error.code);
        this.#deps.observer.outcome(view.status);
        this.#deps.observer.phase('total', (performance.now() - this.#started) / 1000);
        return view;
      } finally {
        begin.dispose();
        this.#control.dispose();
      }
    });
  }

  async #drive(begin: DeferredBegin): Promise<TransactionView> {
    const { participants } = this.#deps;
    // One branch commits in one phase, unless its participant cannot hold a branch open across the
    // log write (HTTP): then it is prepared like any other.
    const multi = this.#request.branches.length > 1 || this.#request.branches.some((b) => !participants.get(b.resource)!.onePhase);
    const t0 = performance.now();
    const work = await inSpan(multi ? 'tpc.prepare' : 'tpc.work', { 'tpc.transaction.id': this.#id }, () =>
      Promise.all(
        this.#request.branches.map((spec, i) =>
          inSpan('tpc.branch.work', { 'tpc.transaction.id': this.#id, 'tpc.resource': spec.resource, 'tpc.branch.index': i, 'tpc.gid': this.#gids[i]! }, () =>
            runBranchWork(participants.get(spec.resource)!, spec, i, multi ? this.#gids[i]! : null, this.#control, this.#deps.failpoints),
          ),
        ),
      ),
    );
    this.#deps.observer.phase(multi ? 'prepare' : 'work', (performance.now() - t0) / 1000);

    let beginError: unknown = null;
    try {
      this.#unwritten = await begin.claim();
    } catch (err) {
      beginError = err;
    }
    if (beginError !== null) {
      // Without a begin record nothing can be decided: undo every branch and say so.
      await this.#undoUnlogged(work);
      throw new UnavailableError('the transaction log could not record the transaction; nothing was applied', { cause: beginError });
    }
    const failed = work.filter((w) => !w.ok);
    if (failed.length > 0 || this.#control.expired) return this.#abort(work, this.#abortReason(work));
    return multi ? this.#twoPhase(work as BranchWorkOk[]) : this.#onePhase(work[0] as BranchWorkOk);
  }

  /** The reason an abort reports: the deadline, else the branch that failed first on its own. */
  #abortReason(work: BranchWork[]): TxError {
    const failed = work.flatMap((w) => (w.ok ? [] : [w]));
    const deadline = this.#control.stopReason?.kind === 'deadline' || (this.#control.expired && !failed.some((f) => f.primary));
    if (deadline || failed.some((f) => f.primary && f.error.code === '57014' && this.#control.expired)) {
      const blocked = failed.find((f) => f.error.statement !== null) ?? failed[0];
      const where = blocked?.error.statement != null ? ` while statement ${blocked.error.statement} on ${blocked.error.resource} was running` : '';
      return {
        resource: blocked?.error.resource ?? null,
        statement: blocked?.error.statement ?? null,
        code: 'deadline_exceeded',
        message: `deadline passed: the transaction did not finish within ${this.#request.timeoutMs} ms${where}`,
      };
    }
    return (failed.find((f) => f.primary) ?? failed[0])!.error;
  }

  async #twoPhase(work: BranchWorkOk[]): Promise<TransactionView> {
    work.forEach((w) => {
      this.#results[w.index] = w.results;
      this.#statuses[w.index] = 'prepared';
      // Prepared without an xid: the branch wrote nothing; it is committed with the others and
      // its outcome cannot matter.
      this.#readOnly[w.index] = w.xid === null;
      this.#xids[w.index] = w.xid;
    });
    const refs = work.map((w) => this.#ref(w.index, w.xid));
    const t0 = performance.now();
    try {
      await inSpan('tpc.decide', { 'tpc.transaction.id': this.#id, 'tpc.decision': 'commit' }, () =>
        decide(
          this.#deps,
          this.#id,
          {
            outcome: 'commit',
            checked: this.#request.branches.length,
            branches: work.map((w) => ({
              index: w.index,
              resource: this.#request.branches[w.index]!.resource,
              gid: this.#gids[w.index]!,
              xid: w.xid,
              readOnly: w.xid === null,
            })),
            // This run wrote the row's begin record (or holds it), so it knows every field of every branch.
            whole: true,
          },
          { by: 'driver' },
          this.#takeUnwritten(),
        ),
      );
    } catch (err) {
      // The first write of the transaction certainly failed (the log down or refusing it): no
      // decision exists, so every branch is rolled back now and the client told nothing applied.
      if (err instanceof UnwrittenError) {
        await finishAll(this.#deps.participants, refs, 'abort', this.#deps.failpoints);
        throw new UnavailableError('the transaction log could not record the transaction; nothing was applied', { cause: err });
      }
      // Another process moved it first (StaleStateError), or the decision may or may not be on
      // disk (the log died under it, as in a failover): either way the log is asked. A decision
      // that reached the promoted standby is finished now; a begin record that did not (unforced)
      // is gone, and with it any decision: the branches are rolled back at once. Handing off
      // instead left those to the orphan timeout (TPC_MAX_TIMEOUT_MS): recovery finds no record.
      return this.#movedOrLost(refs);
    }
    this.#deps.failpoints.hit('after-decision');
    this.#deps.observer.phase('decide', (performance.now() - t0) / 1000);
    this.#hooks.decided(this.#view('committing', null));
    return this.#complete('commit', refs, 'committing', null);
  }

  async #onePhase(w: BranchWorkOk): Promise<TransactionView> {
    const branch = w.open!;
    this.#results[0] = w.results;
    let released = false;
    const release = () => {
      if (!released) {
        released = true;
        branch.release();
      }
    };
    try {
      const xid = await branch.xid();
      if (xid === null) {
        // Read-only: nothing to make atomic.
        await branch.commit();
        release();
        this.#statuses[0] = 'committed';
        this.#readOnly[0] = true;
        return this.#finish('active', 'committed', null);
      }
      if (this.#control.expired) {
        await branch.rollback();
        release();
        return this.#abort([{ ...w, open: null }], this.#abortReason([]));
      }
      try {
        // The hand-off: the xid is durable before COMMIT, so recovery can learn the outcome.
        await decide(this.#deps, this.#id, { outcome: 'one-phase commit', xid }, { by: 'driver' }, this.#takeUnwritten());
        this.#deps.failpoints.hit('after-decision');
      } catch (err) {
        await branch.rollback().catch(() => {});
        release();
        if (err instanceof StaleStateError) return this.#movedOrLost([]);
        throw new UnavailableError('the transaction log could not record the commit; nothing was applied', { cause: err });
      }
      let committed: boolean;
      try {
        committed = await branch.commit();
      } catch (err) {
        release();
        if (err instanceof ParticipantError && err.sqlState && !err.retryable) {
          // The server refused the commit (a deferred constraint, a serialization failure): it rolled back.
          this.#statuses[0] = 'aborted';
          return this.#finish('preparing', 'aborted', {
            resource: this.#request.branches[0]!.resource,
            statement: null,
            code: err.sqlState,
            message: err.message,
          });
        }
        // The connection died during COMMIT: only the xid can tell what happened.
        await this.#handOff();
        return this.#view('preparing', null);
      }
      release();
      this.#statuses[0] = committed ? 'committed' : 'aborted';
      return this.#finish(
        'preparing',
        committed ? 'committed' : 'aborted',
        committed
          ? null
          : { resource: this.#request.branches[0]!.resource, statement: null, code: 'commit_failed', message: 'the database rolled back at COMMIT' },
      );
    } finally {
      release();
    }
  }

  async #abort(work: BranchWork[], reason: TxError): Promise<TransactionView> {
    await Promise.all(
      work.map(async (w) => {
        if (w.ok && w.open) {
          await w.open.rollback().catch(() => {});
          w.open.release();
        }
      }),
    );
    const prepared = work.filter((w) => w.prepared).map((w) => this.#ref(w.index, w.xid));
    this.#statuses = this.#statuses.map(() => 'aborted');
    if (prepared.length === 0) return this.#finish('active', 'aborted', reason);
    prepared.forEach((r) => {
      this.#statuses[r.index] = 'prepared';
    });
    try {
      await decide(this.#deps, this.#id, { outcome: 'abort', reason, branches: this.#branchUpdates() }, { by: 'driver' }, this.#takeUnwritten());
      this.#deps.failpoints.hit('after-decision');
    } catch (err) {
      if (err instanceof StaleStateError) return this.#movedOrLost(prepared);
      // No commit decision was ever written, so rolling back is safe even unrecorded (presumed abort).
      this.#deps.logger.warn({ err, transactionId: this.#id }, 'abort decision not recorded; rolling back anyway');
      await finishAll(this.#deps.participants, prepared, 'abort', this.#deps.failpoints);
      return this.#view('aborted', reason);
    }
    this.#hooks.decided(this.#view('aborting', reason));
    return this.#complete('abort', prepared, 'aborting', reason);
  }

  /** Phase 2 inline; what does not finish is handed to the follow-up queue, never undone. */
  async #complete(outcome: Outcome, refs: PreparedRef[], from: TxStatus, reason: TxError | null): Promise<TransactionView> {
    const t0 = performance.now();
    const results = await inSpan('tpc.complete', { 'tpc.transaction.id': this.#id, 'tpc.decision': outcome }, () =>
      finishAll(this.#deps.participants, refs, outcome, this.#deps.failpoints),
    );
    this.#deps.observer.phase('complete', (performance.now() - t0) / 1000);
    const final: BranchStatus = outcome === 'commit' ? 'committed' : 'aborted';
    // A branch found ended the other way shows how it really ended; the transaction carries the hazard.
    for (const r of results) if (r.done) this.#statuses[r.index] = r.hazard ? fateStatus(r.fate, final) : final;
    const hazard = this.#hazardError(results, refs);
    if (results.every((r) => r.done)) {
      return this.#finish(from, outcome === 'commit' ? 'committed' : 'aborted', hazard ?? reason);
    }
    await this.#handOff();
    return this.#view(from, reason);
  }

  #hazardError(results: FinishResult[], refs: PreparedRef[]): TxError | null {
    for (const r of results) if (r.done && r.hazard) this.#fates[r.index] = r.fate;
    const hit = results.find((r) => r.done && r.hazard);
    if (!hit?.done || !hit.hazard) return null;
    const ref = refs.find((r) => r.index === hit.index)!;
    this.#deps.observer.hazard(ref.resource);
    this.#deps.logger.error(
      { transactionId: this.#id, resource: ref.resource, gid: ref.gid, fate: hit.fate },
      'heuristic hazard: branch ended against the decision',
    );
    return hazardError({ index: ref.index, resource: ref.resource, fate: hit.fate }, null);
  }

  /** Writes a final state (not forced) and answers from memory; a lost write is re-driven by recovery. */
  async #finish(from: TxStatus, to: 'committed' | 'aborted', error: TxError | null): Promise<TransactionView> {
    // From active there is no decision in the log yet: this write is it, and must be waited for.
    if (from !== 'active' && this.#hooks.ended) {
      this.#hooks.ended(this.#view(to, error));
      // The answer goes out in the microtasks the hook set off; building and queueing the
      // completion first put 0.1 ms of it ahead of the answer at one client (issue 13).
      await nextTurn();
    }
    try {
      await complete(
        this.#deps,
        this.#id,
        {
          from,
          outcome: to,
          error,
          hazards: this.#hazards(),
          // After this run's own commit decision it knows every field of every branch's row.
          ...(from === 'committing' ? { branches: this.#wholeBranches(), whole: true } : { branches: this.#branchUpdates() }),
        },
        { by: 'driver' },
        this.#takeUnwritten(),
      );
    } catch (err) {
      // From active, nothing of this run was decided in the log (a read-only commit, an abort with
      // nothing prepared): the same as a lost decision. After a decision, phase 2 is done.
      if (err instanceof StaleStateError) {
        if (from === 'active') return this.#movedOrLost([]);
        return (await this.#hooks.followLog(this.#id)) ?? this.#afterDecisionGone(to, error);
      }
      this.#deps.logger.warn({ err, transactionId: this.#id }, 'completion not recorded; recovery will record it');
      if (from !== 'active') await this.#handOff();
    }
    this.#request.branches.forEach((b, i) => {
      const s = this.#statuses[i]!;
      this.#deps.observer.branch(b.resource, this.#readOnly[i] ? 'read_only' : s === 'committed' || s === 'aborted' ? s : 'pending');
    });
    return this.#view(to, error);
  }

  /**
   * A compare-and-set made before any decision of this run matched no row (or, for the commit
   * decision, could not be confirmed: the same question, asked of the log). Either another process
   * moved the transaction (an operator's resolve, the abort at its deadline): the log says how it
   * ends and is followed. Or the log no longer holds it at all: its begin record, written with
   * synchronous_commit = off, was lost (a failover to a standby it had not reached yet). Then this
   * driver, which still holds the branches in memory, settles it at once by presumed abort: every
   * branch it prepared is rolled back now, leaving no orphan for the orphan timeout.
   *
   * Why rolling back is always safe here: a commit decision is a forced compare-and-set on the
   * transaction's own row, so it is never written without the begin record existing, and a forced
   * commit makes every earlier WAL record durable with it (the synchronous standby confirms up to
   * its commit record). A decision that was durably written therefore cannot be lost while the row
   * it updated is; no row means no commit decision, ours (this CAS failed) or an operator's.
   */
  async #movedOrLost(prepared: PreparedRef[]): Promise<TransactionView> {
    const seen = await this.#readLog(prepared);
    if (seen && (seen.status === 'aborted' || seen.status === 'aborting') && prepared.length > 0) {
      // Recovery's tombstone (its row may name only the branches it found prepared) or an abort:
      // this driver knows every branch it prepared, so none is left for a later pass.
      await finishAll(this.#deps.participants, prepared, 'abort', this.#deps.failpoints);
    }
    if (seen) return seen;
    const results = await finishAll(this.#deps.participants, prepared, 'abort', this.#deps.failpoints);
    const stuck = results.filter((r) => !r.done);
    if (stuck.length > 0) {
      // The outcome is still abort (nothing can commit it now); such a branch is an orphan for the
      // orphan timeout (TPC_MAX_TIMEOUT_MS) or an operator's /resolve-orphan.
      this.#deps.logger.error(
        { transactionId: this.#id, gids: stuck.map((r) => this.#gids[r.index]) },
        'log lost the transaction; a prepared branch could not be rolled back',
      );
    }
    this.#deps.logger.warn({ transactionId: this.#id }, 'the log lost the transaction before its decision; rolled back');
    this.#statuses = this.#statuses.map(() => 'aborted');
    stuck.forEach((r) => {
      this.#statuses[r.index] = 'prepared';
    });
    return this.#view('aborted', {
      resource: null,
      statement: null,
      code: 'log_lost_transaction',
      message:
        `the transaction log lost the record of transaction ${this.#id} (as after a failover of the log database) before any decision: ` +
        'it was aborted, its branches rolled back, and nothing was applied; it may be sent again',
    });
  }

  /** A completion write found no row after this run's decision and phase 2: the outcome is what the databases did. */
  #afterDecisionGone(to: 'committed' | 'aborted', error: TxError | null): TransactionView {
    this.#deps.logger.error({ transactionId: this.#id, outcome: to }, 'the log lost a decided transaction (an asynchronous standby, or a row deleted by hand)');
    return this.#view(to, error);
  }

  /**
   * Follows the log, asking again while it cannot be read: a log failing over is unreachable for
   * a moment (measured 0.2–1.6 s), and the branches keep their locks meanwhile. Past that, the
   * transaction is handed to recovery and the client told to come back: without the log this
   * driver cannot know whether an operator decided it.
   */
  async #readLog(prepared: PreparedRef[]): Promise<TransactionView | null> {
    const giveUpAt = Math.min(Date.now() + LOG_WAIT_MS, Math.max(this.#control.deadlineAt, Date.now() + 1_000));
    for (;;) {
      try {
        return await this.#hooks.followLog(this.#id);
      } catch (err) {
        if (Date.now() >= giveUpAt) {
          await this.#handOff();
          throw new UnavailableError(
            `the transaction log cannot be read to settle transaction ${this.#id}` +
              (prepared.length > 0 ? '; its prepared branches will be settled by recovery' : '; nothing was applied'),
            { cause: err, retryAfterSeconds: 1 },
          );
        }
        await sleep(LOG_RETRY_MS);
      }
    }
  }

  async #undoUnlogged(work: BranchWork[]): Promise<void> {
    await Promise.all(
      work.map(async (w) => {
        if (w.ok && w.open) {
          await w.open.rollback().catch(() => {});
          w.open.release();
        }
      }),
    );
    const prepared = work.filter((w) => w.prepared).map((w) => this.#ref(w.index, w.xid));
    await finishAll(this.#deps.participants, prepared, 'abort', this.#deps.failpoints);
  }

  /**
   * Gives the transaction to the completion queue: the lease is released first so that any
   * instance's worker can take it at once. Both steps may fail (log or Redis down); then the lease
   * runs out and reconciliation finds the transaction.
   */
  async #handOff(): Promise<void> {
    await this.#deps.recovery.release(this.#id, this.#deps.instanceId).catch(() => {});
    await this.#deps.followUp
      .completionPending(this.#id)
      .catch((err: unknown) => this.#deps.logger.warn({ err, transactionId: this.#id }, 'could not queue completion; reconciliation will find it'));
  }

  /** The begin record for the first state change to insert, once; null when a row holds it already. */
  #takeUnwritten(): BeginRecord | null {
    const record = this.#unwritten;
    this.#unwritten = null;
    return record;
  }

  #ref(index: number, xid: string | null): PreparedRef {
    return { index, resource: this.#request.branches[index]!.resource, gid: this.#gids[index]!, xid };
  }

  /** The branches found ended against the decision (see #hazardError). */
  #hazards(): Hazard[] {
    return this.#fates.flatMap((fate, index) => (fate === undefined ? [] : [{ index, resource: this.#request.branches[index]!.resource, fate }]));
  }

  #branchUpdates(): BranchUpdate[] {
    return this.#statuses.map((status, index) => ({
      index,
      status,
      readOnly: this.#readOnly[index],
      heuristic: this.#fates[index],
      results: status === 'committed' ? this.#results[index] : undefined,
    }));
  }

  /**
   * After this run's commit decision: every field each branch's row holds, as it is to be once
   * complete (TransitionRecord.branchesWhole), that is the begin record's (index, resource, gid),
   * the decision's (xid, read-only) and the completion's (status, results, how it ended).
   */
  #wholeBranches(): BranchUpdate[] {
    return this.#statuses.map((status, index) => ({
      index,
      resource: this.#request.branches[index]!.resource,
      gid: this.#gids[index]!,
      status,
      xid: this.#xids[index],
      readOnly: this.#readOnly[index],
      heuristic: this.#fates[index],
      results: status === 'committed' ? this.#results[index] : undefined,
    }));
  }

  #view(status: TxStatus, error: TxError | null): TransactionView {
    return {
      id: this.#id,
      status,
      branches: this.#request.branches.map((b, i) => ({
        resource: b.resource,
        status: this.#statuses[i]!,
        readOnly: this.#readOnly[i]!,
        results: status === 'aborted' || status === 'aborting' ? [] : this.#results[i]!,
      })),
      error,
    };
  }
}
