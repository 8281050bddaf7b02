/*
 * Test-only crash points at each step boundary of the protocol (TPC_FAILPOINTS), so that tests can
 * prove recovery from a coordinator that dies exactly there. With none configured, `hit` returns
 * after one size check: nothing else runs in production.
 */
// after-decision-written: a batch of decisions is durable in the log, and none of its callers has
// been told (group commit: a batch written but not acknowledged). before-completion-written: phase
// 2 done, its completion record queued for the log but not written (a deferred completion lost).
export const FAILPOINT_PATTERN = /^(after-begin|after-decision|after-decision-written|before-completion-written|after-prepare-\d+|after-complete-\d+)$/;

export class Failpoints {
  readonly #active: ReadonlySet<string>;

  constructor(names: Iterable<string> = []) {
    this.#active = new Set(names);
  }

  /** Dies like a power cut (SIGKILL: no handlers, no flushing) when `name` is armed. */
  hit(name: string): void {
    if (this.#active.size === 0 || !this.#active.has(name)) return;
    process.stderr.write(`failpoint ${name}: crashing\n`);
    process.kill(process.pid, 'SIGKILL');
  }
}
