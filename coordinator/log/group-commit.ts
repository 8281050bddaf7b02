import { performance } from 'node:perf_hooks';
import { UnavailableError } from '../errors.ts';

/*
 * Group commit: concurrent writes of one kind share one statement (graphile-worker's batch(),
 * DataLoader's per-caller results).
 *
 * When nothing is in flight an item is written at once, alone: one client waits no longer than it
 * would without the batcher, and no timer ever holds a write back. While a batch is in flight, new
 * items queue, and the queue becomes the next batch when a batch settles. The batch size thus
 * follows the load by itself: one at one client, about the number of clients waiting during one
 * round trip under load, never more than `maxBatch`. The exception is a batcher given `lingerMs`,
 * for writes whose callers' answers do not wait on them (the completion records): a free slot
 * waits that long for company, so the same records take fewer, larger statements.
 *
 * One batch in flight by default (`maxInFlight: 1`), for three reasons. The log runs on the same
 * two cores as everything else, so what costs is statements, not waiting: a second batch in flight
 * halves the batch size and doubles the statements for the same work. Batches of one batcher are
 * then applied in submission order (batch k+1 is sent only once batch k is settled). And two batches
 * of one kind never wait on each other's row locks, so they cannot deadlock each other (an
 * `UPDATE … FROM unnest(…)` locks its rows in an order the planner chooses). Measured with
 * bench/group-commit.ts (64 clients, compare-and-set on one row each): 1 in flight wrote 32 items
 * per statement at about 3 µs of server CPU per write; 2 in flight wrote about 20 per statement,
 * at more CPU per write and no more throughput. A single write per call: 16–19 k/s against 120–160 k/s.
 *
 * For the write's author: a batch statement with array parameters is planned again at every
 * execution unless the session forces generic plans (a custom plan knows the arrays' length, so it
 * always looks cheaper): measured, a batch of one cost the server 70 µs instead of 20. Give a batch
 * of one the plain single-row statement, or run the batch on `plan_cache_mode = force_generic_plan`.
 *
 * Every caller gets its own result or its own error:
 * - the write returns one entry per item, in order; an `Error` entry fails that caller alone (a
 *   compare-and-set that found no row), as DataLoader does. So `Out` must never be an Error itself;
 * - a rejected write fails every caller of that batch with the same error, as if each had written
 *   alone and failed. A write lost mid-flight (the connection reset after the statement was sent)
 *   may or may not have been applied: each caller must treat that error as "outcome unknown",
 *   exactly as for a single write. The log's writes are compare-and-sets that accept their own
 *   target state, so a caller's retry (or a re-read) settles it;
 * - a write must not name one row twice in a batch: in one `UPDATE … FROM` a row is updated once
 *   whatever the number of its matching items, with one of them that Postgres picks. Items for one
 *   row come from one driver, which waits for each of its writes, so this does not arise in the log.
 *
 * Bounded: never more than `maxBatch` items per write, never more than `maxQueued` waiting. While
 * the log hangs (unreachable) or every write fails, waiting items would otherwise pile up without
 * end; beyond `maxQueued`, submit fails at once with GroupCommitOverloadError, a 503 for the API.
 * A hung write itself is bounded by the pool's timeouts, not here.
 *
 * close() refuses new items, writes what is queued and waits for every batch in flight: a shutdown
 * that ends the pool after it loses nothing that was accepted.
 */

/** What the batcher reports for metrics; implemented by coordinator/observability/metrics.ts. */
export interface GroupCommitObserver {
  /** One write settled: its items, its duration, and whether the statement itself succeeded. */
  flushed(name: string, size: number, seconds: number, outcome: 'ok' | 'failed'): void;
  /** An item was refused because `maxQueued` items were already waiting. */
  refused(name: string): void;
}

/** One entry per item, in the items' order: the caller's result, or an Error for that caller alone. */
export type GroupWrite<In, Out> = (items: In[]) => Promise<ReadonlyArray<Out | Error>>;

