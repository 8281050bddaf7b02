import { Queue, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { FollowUp } from '../engine/ports.ts';
import type { ReconcileReport } from '../engine/reconciler.ts';
import type { ResumeResult } from '../engine/resume-from-log.ts';
import { connectRedis, parseRedisUrl, type RedisTarget } from './redis-target.ts';

export interface JobQueuesOptions {
  /** One server, or a Sentinel group (redis-target.ts). */
  redisUrl: string;
  namespace: string;
  /** BullMQ key prefix; tests give each world its own. */
  prefix?: string;
  logger: Logger;
  retryBaseMs: number;
  retryMaxMs: number;
  reconcileIntervalMs: number;
  pruneIntervalMs: number;
  onFailure: (loop: 'completion' | 'deadline' | 'reconcile' | 'prune') => void;
}

export interface JobHandlers {
  resume(transactionId: string): Promise<ResumeResult>;
  reconcile(): Promise<ReconcileReport>;
  prune(): Promise<number>;
}

// A decided transaction is retried until it completes (its decision never changes); BullMQ needs
// a number, and a million attempts at the 30 s cap is about a year.
const ATTEMPTS = 1_000_000;

type TxJob = Job<{ transactionId: string }>;

// Transactions asked about per round trip to Redis when reconciliation re-queues a backlog.
const REQUEUE_PAGE = 1_000;

// Long enough for a running job (each participant call is bounded by 5 s) to finish.
const CLOSE_GRACE_MS = 5_000;

/**
 * The BullMQ side of recovery: a completion job per transaction whose phase 2 did not finish
 * inline, a deadline job per transaction, and job schedulers for reconciliation and retention.
 * Job ids derive from transaction ids, so no instance ever duplicates one. Redis holds only
 * reminders: every handler re-reads the log and acts on what it says.
 */
export class JobQueues implements FollowUp {
  readonly #o: JobQueuesOptions;
  readonly #target: RedisTarget;
  readonly #producer: Redis;
  readonly #completion: Queue;
  readonly #deadline: Queue;
  readonly #maintenance: Queue;
  readonly #workers: Worker[] = [];
  readonly #workerConnections: Redis[] = [];
  #lastError: string | undefined;
  #closing = false;
  #schedulerTimer: NodeJS.Timeout | undefined;

  constructor(options: JobQueuesOptions) {
    this.#o = options;
    this.#target = parseRedisUrl(options.redisUrl);
    // No offline queue: while Redis is down (or a Sentinel failover is under way) an add fails at
    // once instead of hanging a request; reconciliation re-creates what was not added.
    this.#producer = this.#revived(connectRedis(this.#target, { enableOfflineQueue: false, maxRetriesPerRequest: 1 }));
    this.#producer.on('error', (err: Error) => {
      this.#lastError = err.message;
    });
    this.#producer.on('ready', () => {
      this.#lastError = undefined;
    });
    const queue = (kind: string) => {
      const q = new Queue(`tpc-${options.namespace}-${kind}`, { connection: this.#producer, prefix: options.prefix });
      q.on('error', () => {});
      return q;
    };
    this.#completion = queue('completion');
    this.#deadline = queue('deadline');
    this.#maintenance = queue('maintenance');
  }

  /** Where Redis is, without passwords (a Sentinel URL says so), for the start-up log line. */
  get redis(): string {
    return this.#target.redacted;
  }

  /** The queues, for inspection (Bull Board). */
  get queues(): Queue[] {
    return [this.#deadline, this.#completion, this.#maintenance];
  }

  async completionPending(transactionId: string): Promise<void> {
    const job = this.#completionJob(transactionId);
    await this.#completion.add(job.name, job.data, job.opts);
  }

  /**
   * Queues the completion job of each transaction that has none, and returns how many it queued:
   * reconciliation's re-queue of what Redis may have lost. A backlog in an outage is thousands of
   * unfinished transactions whose jobs wait out their backoff, and each pass named all of them: an
   * add apiece was a script run in Redis and a write from here, only to find the job there. One
   * pipelined EXISTS per page asks the same question an add's deduplication does (its job id), and
   * the missing ones are added in one round trip.
   */
  async completionsPending(transactionIds: readonly string[]): Promise<number> {
    let queued = 0;
    for (let i = 0; i < transactionIds.length; i += REQUEUE_PAGE) {
      const page = transactionIds.slice(i, i + REQUEUE_PAGE);
      const exists = this.#producer.pipeline();
      for (const id of page) exists.exists(this.#completion.toKey(`complete-${id}`));
      const replies = (await exists.exec()) ?? [];
      // A reply missing or failed: add it anyway (an add of a job that exists changes nothing).
      const missing = page.filter((_, k) => {
        const [err, n] = replies[k] ?? [null, 0];
        return err !== null || n === 0;
      });
      if (missing.length === 0) continue;
      await this.#completion.addBulk(missing.map((id) => this.#completionJob(id)));
      queued += missing.length;
    }
    return queued;
  }

  async deadlineSet(transactionId: string, deadlineAt: number): Promise<void> {
    await this.#deadline.add(
      'deadline',
      { transactionId },
      {
        ...this.#retrying(`deadline-${transactionId}`),
        delay: Math.max(0, deadlineAt - Date.now()),
      },
    );
  }

  async deadlineCleared(transactionId: string): Promise<void> {
    await this.#deadline.remove(`deadline-${transactionId}`);
  }

  /**
   * The job retrying the transaction's phase 2 (its completion job, or the deadline job that
   * decided it) is moved from its backoff to the front; one that is waiting or running already is
   * left alone, and one Redis lost is queued again.
   */
  async retryNow(transactionId: string): Promise<void> {
    const job = (await this.#completion.getJob(`complete-${transactionId}`)) ?? (await this.#deadline.getJob(`deadline-${transactionId}`));
    if (!job) return this.completionPending(transactionId);
    // Refused unless the job is delayed: then it is not waiting for its backoff anyway.
    await job.promote().catch(() => {});
  }

  /** Starts the workers and the schedulers. */
  start(handlers: JobHandlers): void {
    // Anything but settled is thrown, so BullMQ retries it with the capped backoff.
    const settle = async (job: TxJob) => {
      const r = await handlers.resume(job.data.transactionId);
      if (r.state !== 'finished' && r.state !== 'gone') {
        throw new Error(`transaction ${job.data.transactionId} not settled yet (${r.state}${r.state === 'pending' && r.error ? `: ${r.error.message}` : ''})`);
      }
    };
    this.#worker(this.#completion.name, settle, 8, 'completion');
    this.#worker(this.#deadline.name, settle, 8, 'deadline');
    this.#worker(
      this.#maintenance.name,
      async (job: Job) => {
        if (job.name === 'reconcile') {
          const report = await handlers.reconcile();
          if (report.requeued || report.orphansRolledBack || report.overdueRolledBack || report.leftoversFinished || report.flaggedInDoubt || report.errors) {
            this.#o.logger.info({ ...report }, 'reconciliation pass');
          }
        } else if (job.name === 'prune') {
          const pruned = await handlers.prune();
          if (pruned) this.#o.logger.info({ pruned }, 'pruned finished transactions past retention');
        }
      },
      1,
      'reconcile',
    );
    // Upserting a scheduler is idempotent; doing it again now and then brings the schedulers back
    // after Redis restarted empty or was flushed.
    const ensure = () => this.#ensureSchedulers().catch(() => {});
    void ensure();
    this.#producer.on('ready', () => void ensure());
    this.#schedulerTimer = setInterval(ensure, Math.max(1_000, this.#o.reconcileIntervalMs));
    this.#schedulerTimer.unref();
  }

  /** Waits (at most `ms`) for Redis, so readiness is true once start-up returns. */
  async connected(ms: number): Promise<boolean> {
    if (this.#producer.status === 'ready') return true;
    return new Promise((resolve) => {
      const onReady = () => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.#producer.off('ready', onReady);
        resolve(false);
      }, ms);
      this.#producer.once('ready', onReady);
    });
  }

  async ping(): Promise<void> {
    // Without an offline queue a ping while disconnected fails with ioredis' "Stream isn't
    // writeable"; the connection's state says what is wrong in words an operator can act on.
    if (this.#producer.status !== 'ready') {
      throw new Error(`no connection to Redis (${this.#producer.status}${this.#lastError ? `: ${this.#lastError}` : ''})`);
    }
    await this.#producer.ping();
  }

  async close(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#schedulerTimer);
    const graceful = (async () => {
      await Promise.allSettled(this.#workers.map((w) => w.close()));
      await Promise.allSettled([this.#completion.close(), this.#deadline.close(), this.#maintenance.close()]);
    })();
    // After Redis restarted, BullMQ's close can wait on connections that never become ready again;
    // a job cut short here is only a reminder, re-created from the log by reconciliation.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      graceful,
      new Promise((r) => {
        timer = setTimeout(r, CLOSE_GRACE_MS);
      }),
    ]);
    clearTimeout(timer);
    // Forced: BullMQ 6.7 workers whose connection reconnected may never finish a graceful close.
    await Promise.race([Promise.allSettled(this.#workers.map((w) => w.close(true))), new Promise((r) => setTimeout(r, 1_000).unref())]);
    for (const c of this.#workerConnections) c.disconnect();
    this.#producer.disconnect();
  }

  /**
   * ioredis ends a connection for good when a connect attempt fails outright instead of retrying
   * (a Sentinel connector disconnected mid-connect is one way): the producer, or a worker's
   * connection, would then stay dead until a restart. One that ends while this is not closing is
   * connected again a second later.
   */
  #revived(connection: Redis): Redis {
    connection.on('end', () => {
      if (this.#closing) return;
      this.#o.logger.warn('a Redis connection ended; connecting it again');
      setTimeout(() => {
        if (!this.#closing) connection.connect().catch(() => {});
      }, 1_000).unref();
    });
    return connection;
  }

  /** A transaction's completion job: its id derives from the transaction's, so no instance ever adds it twice. */
  #completionJob(transactionId: string) {
    return { name: 'complete', data: { transactionId }, opts: this.#retrying(`complete-${transactionId}`) };
  }

  #retrying(jobId: string) {
    // removeOnFail: a failed job kept under its fixed id would silently swallow every later re-add
    // (reconciliation's included) and leave the transaction unfinished for good.
    return { jobId, attempts: ATTEMPTS, backoff: { type: 'capped-exponential' }, removeOnComplete: true, removeOnFail: true };
  }

  async #ensureSchedulers(): Promise<void> {
    await this.#maintenance.upsertJobScheduler(
      'reconcile',
      { every: this.#o.reconcileIntervalMs },
      { name: 'reconcile', opts: { removeOnComplete: true, removeOnFail: 100 } },
    );
    await this.#maintenance.upsertJobScheduler(
      'prune',
      { every: this.#o.pruneIntervalMs },
      { name: 'prune', opts: { removeOnComplete: true, removeOnFail: 100 } },
    );
  }

  #worker(name: string, process: (job: TxJob) => Promise<void>, concurrency: number, loop: 'completion' | 'deadline' | 'reconcile'): void {
    const connection = this.#revived(connectRedis(this.#target, { maxRetriesPerRequest: null }));
    connection.on('error', () => {});
    this.#workerConnections.push(connection);
    const { retryBaseMs, retryMaxMs, logger } = this.#o;
    const worker = new Worker(name, process, {
      connection,
      prefix: this.#o.prefix,
      concurrency,
      // A job whose worker died is taken back after its lock runs out (15 s; each attempt is bounded
      // by 5 s participant calls) and retried, however often that happens: by default BullMQ fails
      // a job that stalls twice, which would drop the reminder of a decided transaction.
      lockDuration: 15_000,
      stalledInterval: 15_000,
      maxStalledCount: ATTEMPTS,
      settings: {
        // base, 2·base, 4·base … capped: a participant back from an outage is finished within about the cap.
        backoffStrategy: (attemptsMade: number) => Math.min(retryMaxMs, retryBaseMs * 2 ** Math.max(0, attemptsMade - 1)),
      },
    });
    worker.on('failed', (job, err) => {
      this.#o.onFailure(loop);
      logger.debug(
        { queue: name, transactionId: (job?.data as { transactionId?: string } | undefined)?.transactionId, attempt: job?.attemptsMade, err: err.message },
        'job attempt failed; will retry',
      );
    });
    worker.on('error', (err) => logger.warn({ queue: name, err: err.message }, 'worker error'));
    this.#workers.push(worker);
  }
}
