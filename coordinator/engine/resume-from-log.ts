import { StaleStateError } from '../errors.ts';
import type { StoredTransaction } from '../log/transactions-store.ts';
import { finishAll, type Outcome, type PreparedRef } from './phase-two.ts';
import type { EngineDeps } from './ports.ts';
import type { TxError } from './types.ts';

export type ResumeResult = 'finished' | 'pending' | 'not-due';

/**
 * Drives a transaction from what the log says, for any process: the completion queue, a submit
 * that lost a compare-and-set, later the recovery scans. The decision in the log wins; no decision
 * past the deadline means abort (presumed abort), decided by a compare-and-set so that it cannot
 * race the driver that is still running it.
 */
export async function resumeFromLog(deps: EngineDeps, tx: StoredTransaction): Promise<ResumeResult> {
  switch (tx.status) {
    case 'committed':
    case 'aborted':
      return 'finished';
    case 'committing':
      return finishDecided(deps, tx, 'commit');
    case 'aborting':
      return finishDecided(deps, tx, 'abort');
    case 'preparing':
      return settleOnePhase(deps, tx);
    case 'active': {
      if (tx.deadline.getTime() > Date.now()) return 'not-due';
      const reason: TxError = { resource: null, statement: null, code: 'deadline_exceeded', message: 'deadline passed before a decision was recorded' };
      try {
        await deps.store.transition({
          id: tx.id, from: 'active', to: 'aborting', forced: false, error: reason,
          event: { kind: 'decided', detail: { outcome: 'abort', reason } },
        });
      } catch (err) {
        if (err instanceof StaleStateError) return 'pending'; // the live driver decided first; resume again
        throw err;
      }
      return finishDecided(deps, { ...tx, status: 'aborting' }, 'abort');
    }
  }
}

async function finishDecided(deps: EngineDeps, tx: StoredTransaction, outcome: Outcome): Promise<ResumeResult> {
  // Under abort, a branch still marked active may have been prepared just before the crash.
  const open = tx.branches.filter((b) => b.status === 'prepared' || (outcome === 'abort' && b.status === 'active'));
  const refs: PreparedRef[] = open.map((b) => ({ index: b.index, resource: b.resource, gid: b.gid, xid: b.xid }));
  const results = await finishAll(deps.participants, refs, outcome);
  if (!results.every((r) => r.done)) return 'pending';
  const final = outcome === 'commit' ? 'committed' : 'aborted';
  const hazard = results.find((r) => r.done && r.hazard);
  const hazardRef = hazard ? refs.find((r) => r.index === hazard.index) : undefined;
  if (hazardRef) deps.observer.hazard(hazardRef.resource);
  try {
    await deps.store.transition({
      id: tx.id, from: tx.status, to: final, forced: false,
      error: hazardRef ? { resource: hazardRef.resource, statement: null, code: 'heuristic_hazard', message: `branch on ${hazardRef.resource} ended against the decision` } : undefined,
      branches: refs.map((r) => ({ index: r.index, status: final })),
      event: { kind: 'completed', detail: { outcome: final, by: 'follow-up' } },
    });
  } catch (err) {
    if (!(err instanceof StaleStateError)) throw err;
  }
  deps.observer.outcome(final);
  return 'finished';
}

async function settleOnePhase(deps: EngineDeps, tx: StoredTransaction): Promise<ResumeResult> {
  const branch = tx.branches[0];
  const participant = branch ? deps.participants.get(branch.resource) : undefined;
  if (!branch?.xid || !participant) return 'pending';
  const fate = await participant.xactStatus(branch.xid);
  if (fate === 'in progress') return 'pending'; // the COMMIT's session is still alive
  const final = fate === 'committed' ? 'committed' : 'aborted';
  try {
    await deps.store.transition({
      id: tx.id, from: 'preparing', to: final, forced: false,
      error: final === 'aborted' ? { resource: branch.resource, statement: null, code: 'commit_failed', message: `one-phase commit on ${branch.resource} ended ${fate}` } : undefined,
      branches: [{ index: 0, status: final }],
      event: { kind: 'completed', detail: { outcome: final, by: 'follow-up' } },
    });
  } catch (err) {
    if (!(err instanceof StaleStateError)) throw err;
  }
  deps.observer.outcome(final);
  return 'finished';
}
