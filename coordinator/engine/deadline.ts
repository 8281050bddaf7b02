export type StopReason = { kind: 'deadline' } | { kind: 'failure' };

/**
 * The transaction's deadline and its fail-fast switch in one AbortSignal: it fires when the
 * deadline passes or when the first branch fails, and every branch then cancels what it runs.
 */
export class WorkControl {
  readonly deadlineAt: number;
  readonly #controller = new AbortController();
  readonly #timer: NodeJS.Timeout;
  /**
   * Called once when the work stops. A plain list rather than listeners on the signal: Node's
   * EventTarget made an add and a remove per branch a measurable share of a transaction (issue 13).
   */
  #onStop: (() => void)[] = [];

  constructor(deadlineAt: number) {
    this.deadlineAt = deadlineAt;
    this.#timer = setTimeout(() => this.stop({ kind: 'deadline' }), Math.max(0, deadlineAt - Date.now()));
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  get stopReason(): StopReason | undefined {
    return this.#controller.signal.aborted ? (this.#controller.signal.reason as StopReason) : undefined;
  }

  get expired(): boolean {
    return Date.now() >= this.deadlineAt;
  }

  remainingMs(): number {
    return Math.max(0, this.deadlineAt - Date.now());
  }

  /**
   * Runs `callback` when the work stops, as an abort listener would: never if it has stopped
   * already (the caller checks `signal.aborted` where that matters). The returned function takes it back.
   */
  onStop(callback: () => void): () => void {
    if (this.#controller.signal.aborted) return () => {};
    this.#onStop.push(callback);
    return () => {
      const at = this.#onStop.indexOf(callback);
      if (at >= 0) this.#onStop.splice(at, 1);
    };
  }

  /** The first reason wins: a failure after the deadline is still a deadline abort. */
  stop(reason: StopReason): void {
    if (this.#controller.signal.aborted) return;
    this.#controller.abort(reason);
    const callbacks = this.#onStop;
    this.#onStop = [];
    for (const callback of callbacks) callback();
  }

  dispose(): void {
    clearTimeout(this.#timer);
  }
}
