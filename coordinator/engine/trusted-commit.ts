import { StaleStateError, UnwrittenError } from '../errors.ts';
import { branchGid } from './gid.ts';
import type { BeginRecord, LoggedTransaction } from './log-port.ts';
import type { CallerBranch, CallerTransaction } from './caller-transaction.ts';

export type { CallerBranch, CallerTransaction } from './caller-transaction.ts';
import type { EngineDeps } from './ports.ts';
import { finishAll } from './phase-two.ts';
import { finishHeld } from './resume-from-log.ts';
import { decide } from './state-changes.ts';
import type { TransactionView, TxError } from './types.ts';

/** The commit's answer, built from what was just done; `deadline` as the begin answered it. */
export type TrustedAnswer = TransactionView & { deadline: string; onePhase: false; inDoubt: false; heuristic: false };

/**
 * `fallback`: nothing was written; the caller commits the checked way (commitInteractive), which
 * looks everything up and says why it cannot commit. `read-log`: the commit went this way but its
 * end was unusual (phase 2 met another driver, or a hazard): the answer is read from the log.
 */
export type TrustedResult = TrustedAnswer | 'fallback' | 'read-log';

/**
 * The commit of an interactive transaction begun by this process for a caller in this process (the
 * embedded SDK), which prepared its own branches and knows their xids: a trusted caller, unlike a
 * REST client, whose word that a branch is prepared is never taken (commitInteractive). Saves what
 * the checked way spends before the decision: taking the lease (a forced UPDATE) and loading the
 * transaction, a pg_prepared_xacts lookup per branch, and a second load for the answer.
 *
 * It needs no lease of its own: the begin made this instance the driver, with a lease to the
 * deadline. The decision is the same compare-and-set as the checked way's (status active, driver =
 * this instance, at most the branches the caller knows), so an operator's takeover, recovery past
 * the deadline, a decision already written or a branch joined behind the caller's back makes it
 * fail, and the caller then falls back to the checked way. Branches joined for other services are
 * always looked up on their databases.
 *
 * Once phase 2 has ended cleanly on every branch, it answers without waiting for the completion
 * record, and hands that write to `recording`, so that a read of the transaction in this process
 * can wait for it and find what the caller was told.
 */
