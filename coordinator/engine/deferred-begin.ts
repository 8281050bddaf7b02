import type { BeginOutcome, BeginRecord } from './log-port.ts';

/**
 * A submitted transaction's begin record, written only if the transaction is still undecided after
 * `delayMs` (DESIGN.md, "The hot path": begin records are not forced and may be folded into the
 * decision). Most transactions decide within milliseconds: their first state change then inserts
 * the row in its decided state (`claim` hands the record over), one log write fewer. One that runs
 * longer (a slow statement, a database that does not answer) gets its row as before, so operators
 * see it and the deadline sweep can find it if its driver dies. A keyed request writes at once
 * (delay 0): its key must be durable before any branch is touched.
 */
export class DeferredBegin {
  readonly record: BeginRecord;
  readonly #write: (record: BeginRecord) => Promise<BeginOutcome>;
  readonly #onWritten: () => void;
  #timer: NodeJS.Timeout | undefined;
  #written: Promise<BeginOutcome> | undefined;
  #claimed = false;

  constructor(record: BeginRecord, write: (record: BeginRecord) => Promise<BeginOutcome>, delayMs: number, onWritten: () => void = () => {}) {
    this.record = record;
    this.#write = write;
    this.#onWritten = onWritten;
    if (delayMs <= 0) this.start();
    else this.#timer = setTimeout(() => this.start(), delayMs);
  }

  /** Writes the record now, unless it is written or claimed already; the write's outcome. */
  start(): Promise<BeginOutcome> {
    clearTimeout(this.#timer);
    if (this.#claimed) return Promise.reject(new Error(`the begin record of ${this.record.id} was claimed by its first state change`));
    if (!this.#written) {
      this.#written = this.#write(this.record);
      this.#written.then(this.#onWritten, () => {}); // a failure is the claimer's to report
    }
    return this.#written;
  }

  /**
   * Called once, before the transaction's first state change. The record when it was not written
   * yet: the timer is stopped and the state change must insert the row itself. Null once the
   * write started has succeeded: the row exists and is changed in place. Throws that write's error.
   */
  async claim(): Promise<BeginRecord | null> {
    clearTimeout(this.#timer);
    if (this.#written) {
      await this.#written;
      return null;
    }
    this.#claimed = true;
    return this.record;
  }

  /** Stops a pending timer (the run ended without any state change of its own). */
  dispose(): void {
    clearTimeout(this.#timer);
  }
}
