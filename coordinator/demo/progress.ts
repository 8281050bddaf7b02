import type { Workload } from './workload.ts';

// On a terminal the status line is redrawn four times a second (smooth, still cheap); in a log
// (CI, a pipe) one line every two seconds keeps the record readable.
const TTY_REFRESH_MS = 250;
const PLAIN_REFRESH_MS = 2_000;

/**
 * The live display: one status line (rate, committed, aborted, in flight, phase), rewritten in
 * place with \r on a terminal; the run's events (a kill, an outage) as lines of their own above it.
 */
export class Progress {
  readonly #out: NodeJS.WriteStream;
  readonly #tty: boolean;
  readonly #startedAt = Date.now();
  #workload: Workload | undefined;
  #phase = 'starting';
  #timer: NodeJS.Timeout | undefined;
  #drawn = false;

  constructor(out: NodeJS.WriteStream = process.stdout) {
    this.#out = out;
    this.#tty = out.isTTY === true;
  }

  /** Seconds since the demo started, for event lines. */
  elapsed(): string {
    return `${((Date.now() - this.#startedAt) / 1000).toFixed(1).padStart(5)}s`;
  }

  follow(workload: Workload): void {
    this.#workload = workload;
    this.#timer = setInterval(() => this.#draw(), this.#tty ? TTY_REFRESH_MS : PLAIN_REFRESH_MS);
    this.#timer.unref();
  }

  set phase(phase: string) {
    if (phase === this.#phase) return;
    this.#phase = phase;
    if (this.#workload) this.#draw();
  }

  get phase(): string {
    return this.#phase;
  }

  /** A line of its own, kept on screen above the status line. */
  event(message: string): void {
    this.#clear();
    this.#out.write(`${this.elapsed()}  ${message}\n`);
    if (this.#tty && this.#workload && this.#timer) this.#draw();
  }

  /** Stops redrawing and leaves the last status on its own line. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#drawn && this.#tty) this.#out.write('\n');
    this.#drawn = false;
  }

  #line(): string {
    const w = this.#workload!;
    const retrying = w.retrying;
    return (
      `${this.elapsed()}  ${this.#phase.padEnd(18)} ${w.rate().toFixed(0).padStart(4)} transfers/s | committed ${String(w.committed).padStart(5)} | ` +
      `aborted ${String(w.aborted).padStart(4)} | in flight ${w.inFlight}${retrying ? ` (${retrying} retrying)` : ''}`
    );
  }

  #draw(): void {
    if (!this.#workload) return;
    if (this.#tty) {
      // Cut to the terminal's width: a wrapped line cannot be rewritten with \r. \x1b[K clears
      // what a longer previous line left at the end.
      this.#out.write(`\r${this.#line().slice(0, (this.#out.columns || 120) - 1)}\x1b[K`);
      this.#drawn = true;
    } else {
      this.#out.write(`${this.#line()}\n`);
    }
  }

  #clear(): void {
    if (this.#tty && this.#drawn) {
      this.#out.write('\r\x1b[K');
      this.#drawn = false;
    }
  }
}