export async function commitTrusted(
  deps: EngineDeps,
  id: string,
  caller: CallerTransaction,
  actor: string | null,
  unwritten: BeginRecord | null = null,
  recording?: (completion: Promise<unknown>) => void,
): Promise<TrustedResult> {
  const deadline = Date.parse(caller.deadline);
  // Past the deadline, recovery may abort it at any moment: the checked way writes the abort and its reason.
  if (!(deadline > Date.now())) return 'fallback';
  const branches = inOrder(deps, id, caller.branches);
  if (!branches) return 'fallback';
  const xids = await Promise.all(
    branches.map(async (b) => {
      if (!b.joined) return b.xid;
      const p = deps.participants.get(b.resource);
      const seen = p ? await p.inspectPrepared(b.gid, { locks: false }).catch(() => null) : null;
      return seen ? seen.xid : undefined;
    }),
  );
  // A joined branch not prepared (or not reachable): the checked way aborts it, with the reason.
  if (xids.some((x) => x === undefined)) return 'fallback';
  try {
    await decide(
      deps,
      id,
      {
        outcome: 'commit',
        checked: branches.length,
        branches: branches.map((b, index) => ({ index, xid: xids[index] ?? null, readOnly: !b.joined && b.xid === null })),
      },
      { by: 'client', actor, owner: actor },
      unwritten,
    );
  } catch (err) {
    if (err instanceof StaleStateError) return 'fallback';
    if (unwritten && err instanceof UnwrittenError) {
      // The decision was to insert the row and certainly failed: no row, no decision, and none can
      // follow (this process is the only one that knew the transaction), so its branches are rolled
      // back now rather than holding their locks until recovery's fence at the deadline, and the
      // answer comes from memory: the log, which has nothing to say, may not even be readable.
      const refs = branches.map((b, index) => ({ index, resource: b.resource, gid: b.gid, xid: xids[index] ?? null }));
      const ended = await finishAll(deps.participants, refs, 'abort', deps.failpoints);
      return answer(
        id,
        caller,
        branches,
        'aborted',
        {
          resource: null,
          statement: null,
          code: 'log_unavailable',
          message:
            `the transaction log could not record the decision of transaction ${id} (${err.message}): it was aborted and nothing was applied` +
            (ended.every((r) => r.done) ? '' : '; a branch that could not be rolled back now is rolled back by recovery at the deadline'),
        },
        ended.map((r) => (r.done ? 'aborted' : 'prepared')),
      );
    }
    throw err;
  }
  const held: LoggedTransaction = {
    id,
    namespace: deps.namespace,
    status: 'committing',
    onePhase: false,
    deadline: new Date(deadline),
    submittedBy: actor,
    error: null,
    createdAt: new Date(),
    decidedAt: new Date(),
    completedAt: null,
    driver: deps.instanceId,
    leaseUntil: new Date(deadline),
    attempts: 0,
    lastError: null,
    inDoubt: false,
    heuristic: false,
    events: [],
    branches: branches.map((b, index) => ({
      index,
      resource: b.resource,
      gid: b.gid,
      status: 'prepared',
      xid: xids[index] ?? null,
      readOnly: !b.joined && b.xid === null,
      results: null,
      error: null,
      heuristic: null,
      lastError: null,
    })),
  };
  let hazards = false;
  let phaseTwoEnded: () => void = () => {};
  const ended = new Promise<'ended'>((resolve) => {
    phaseTwoEnded = () => resolve('ended');
  });
  const finishing = finishHeld(deps, held, {
    inline: true,
    onHazards: () => {
      hazards = true;
    },
    onPhaseTwoEnded: phaseTwoEnded,
  }).then(async (result) => {
    if (result.state === 'pending') {
      await deps.followUp
        .completionPending(id)
        .catch((err: unknown) => deps.logger.warn({ err, transactionId: id }, 'could not queue completion; reconciliation will find it'));
    }
    return result;
  });
  // Phase 2 has ended on every branch: the answer goes now, and the completion record (not
  // forced; recovery writes it again if it is lost) behind it, as a submission's does.
  const first = await Promise.race([finishing, ended]);
  if (first === 'ended') {
    recording?.(finishing);
    return answer(id, caller, branches, 'committed', null);
  }
  if (first.state !== 'pending' && (first.state !== 'finished' || hazards)) return 'read-log';
  return answer(id, caller, branches, first.state === 'finished' ? 'committed' : 'committing', null);
}

/** The answer from memory; each branch's status is the transaction's, or what `each` says. */
function answer(
  id: string,
  caller: CallerTransaction,
  branches: CallerBranch[],
  status: 'committed' | 'committing' | 'aborted',
  error: TxError | null,
  each?: ('aborted' | 'prepared')[],
): TrustedAnswer {
  return {
    id,
    status,
    error,
    deadline: caller.deadline,
    onePhase: false,
    inDoubt: false,
    heuristic: false,
    branches: branches.map((b, index) => ({
      resource: b.resource,
      status: each?.[index] ?? (status === 'committed' ? 'committed' : status === 'aborted' ? 'aborted' : 'prepared'),
      readOnly: !b.joined && b.xid === null,
      results: [],
    })),
  };
}

/**
 * The caller's branches by index: the gids are the engine's own (namespace, id, index), so each
 * must be the one of its index, every index below their count present once; else the checked way.
 */
function inOrder(deps: EngineDeps, id: string, given: CallerBranch[]): CallerBranch[] | null {
  const byGid = new Map(given.map((b) => [b.gid, b]));
  const ordered = given.map((_, index) => byGid.get(branchGid(deps.namespace, id, index)));
  if (ordered.length === 0 || ordered.some((b) => b === undefined || !deps.participants.has(b.resource))) return null;
  return ordered as CallerBranch[];
}
