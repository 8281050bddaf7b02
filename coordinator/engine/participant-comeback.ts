import type { Logger } from 'pino';
import type { RecoveryLog } from './log-port.ts';
import type { FollowUp } from './ports.ts';

export interface ComebackOptions {
  namespace: string;
  recovery: Pick<RecoveryLog, 'waitingOn'>;
  followUp: Pick<FollowUp, 'retryNow'>;
  logger: Logger;
  /** Transactions read from the log, and hurried, at a time. */
  page?: number;
  /** Least time between two sweeps for one resource: a participant that flaps is not swept on every flap. */
  minIntervalMs?: number;
}

/**
 * When a participant's phase 2 works again after failing, the transactions waiting on it are
 * retried at once instead of each at its own backoff. A long outage leaves most of them at the
 * backoff's cap (TPC_RETRY_MAX_MS, 30 s), so without this the last of a backlog waited up to that
 * long after the participant was back however fast the coordinator could have finished them
 * (10 000 drained in 24-26 s, at the pace their timers fell due, not the pace of the work).
 *
 * Only phase 2's own outcome counts: a participant can answer a health check or a listing while
 * its COMMIT PREPARED still fails (a full disk, a proxy), and hurrying every waiting transaction
 * into the same failure would only add load. The waiting ones are read from the log, which is the
 * truth, so a job Redis lost is queued again on the way.
 */
export class ParticipantComeback {
  readonly #o: Required<ComebackOptions>;
  /** Per resource, the phase-2 operations whose last call failed. */
  readonly #failing = new Map<string, Set<string>>();
  readonly #sweeps = new Map<string, Promise<number>>();
  readonly #lastSweep = new Map<string, number>();
  #closed = false;

  constructor(options: ComebackOptions) {
    this.#o = { page: 500, minIntervalMs: 5_000, ...options };
  }

  /**
   * Told of every phase-2 call's outcome on every participant. The participant is back once each
   * kind that failed (COMMIT PREPARED, ROLLBACK PREPARED) has worked again: a rollback that works
   * says nothing of the commits still failing behind it.
   */
  observe(resource: string, operation: string, outcome: 'ok' | 'error'): void {
    if (this.#closed || (operation !== 'commit_prepared' && operation !== 'rollback_prepared')) return;
    const failing = this.#failing.get(resource);
    if (outcome === 'error') {
      if (failing) failing.add(operation);
      else this.#failing.set(resource, new Set([operation]));
      return;
    }
    if (!failing?.has(operation) || this.#sweeps.has(resource)) return;
    // Too soon after the last sweep: the failure stays noted, and a later success sweeps.
    if (Date.now() - (this.#lastSweep.get(resource) ?? 0) < this.#o.minIntervalMs) return;
    failing.delete(operation);
    if (failing.size > 0) return;
    this.#failing.delete(resource);
    this.#lastSweep.set(resource, Date.now());
    const sweep = this.#sweep(resource).finally(() => this.#sweeps.delete(resource));
    this.#sweeps.set(resource, sweep);
  }

  /** Resolves once the sweeps under way are done (tests). */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.#sweeps.values()]);
  }

  /** No sweep starts, and one under way stops after its page: the jobs left run at their backoff, on any instance. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.settled();
  }

  async #sweep(resource: string): Promise<number> {
    const { namespace, recovery, followUp, logger, page } = this.#o;
    let hurried = 0;
    let after: string | null = null;
    try {
      for (;;) {
        const ids = await recovery.waitingOn(namespace, resource, after, page);
        if (ids.length === 0) break;
        // A failure here costs only the hurry: the job still runs at its backoff.
        await Promise.all(ids.map((id) => followUp.retryNow(id).catch(() => {})));
        hurried += ids.length;
        after = ids[ids.length - 1]!;
        if (ids.length < page || this.#closed) break;
      }
    } catch (err) {
      logger.warn(
        { resource, err: err instanceof Error ? err.message : String(err), hurried },
        'could not list the transactions waiting on a participant that is back',
      );
    }
    if (hurried > 0) logger.info({ resource, transactions: hurried }, 'phase 2 works again on a participant: retrying the transactions waiting on it now');
    return hurried;
  }
}
