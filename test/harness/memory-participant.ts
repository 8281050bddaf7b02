import type { PrepareResult, StatementResult } from '../../participant-adapter/branch.ts';
import { ParticipantError } from '../../participant-adapter/errors.ts';
import type {
  BranchSession,
  BranchState,
  Participant,
  ParticipantHealth,
  PreparedBranchInfo,
  PreparedBranchState,
  XactStatus,
} from '../../participant-adapter/participant.ts';

/*
 * A participant database reduced to what the state machine depends on: prepared gids with their
 * xids and each xid's fate. For test/state-changes.test.ts only, whose subject is the engine and its
 * log port; the participant adapter's own behaviour is proven against Postgres elsewhere.
 */

let nextXid = 1_000;

export class MemoryParticipant implements Participant {
  readonly kind = 'postgres' as const;
  readonly onePhase = true;
  connectionsInUse = 0;
  /** Unreachable: every call fails as a dropped connection does. */
  down = false;
  readonly prepared = new Map<string, { xid: string | null; preparedAt: Date }>();
  readonly fates = new Map<string, XactStatus>();

  constructor(readonly name: string) {}

  async openBranch(): Promise<BranchSession> {
    this.reach();
    this.connectionsInUse++;
    return new MemoryBranch(this);
  }

  async commitPrepared(gid: string): Promise<'committed' | 'not-found'> {
    return this.#finish(gid, 'committed') ? 'committed' : 'not-found';
  }

  async rollbackPrepared(gid: string): Promise<'rolled-back' | 'not-found'> {
    return this.#finish(gid, 'aborted') ? 'rolled-back' : 'not-found';
  }

  async listPrepared(prefix: string): Promise<PreparedBranchInfo[]> {
    this.reach();
    return [...this.prepared]
      .filter(([gid]) => gid.startsWith(prefix))
      .map(([gid, p]) => ({ gid, preparedAt: p.preparedAt, owner: 'memory', database: this.name }));
  }

  async inspectPrepared(gid: string): Promise<PreparedBranchState | null> {
    this.reach();
    const p = this.prepared.get(gid);
    return p ? { preparedAt: p.preparedAt, locks: null, xid: p.xid ?? '0' } : null;
  }

  async xactStatus(xid: string): Promise<XactStatus> {
    this.reach();
    return this.fates.get(xid) ?? 'unknown';
  }

  async health(): Promise<ParticipantHealth> {
    return { resource: this.name, reachable: !this.down, usable: !this.down, serverVersion: null, maxPreparedTransactions: null, message: null };
  }

  async preparedSlots(): Promise<null> {
    return null;
  }

  async close(): Promise<void> {}

  /** What a service does with an interactive branch: its work, then PREPARE under the gid it was given. */
  prepareAs(gid: string): string {
    const xid = String(nextXid++);
    this.prepared.set(gid, { xid, preparedAt: new Date() });
    this.fates.set(xid, 'in progress');
    return xid;
  }

  /** A DBA's ROLLBACK PREPARED, behind the coordinator's back. */
  rollBackByHand(gid: string): void {
    if (!this.#finish(gid, 'aborted')) throw new Error(`${gid} is not prepared on ${this.name}`);
  }

  #finish(gid: string, fate: 'committed' | 'aborted'): boolean {
    this.reach();
    const p = this.prepared.get(gid);
    if (!p) return false;
    this.prepared.delete(gid);
    if (p.xid) this.fates.set(p.xid, fate);
    return true;
  }

  /** Throws when down, as every call to an unreachable database does. */
  reach(): void {
    if (this.down) throw new ParticipantError('connection_failure', `${this.name} is unreachable`, { retryable: true, resource: this.name });
  }
}

/** One open branch: statements "write" unless they are SELECTs, and the one named FAIL fails as a constraint would. */
class MemoryBranch implements BranchSession {
  state: BranchState = 'open';
  #xid: string | null = null;
  #released = false;

  constructor(private readonly db: MemoryParticipant) {}

  get resource(): string {
    return this.db.name;
  }

  async run(sql: string): Promise<StatementResult> {
    this.db.reach();
    if (sql === 'FAIL') {
      this.state = 'broken';
      throw new ParticipantError('statement_failed', 'new row violates check constraint', { sqlState: '23514', retryable: false, resource: this.db.name });
    }
    if (!/^\s*select/i.test(sql) && this.#xid === null) {
      this.#xid = String(nextXid++);
      this.db.fates.set(this.#xid, 'in progress');
    }
    return { command: 'UPDATE', rowCount: 1, rows: [] };
  }

  async xid(): Promise<string | null> {
    return this.#xid;
  }

  async prepare(gid: string): Promise<PrepareResult> {
    this.db.reach();
    if (this.state === 'broken') return { prepared: false, xid: null };
    this.db.prepared.set(gid, { xid: this.#xid, preparedAt: new Date() });
    this.state = 'prepared';
    return { prepared: true, xid: this.#xid };
  }

  async commit(): Promise<boolean> {
    this.db.reach();
    if (this.#xid) this.db.fates.set(this.#xid, 'committed');
    this.state = 'finished';
    return true;
  }

  async rollback(): Promise<void> {
    if (this.#xid) this.db.fates.set(this.#xid, 'aborted');
    this.state = 'finished';
  }

  async cancel(): Promise<void> {}

  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.db.connectionsInUse--;
    if (this.state === 'open' && this.#xid) this.db.fates.set(this.#xid, 'aborted');
  }
}
