import { setImmediate as nextTurn } from 'node:timers/promises';
import { StaleStateError } from '../errors.ts';
import type { LoggedTransaction, SettledBranch } from './log-port.ts';
import { fateStatus, finishAll, type FinishResult, type Outcome, type PreparedRef } from './phase-two.ts';
import type { EngineDeps } from './ports.ts';
import { complete, decide, hazardError, type Hazard } from './state-changes.ts';
import { isFinal, type TxStatus } from './states.ts';
import type { TxError } from './types.ts';

export type ResumeResult =
  | { state: 'finished'; status: TxStatus }
  /** Phase 2 (or a one-phase outcome) could not be settled yet: retry later. `settled`: the branches it did finish. */
  | { state: 'pending'; error: TxError | null; settled?: SettledBranch[] }
  /** Another driver holds the lease. */
  | { state: 'busy' }
  /** Undecided and its deadline has not passed: its driver may still decide. */
  | { state: 'not-due' }
  | { state: 'gone' };

// 30 s: longer than any single recovery attempt (each participant call is bounded by its 5 s
// operation timeout), short enough that a driver that died mid-attempt is replaced quickly.
export const RECOVERY_LEASE_MS = 30_000;

/**
 * Drives a transaction from what the log says, for any process: the completion and deadline jobs,
 * reconciliation, a submit that lost a compare-and-set. It first takes the transaction's lease, so
 * at most one driver acts at a time. The decision in the log wins; no decision past the deadline
 * means abort (presumed abort), decided by a compare-and-set so that it cannot race a live driver.
 */
export async function resumeTransaction(deps: EngineDeps, id: string, options: ResumeOptions = {}): Promise<ResumeResult> {
  const tx = await deps.recovery.acquire(id, deps.instanceId, RECOVERY_LEASE_MS);
  if (!tx) {
    const seen = await deps.store.load(id);
    if (!seen) return { state: 'gone' };
    return isFinal(seen.status) ? { state: 'finished', status: seen.status } : { state: 'busy' };
  }
  return finishHeld(deps, tx, options);
}

/**
 * Drives a transaction whose lease this process holds, from `tx` as it stands in the log: what
 * resumeTransaction does once it has taken the lease and read the log. A process that has just
 * written a decision itself, under its lease, knows that state and saves both statements.
 */
export async function finishHeld(deps: EngineDeps, tx: LoggedTransaction, options: ResumeOptions = {}): Promise<ResumeResult> {
  const result = await drive(deps, tx, options).catch((err: unknown): ResumeResult => {
    if (err instanceof StaleStateError) return { state: 'busy' };
    return { state: 'pending', error: { resource: null, statement: null, code: 'internal', message: err instanceof Error ? err.message : String(err) } };
  });
  // Not finished: let go at once so that the next attempt, from whichever instance, may take it.
  if (result.state !== 'finished') await deps.recovery.release(tx.id, deps.instanceId).catch(() => {});
  return result;
}

export interface ResumeOptions {
  /**
   * The caller knows that no driver will ever decide this undecided transaction (see
   * Engine.#replay): abort it now instead of waiting for its deadline, with this reason.
   */
  abandoned?: TxError;
  /**
   * The caller drives the transaction inline, right after deciding it (an interactive commit): its
   * clean completion is the happy path, not recovery's work, and a lean row derives its event.
   */
  inline?: boolean;
  /** Told of the branches found ended against the decision: a caller answering from memory must not say it went cleanly. */
  onHazards?: (hazards: Hazard[]) => void;
  /**
   * Told once phase 2 has ended cleanly on every branch, before the completion record (not forced)
   * is written: a caller answering from memory may answer now, as a submission's driver does.
   */
  onPhaseTwoEnded?: () => void;
}

async function drive(deps: EngineDeps, tx: LoggedTransaction, options: ResumeOptions): Promise<ResumeResult> {
  switch (tx.status) {
    case 'committed':
    case 'aborted':
      return { state: 'finished', status: tx.status };
    case 'committing':
      return finishDecided(deps, tx, 'commit', options);
    case 'aborting':
      return finishDecided(deps, tx, 'abort', options);
    case 'preparing':
      return settleOnePhase(deps, tx);
    case 'active': {
      if (!options.abandoned && new Date(tx.deadline).getTime() > Date.now()) return { state: 'not-due' };
      const reason: TxError = options.abandoned ?? {
        resource: null,
        statement: null,
        code: 'deadline_exceeded',
        message: 'deadline passed before a decision was recorded',
      };
      // branchesChecked: a branch joined since the load would be missed by the rollback below; the
      // compare-and-set then fails (busy) and the next attempt loads it too.
      await decide(deps, tx.id, { outcome: 'abort', reason, checked: tx.branches.length }, { by: 'recovery' });
      return finishDecided(deps, { ...tx, status: 'aborting' }, 'abort', options);
    }
  }
}

