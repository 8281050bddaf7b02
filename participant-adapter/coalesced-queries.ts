import type pg from 'pg';
import { sendQueryThen } from './sent-query.ts';

interface Waiting {
  text: string;
  resolve: (r: pg.QueryResult) => void;
  reject: (err: unknown) => void;
}

export interface CoalescedQueriesOptions {
  /** A connection of a pool in pipeline mode (queries are written without waiting for earlier answers). */
  connect: () => Promise<pg.PoolClient>;
  /** Client-side bound on each query; a query past it destroys its connection (pipeline mode). */
  timeoutMs: number;
  /**
   * At most this many queries share one connection. The server runs them one after the other,
   * each with its own WAL flush, so a long line would add those flushes to the last one's wait.
   */
  perConnection?: number;
}

/** True when the error leaves the connection's state unknown (no SQLSTATE: the socket failed). */
function connectionLost(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return !(typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code));
}

/**
 * Independent one-statement simple queries issued in the same turn of the event loop (COMMIT
 * PREPARED of the transactions one group-committed decision batch released) leave on a shared
 * pipelined connection in one write, instead of a connection and a write each. On loopback a write
 * costs its sender the receiver's TCP processing and wakeup, and these were a third of the
 * coordinator's write syscalls.
 *
 * Each query is its own Query message and so its own implicit transaction: an error in one (42704
 * for a gid already finished) reaches only its caller, and the server goes on with the next. A
 * socket failure or a timeout fails every query still unanswered on that connection, each caller as
 * if its own connection had failed (the state is unknown; phase 2 is retried). A query is written
 * as soon as the microtask queue it was issued from is empty: nothing waits for another event.
 */
export class CoalescedQueries {
  readonly #connect: () => Promise<pg.PoolClient>;
  readonly #timeoutMs: number;
  readonly #perConnection: number;
  #waiting: Waiting[] = [];

  constructor(options: CoalescedQueriesOptions) {
    this.#connect = options.connect;
    this.#timeoutMs = options.timeoutMs;
    this.#perConnection = Math.max(1, options.perConnection ?? 4);
  }

  /** Runs `text` (no parameters: one simple query) and answers its own result or error. */
  query(text: string): Promise<pg.QueryResult> {
    return new Promise<pg.QueryResult>((resolve, reject) => {
      // The callers one decision batch releases resume over several microtask hops: a tick queued
      // from a microtask runs once the microtask queue is empty, so all of them are in by then,
      // without waiting behind the other I/O callbacks of this turn as setImmediate would.
      if (this.#waiting.length === 0) queueMicrotask(() => process.nextTick(() => this.#flush()));
      this.#waiting.push({ text, resolve, reject });
    });
  }

  #flush(): void {
    const all = this.#waiting;
    this.#waiting = [];
    for (let i = 0; i < all.length; i += this.#perConnection) void this.#send(all.slice(i, i + this.#perConnection));
  }

  async #send(batch: Waiting[]): Promise<void> {
    let client: pg.PoolClient;
    try {
      client = await this.#connect();
    } catch (err) {
      for (const w of batch) w.reject(err);
      return;
    }
    // A checked-out client whose socket dies emits 'error'; the queries below reject with it.
    const onError = () => {};
    client.on('error', onError);
    let broken = false;
    let unanswered = batch.length;
    // The connection goes back before the last caller resumes, so the work that follows can have it.
    const answered = () => {
      if (--unanswered > 0) return;
      client.off('error', onError);
      client.release(broken || undefined);
    };
    const stream = (client as unknown as { connection?: { stream?: { cork?: () => void; uncork?: () => void } } }).connection?.stream;
    const corkable = typeof stream?.cork === 'function' && typeof stream.uncork === 'function';
    // Every query is written synchronously by client.query in pipeline mode: uncorking right after
    // the loop sends them as one write and holds nothing back.
    if (corkable) stream.cork!();
    for (const w of batch) {
      // The answer settles the caller's own promise directly: no promise per query in between.
      const settle = (err: unknown, r: pg.QueryResult | undefined) => {
        if (err) {
          if (connectionLost(err)) broken = true;
          answered();
          w.reject(err);
          return;
        }
        answered();
        w.resolve(r!);
      };
      try {
        sendQueryThen(client, { text: w.text, timeoutMs: this.#timeoutMs }, settle);
      } catch (err) {
        // Refused before it was sent: answered at once, as a rejected query would be.
        settle(err ?? new Error('query refused'), undefined);
      }
    }
    if (corkable) stream.uncork!();
  }
}
