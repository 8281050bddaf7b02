import type { Participant } from '../../participant-adapter/participant.ts';
import { errorOf } from './branch-work.ts';
import type { Failpoints } from './failpoints.ts';
import type { BranchStatus } from './states.ts';
import type { TxError } from './types.ts';
import { inSpan } from '../observability/tracing.ts';

export type Outcome = 'commit' | 'abort';

export interface PreparedRef {
  index: number;
  resource: string;
  gid: string;
  xid: string | null;
}

export type FinishResult =
  /** The branch ended as decided (now, or earlier: the gid was gone and its xid says so). */
  | { index: number; done: true; hazard: false }
  /** The gid was gone and its xid ended the other way: someone acted behind the coordinator's back. */
  | { index: number; done: true; hazard: true; fate: string }
  /** Not finished (participant unreachable, fate unknown): to be retried; the decision stands. */
  | { index: number; done: false; error: TxError };

/**
 * Drives one prepared branch to the decided outcome. Idempotent: a gid that is no longer prepared
 * is looked up by its recorded xid, so a retry after a crash or a lost reply is safe.
 */
export function finishBranch(participant: Participant, ref: PreparedRef, outcome: Outcome): Promise<FinishResult> {
  let sent: Promise<string>;
  try {
    sent = outcome === 'commit' ? participant.commitPrepared(ref.gid) : participant.rollbackPrepared(ref.gid);
  } catch (err) {
    sent = Promise.reject(err);
  }
  // The usual answer is settled in one reaction; only a gid that is gone needs the lookup below.
  return sent.then(
    (r): FinishResult | Promise<FinishResult> => (r !== 'not-found' ? { index: ref.index, done: true, hazard: false } : goneBranch(participant, ref, outcome)),
    (err: unknown): FinishResult => ({ index: ref.index, done: false, error: errorOf(err, ref.resource, null) }),
  );
}

/** A gid no longer prepared: how did its branch end? */
async function goneBranch(participant: Participant, ref: PreparedRef, outcome: Outcome): Promise<FinishResult> {
  try {
    // Presumed abort: a branch with no recorded xid never got past PREPARE in our view, so a
    // missing gid means it was never prepared (rolled back with its session).
    if (ref.xid === null) {
      return outcome === 'abort' ? { index: ref.index, done: true, hazard: false } : { index: ref.index, done: true, hazard: true, fate: 'unknown' };
    }
    const fate = await participant.xactStatus(ref.xid);
    const wanted = outcome === 'commit' ? 'committed' : 'aborted';
    if (fate === wanted) return { index: ref.index, done: true, hazard: false };
    if (fate === 'in progress') {
      return {
        index: ref.index,
        done: false,
        error: { resource: ref.resource, statement: null, code: 'in_progress', message: `xid ${ref.xid} on ${ref.resource} is still in progress` },
      };
    }
    return { index: ref.index, done: true, hazard: true, fate };
  } catch (err) {
    return { index: ref.index, done: false, error: errorOf(err, ref.resource, null) };
  }
}

export function finishAll(
  participants: ReadonlyMap<string, Participant>,
  refs: PreparedRef[],
  outcome: Outcome,
  failpoints: Failpoints,
): Promise<FinishResult[]> {
  return Promise.all(
    refs.map((ref) => {
      const participant = participants.get(ref.resource);
      if (!participant) {
        return Promise.resolve<FinishResult>({
          index: ref.index,
          done: false,
          error: { resource: ref.resource, statement: null, code: 'unknown_resource', message: `resource ${ref.resource} is not configured` },
        });
      }
      // The gid names its transaction (tpc:<namespace>:<transaction id>:<branch>).
      const attributes = { 'tpc.transaction.id': ref.gid.split(':')[2] ?? '', 'tpc.resource': ref.resource, 'tpc.gid': ref.gid, 'tpc.decision': outcome };
      return inSpan('tpc.branch.complete', attributes, (span) =>
        finishBranch(participant, ref, outcome).then((r) => {
          span.setAttribute('tpc.branch.done', r.done);
          if (r.done) failpoints.hit(`after-complete-${ref.index}`);
          return r;
        }),
      );
    }),
  );
}

/** The branch status that an xid's fate stands for (a heuristic outcome shows how the branch really ended). */
export function fateStatus(fate: string, otherwise: BranchStatus): BranchStatus {
  return fate === 'committed' ? 'committed' : fate === 'aborted' ? 'aborted' : otherwise;
}