function firstError(results: FinishResult[]): TxError | null {
  for (const r of results) if (!r.done) return r.error;
  return null;
}

async function finishDecided(deps: EngineDeps, tx: LoggedTransaction, outcome: Outcome, options: ResumeOptions): Promise<ResumeResult> {
  // Under abort, a branch still marked active may have been prepared just before a crash.
  const open = tx.branches.filter((b) => b.status === 'prepared' || (outcome === 'abort' && b.status === 'active'));
  const refs: PreparedRef[] = open.map((b) => ({ index: b.index, resource: b.resource, gid: b.gid, xid: b.xid }));
  const results = await finishAll(deps.participants, refs, outcome, deps.failpoints);
  const final = outcome === 'commit' ? 'committed' : 'aborted';
  if (!results.every((r) => r.done)) {
    // The branches finished cleanly are recorded with the failed attempt (Engine.resume): in an
    // outage of one participant, every retry would otherwise send the others a COMMIT PREPARED that
    // finds no gid, then a lookup of its xid, twice the round trips of the one that matters.
    const settled = results.flatMap((r): SettledBranch[] => (r.done && !r.hazard ? [{ index: r.index, status: final }] : []));
    return { state: 'pending', error: firstError(results), settled };
  }
  const hazards = results.flatMap((r): Hazard[] =>
    r.done && r.hazard ? [{ index: r.index, resource: refs.find((x) => x.index === r.index)!.resource, fate: r.fate }] : [],
  );
  for (const h of hazards) {
    deps.observer.hazard(h.resource);
    deps.logger.error(
      { transactionId: tx.id, resource: h.resource, gid: refs.find((x) => x.index === h.index)!.gid, fate: h.fate, decision: outcome },
      'heuristic hazard: a branch ended against the decision',
    );
  }
  if (hazards.length === 0 && options.onPhaseTwoEnded) {
    options.onPhaseTwoEnded();
    // The caller answers in the microtasks this set off; the completion is built after (transaction-run.ts).
    await nextTurn();
  }
  await complete(
    deps,
    tx.id,
    {
      from: tx.status,
      outcome: final,
      hazards,
      error: hazards[0] ? hazardError(hazards[0], outcome) : undefined,
      branches: refs.map((r) => {
        const fate = hazards.find((h) => h.index === r.index)?.fate;
        return { index: r.index, status: fate ? fateStatus(fate, final) : final, heuristic: fate };
      }),
    },
    { by: 'recovery', inline: options.inline },
  );
  deps.observer.outcome(final);
  if (hazards.length > 0) options.onHazards?.(hazards);
  return { state: 'finished', status: final };
}

async function settleOnePhase(deps: EngineDeps, tx: LoggedTransaction): Promise<ResumeResult> {
  const branch = tx.branches[0];
  const participant = branch ? deps.participants.get(branch.resource) : undefined;
  if (!branch?.xid || !participant) {
    return {
      state: 'pending',
      error: { resource: branch?.resource ?? null, statement: null, code: 'unknown_resource', message: 'the one-phase branch cannot be looked up' },
    };
  }
  let fate;
  try {
    fate = await participant.xactStatus(branch.xid);
  } catch (err) {
    return {
      state: 'pending',
      error: { resource: branch.resource, statement: null, code: 'connection_failure', message: err instanceof Error ? err.message : String(err) },
    };
  }
  // In progress: the session that ran COMMIT is still alive; its outcome is not known yet.
  if (fate === 'in progress') return { state: 'pending', error: null };
  const final = fate === 'committed' ? 'committed' : 'aborted';
  await complete(
    deps,
    tx.id,
    {
      from: 'preparing',
      outcome: final,
      error:
        final === 'aborted'
          ? { resource: branch.resource, statement: null, code: 'commit_failed', message: `one-phase commit on ${branch.resource} ended ${fate}` }
          : undefined,
      branches: [{ index: 0, status: final }],
    },
    { by: 'recovery' },
  );
  deps.observer.outcome(final);
  return { state: 'finished', status: final };
}
