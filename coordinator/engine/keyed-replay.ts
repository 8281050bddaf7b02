import { setTimeout as sleep } from 'node:timers/promises';
import { UnavailableError } from '../errors.ts';
import { RETRY_AFTER_SECONDS } from './admission.ts';
import type { EngineDeps } from './ports.ts';
import { resumeTransaction } from './resume-from-log.ts';
import { isFinal } from './states.ts';
import { viewOf } from './transaction-views.ts';
import type { SubmitRequest, TransactionView } from './types.ts';

/** What a replay needs of the engine: the runs of this process, and the keyed begins not answered yet. */
export interface ReplaySeat {
  running(id: string): Promise<TransactionView> | undefined;
  beginning(id: string): boolean;
  /** EngineOptions.completionWaitMs. */
  completionWaitMs: number;
}

/** The first request's answer for a repeated key: joins its run, or waits on the log until it settles. */
export async function replayKeyed(deps: EngineDeps, seat: ReplaySeat, id: string, wait: SubmitRequest['wait']): Promise<TransactionView> {
  for (;;) {
    const running = seat.running(id);
    if (running) return running;
    const tx = await deps.store.load(id);
    // The key was read a moment ago, and goes with its transaction (pruned together): the key is
    // free again, so the client's retry begins anew.
    if (!tx) throw new UnavailableError(`transaction ${id} of this Idempotency-Key is no longer in the log; retry`, { retryAfterSeconds: RETRY_AFTER_SECONDS });
    if (tx.status === 'active' && tx.driver === deps.instanceId && !seat.beginning(id)) {
      // Recorded as driven by this process, yet no run of it drives it: the keyed begin's reply
      // was lost with its log connection after the record was written (that attempt answered
      // 503, and touched no branch: they wait for a confirmed keyed begin), or this instance id
      // ran before a restart. Nobody will decide it, so it is aborted now (presumed abort, by the
      // compare-and-set a live driver would win) rather than making the retry wait for its
      // deadline. Another process cannot know this, and waits for the deadline's abort.
      await resumeTransaction(deps, id, {
        abandoned: {
          resource: null,
          statement: null,
          code: 'abandoned',
          message:
            'the first attempt under this Idempotency-Key was begun but never decided (its begin write lost its log connection, or its coordinator restarted): ' +
            'it was aborted and nothing was applied; send it again with a new Idempotency-Key',
        },
      }).catch(() => {});
      await sleep(50);
      continue;
    }
    const settled = isFinal(tx.status) || (wait === 'decided' && tx.status !== 'active');
    // Past its deadline plus the completion wait, answer with what the log holds.
    const overdue = Date.now() > tx.deadline.getTime() + seat.completionWaitMs;
    if (settled) return viewOf(tx);
    if (overdue) {
      // Still undecided past its deadline: its driver died. Abort it now (presumed abort, a
      // compare-and-set that a live driver would win) rather than answer undecided.
      if (tx.status === 'active') await resumeTransaction(deps, id).catch(() => {});
      const now = await deps.store.load(id);
      return now ? viewOf(now) : viewOf(tx);
    }
    await sleep(50);
  }
}
