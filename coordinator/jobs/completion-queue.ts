import { Queue, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { FollowUp } from '../engine/ports.ts';
import type { ResumeResult } from '../engine/resume-from-log.ts';

export interface CompletionQueueOptions {
  redisUrl: string;
  namespace: string;
  /** BullMQ key prefix; tests give each world its own. */
  prefix?: string;
  logger: Logger;
  onFailure?: () => void;
}

// 500 ms doubling to a 30 s cap: a participant back from a restart is finished within ~30 s,
// while a long outage costs one attempt per 30 s. The attempt count is effectively unbounded:
// a decided transaction is retried until it completes (the decision never changes).
const RETRY_BASE_MS = 500;
const RETRY_MAX_MS = 30_000;
const ATTEMPTS = 1_000_000;

/**
 * Phase 2 that did not finish inline (a participant down, a connection cut) becomes a BullMQ job
 * whose id derives from the transaction id, so no instance ever duplicates it. The job re-reads
 * the log and drives what it says: Redis holds the reminder, never the truth.
 */
export class CompletionQueue implements FollowUp {
  readonly #queue: Queue;
  readonly #producer: Redis;
  readonly #options: CompletionQueueOptions;
  #worker: Worker | undefined;
  #workerConnection: Redis | undefined;

  constructor(options: CompletionQueueOptions) {
    this.#options = options;
    // No offline queue: while Redis is down an add fails at once instead of hanging the request.
    this.#producer = new Redis(options.redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 1, lazyConnect: false });
    this.#producer.on('error', () => {});
    this.#queue = new Queue(this.name, { connection: this.#producer, prefix: options.prefix });
    this.#queue.on('error', () => {});
  }

  get name(): string {
    return `tpc-${this.#options.namespace}-completion`;
  }

  async completionPending(transactionId: string): Promise<void> {
    await this.#queue.add('complete', { transactionId }, {
      jobId: `complete-${transactionId}`,
      attempts: ATTEMPTS,
      backoff: { type: 'capped-exponential' },
      removeOnComplete: true,
      removeOnFail: 1000,
    });
  }

  start(resume: (transactionId: string) => Promise<ResumeResult>): void {
    const { logger } = this.#options;
    this.#workerConnection = new Redis(this.#options.redisUrl, { maxRetriesPerRequest: null });
    this.#workerConnection.on('error', () => {});
    this.#worker = new Worker(
      this.name,
      async (job: Job<{ transactionId: string }>) => {
        const result = await resume(job.data.transactionId);
        if (result !== 'finished') throw new Error(`transaction ${job.data.transactionId} not finished yet (${result})`);
      },
      {
        connection: this.#workerConnection,
        prefix: this.#options.prefix,
        concurrency: 8,
        settings: {
          backoffStrategy: (attemptsMade: number) => Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** Math.max(0, attemptsMade - 1)),
        },
      },
    );
    this.#worker.on('failed', (job, err) => {
      this.#options.onFailure?.();
      logger.warn({ transactionId: job?.data.transactionId, attempt: job?.attemptsMade, err: err.message }, 'completion attempt failed; will retry');
    });
    this.#worker.on('error', (err) => logger.warn({ err: err.message }, 'completion worker error'));
  }

  /** Waits (at most `ms`) for the producer connection, so readiness is true once start-up returns. */
  async connected(ms: number): Promise<boolean> {
    if (this.#producer.status === 'ready') return true;
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.#producer.off('ready', onReady); resolve(false); }, ms);
      const onReady = () => { clearTimeout(timer); resolve(true); };
      this.#producer.once('ready', onReady);
    });
  }

  async ping(): Promise<void> {
    await this.#producer.ping();
  }

  async close(): Promise<void> {
    await this.#worker?.close().catch(() => {});
    await this.#queue.close().catch(() => {});
    this.#workerConnection?.disconnect();
    this.#producer.disconnect();
  }
}