export interface GroupCommitOptions<In, Out> {
  /** Names the batcher in errors and metrics (e.g. `complete`). */
  name: string;
  write: GroupWrite<In, Out>;
  /** Most items in one write: bounds the statement's size and the rows it locks at once. */
  maxBatch: number;
  /** Most items waiting while writes are in flight; beyond it submit fails at once. */
  maxQueued: number;
  /** Writes in flight at once (default 1, see above). */
  maxInFlight?: number;
  /**
   * How long a free write slot waits for more items before writing what it has (default 0: at once;
   * a full batch never waits). For writes no caller's answer waits on: it is added to each item's
   * wait, and buys larger batches, so fewer statements for the same items. close() does not wait.
   */
  lingerMs?: number;
  observer?: GroupCommitObserver;
}

/*
 * Both refusals are UnavailableErrors (their `name` stays that class's literal; tell them apart with
 * instanceof): the API already answers those 503, with Retry-After when one is given.
 */

/** Too many writes are waiting on the log (it is slow or down): refused at once, nothing was written. */
export class GroupCommitOverloadError extends UnavailableError {
  constructor(
    readonly batcher: string,
    readonly queued: number,
  ) {
    // 1 s: the smallest Retry-After; a log that is down for less than that has drained the queue by then.
    super(`the log is not keeping up: ${queued} ${batcher} writes are already waiting`, { retryAfterSeconds: 1 });
  }
}

/** The batcher was closed (the service is stopping): nothing was written. */
export class GroupCommitClosedError extends UnavailableError {
  constructor(readonly batcher: string) {
    super(`the ${batcher} writer is closed: the service is stopping`);
  }
}

/**
 * The write settled with a number of results other than its number of items: a bug in the write.
 * The statement ran, so each caller's outcome is unknown, as for a write lost mid-flight.
 */
export class GroupCommitResultError extends Error {
  override readonly name = 'GroupCommitResultError';
  constructor(
    readonly batcher: string,
    readonly expected: number,
    readonly received: unknown,
  ) {
    super(`the ${batcher} write returned ${Array.isArray(received) ? received.length : typeof received} results for ${expected} items`);
  }
}

type Resolve<Out> = (value: Out) => void;
type Reject = (error: unknown) => void;

export class GroupCommit<In, Out> {
  readonly name: string;
  readonly #write: GroupWrite<In, Out>;
  readonly #maxBatch: number;
  readonly #maxQueued: number;
  readonly #maxInFlight: number;
  readonly #lingerMs: number;
  #linger: NodeJS.Timeout | null = null;
  readonly #observer: GroupCommitObserver | undefined;
  // Three parallel arrays rather than one record per item: the queue costs nothing per item
  // beyond the caller's promise, and the items array is handed to the write as it is.
  #items: In[] = [];
  #resolves: Resolve<Out>[] = [];
  #rejects: Reject[] = [];
  #inFlight = 0;
  #closed = false;
  #idle: (() => void)[] = [];

  constructor(options: GroupCommitOptions<In, Out>) {
    const maxInFlight = options.maxInFlight ?? 1;
    const lingerMs = options.lingerMs ?? 0;
    for (const [key, value, least] of [
      ['maxBatch', options.maxBatch, 1],
      ['maxQueued', options.maxQueued, 0],
      ['maxInFlight', maxInFlight, 1],
      ['lingerMs', lingerMs, 0],
    ] as const) {
      if (!Number.isInteger(value) || value < least) throw new RangeError(`group commit ${options.name}: ${key} must be an integer >= ${least}, not ${value}`);
    }
    this.name = options.name;
    this.#write = options.write;
    this.#maxBatch = options.maxBatch;
    this.#maxQueued = options.maxQueued;
    this.#maxInFlight = maxInFlight;
    this.#lingerMs = lingerMs;
    this.#observer = options.observer;
  }

  /** Items waiting for a batch (not counting those in flight). */
  get queued(): number {
    return this.#items.length;
  }

