import { performance } from 'node:perf_hooks';
import type {
  OpenBranchOptions,
  Participant,
  ParticipantHealth,
  PreparedBranchInfo,
  PreparedBranchState,
  PreparedSlots,
  XactStatus,
  BranchSession,
} from '../../participant-adapter/participant.ts';

export type ParticipantOperation = 'commit_prepared' | 'rollback_prepared' | 'list_prepared' | 'inspect_prepared' | 'xact_status' | 'health' | 'prepared_slots';
export type RecordOperation = (resource: string, operation: ParticipantOperation, outcome: 'ok' | 'error', seconds: number) => void;

/**
 * A participant whose calls outside a branch (phase 2, recovery's listings, health) are timed
 * and counted by outcome. A participant that answers slowly or fails (a database, or a service's
 * participant router) shows up in the metrics before it shows up as transactions in doubt.
 * Branch work is already measured by the engine's phases.
 */
export class MeteredParticipant implements Participant {
  constructor(
    private readonly inner: Participant,
    private readonly record: RecordOperation,
  ) {}

  get name(): string {
    return this.inner.name;
  }
  get kind(): Participant['kind'] {
    return this.inner.kind;
  }
  get onePhase(): boolean {
    return this.inner.onePhase;
  }
  get connectionsInUse(): number {
    return this.inner.connectionsInUse;
  }

  openBranch(options: OpenBranchOptions): Promise<BranchSession> {
    return this.inner.openBranch(options);
  }

  commitPrepared(gid: string): Promise<'committed' | 'not-found'> {
    return this.#timed('commit_prepared', () => this.inner.commitPrepared(gid));
  }

  rollbackPrepared(gid: string): Promise<'rolled-back' | 'not-found'> {
    return this.#timed('rollback_prepared', () => this.inner.rollbackPrepared(gid));
  }

  listPrepared(prefix: string): Promise<PreparedBranchInfo[]> {
    return this.#timed('list_prepared', () => this.inner.listPrepared(prefix));
  }

  inspectPrepared(gid: string, options?: { locks?: boolean }): Promise<PreparedBranchState | null> {
    return this.#timed('inspect_prepared', () => this.inner.inspectPrepared(gid, options));
  }

  xactStatus(xid: string): Promise<XactStatus> {
    return this.#timed('xact_status', () => this.inner.xactStatus(xid));
  }

  async health(): Promise<ParticipantHealth> {
    const t0 = performance.now();
    const h = await this.inner.health();
    // health() never throws: an unreachable participant is an answer, and counts as an error here.
    this.record(this.name, 'health', h.reachable ? 'ok' : 'error', (performance.now() - t0) / 1000);
    return h;
  }

  preparedSlots(): Promise<PreparedSlots | null> {
    return this.#timed('prepared_slots', () => this.inner.preparedSlots());
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  #timed<T>(operation: ParticipantOperation, call: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    let called: Promise<T>;
    try {
      called = call();
    } catch (err) {
      called = Promise.reject(err);
    }
    // A reaction rather than an async function: phase 2 calls this once per branch (issue 13).
    return called.then(
      (r) => {
        this.record(this.name, operation, 'ok', (performance.now() - t0) / 1000);
        return r;
      },
      (err: unknown) => {
        this.record(this.name, operation, 'error', (performance.now() - t0) / 1000);
        throw err;
      },
    );
  }
}
