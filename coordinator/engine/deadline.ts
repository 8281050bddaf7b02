export type StopReason = { kind: 'deadline' } | { kind: 'failure' };

/**
 * The transaction's deadline and its fail-fast switch in one AbortSignal: it fires when the
 * deadline passes or when the first branch fails, and every branch then cancels what it runs.
 */
export class WorkControl {
  readonly deadlineAt: number;
  readonly #controller = new AbortController();
  readonly #timer: NodeJS.Timeout;

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

  /** The first reason wins: a failure after the deadline is still a deadline abort. */
  stop(reason: StopReason): void {
    if (!this.#controller.signal.aborted) this.#controller.abort(reason);
  }

  dispose(): void {
    clearTimeout(this.#timer);
  }
}