  /** Writes in flight. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /**
   * Writes `item` in the next batch and settles with its own result. Rejects at once with
   * GroupCommitOverloadError when `maxQueued` items already wait, GroupCommitClosedError after
   * close(); otherwise with its own error, or its batch's error (then the outcome is unknown).
   */
  submit(item: In): Promise<Out> {
    if (this.#closed) return Promise.reject(new GroupCommitClosedError(this.name));
    // Items wait only while every write slot is taken (a free slot takes the queue at once).
    if (this.#inFlight >= this.#maxInFlight && this.#items.length >= this.#maxQueued) {
      this.#observer?.refused(this.name);
      return Promise.reject(new GroupCommitOverloadError(this.name, this.#items.length));
    }
    const promise = new Promise<Out>((resolve, reject) => {
      this.#items.push(item);
      this.#resolves.push(resolve);
      this.#rejects.push(reject);
    });
    this.#kick();
    return promise;
  }

  /** Refuses new items, writes those queued, and resolves once no write is in flight. Never rejects. */
  close(): Promise<void> {
    this.#closed = true;
    this.#kick();
    if (this.#inFlight === 0 && this.#items.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  /** Writes the queue now, or once the linger is over, if a write slot is free. */
  #kick(): void {
    if (this.#items.length === 0 || this.#inFlight >= this.#maxInFlight) return;
    if (this.#lingerMs === 0 || this.#closed || this.#items.length >= this.#maxBatch) {
      if (this.#linger) clearTimeout(this.#linger);
      this.#linger = null;
      this.#flush();
      return;
    }
    this.#linger ??= setTimeout(() => {
      this.#linger = null;
      if (this.#items.length > 0 && this.#inFlight < this.#maxInFlight) this.#flush();
    }, this.#lingerMs);
  }

  #flush(): void {
    let items: In[];
    let resolves: Resolve<Out>[];
    let rejects: Reject[];
    if (this.#items.length <= this.#maxBatch) {
      // The usual case: the whole queue is the batch; take the arrays rather than copy them.
      items = this.#items;
      resolves = this.#resolves;
      rejects = this.#rejects;
      this.#items = [];
      this.#resolves = [];
      this.#rejects = [];
    } else {
      items = this.#items.splice(0, this.#maxBatch);
      resolves = this.#resolves.splice(0, this.#maxBatch);
      rejects = this.#rejects.splice(0, this.#maxBatch);
    }
    this.#inFlight += 1;
    const started = performance.now();
    let written: Promise<ReadonlyArray<Out | Error>>;
    try {
      written = this.#write(items);
    } catch (err) {
      // A write that throws before returning its promise fails its batch like one that rejects.
      written = Promise.reject(err);
    }
    written.then(
      (results) => {
        const size = items.length;
        if (!Array.isArray(results) || results.length !== size) {
          const error = new GroupCommitResultError(this.name, size, results);
          for (const reject of rejects) reject(error);
          this.#settled(size, started, 'failed');
          return;
        }
        for (let i = 0; i < size; i++) {
          const result = results[i];
          if (result instanceof Error) rejects[i]!(result);
          else resolves[i]!(result as Out);
        }
        this.#settled(size, started, 'ok');
      },
      (error: unknown) => {
        for (const reject of rejects) reject(error);
        this.#settled(items.length, started, 'failed');
      },
    );
  }

  #settled(size: number, started: number, outcome: 'ok' | 'failed'): void {
    this.#inFlight -= 1;
    // The observer runs after every caller is settled: a throwing observer must not strand callers
    // nor stop the queue, so it is guarded and the queue moves on regardless.
    try {
      this.#observer?.flushed(this.name, size, (performance.now() - started) / 1000, outcome);
    } catch {
      /* metrics are best effort */
    }
    if (this.#items.length > 0) this.#kick();
    else if (this.#inFlight === 0 && this.#closed) {
      for (const resolve of this.#idle.splice(0)) resolve();
    }
  }
}
