import type {
  AbandonedRecord,
  AuditEntry,
  BeginOutcome,
  BeginRecord,
  JoinedBranchRecord,
  JoinRecord,
  LoggedBranch,
  LoggedEvent,
  LoggedTransaction,
  RecoveryLog,
  TransactionLog,
  TransitionRecord,
  SettledBranch,
} from '../../coordinator/engine/log-port.ts';
import { FINAL_TX_STATUSES, isFinal, type TxStatus } from '../../coordinator/engine/states.ts';
import { StaleStateError } from '../../coordinator/errors.ts';
import { withHappyPathEvents } from '../../coordinator/log/happy-path-events.ts';

/*
 * The engine's log port held in memory, for the state machine's millisecond tests
 * (test/state-changes.test.ts). It keeps the Postgres log's rules where the engine can see them:
 * every transition is the same compare-and-set (status = from, driver = me, branch count at most
 * branchesChecked), a lease is taken as acquire takes it, and events are read back as a lean row
 * gives them (happy-path ones derived, not written). It is no proof of the SQL: the real-database
 * tests are. It lives under test/ because nothing in the product may run without a durable log.
 */

interface Row {
  tx: LoggedTransaction;
  branchCount: number;
  interactive: boolean;
  timeoutMs: number;
  /** The decision had a write of its own, apart from the completion (see LeanRowFacts.decided_apart). */
  decidedApart: boolean;
  written: LoggedEvent[];
}

const DECISIONS: readonly TxStatus[] = ['committing', 'aborting', 'preparing'];

export class MemoryLog implements TransactionLog, RecoveryLog {
  readonly #rows = new Map<string, Row>();
  readonly #keys = new Map<string, { id: string; requestHash: string }>();
  readonly audits: AuditEntry[] = [];
  /** Every transition the log was asked for, applied or not: a refused one never gets here. */
  readonly asked: TransitionRecord[] = [];

  async begin(r: BeginRecord): Promise<BeginOutcome> {
    if (r.idempotency) {
      const key = `${r.idempotency.tokenName}\u0000${r.idempotency.key}`;
      const seen = this.#keys.get(key);
      if (seen) return { created: false, existingId: seen.id, requestHash: seen.requestHash };
      this.#keys.set(key, { id: r.id, requestHash: r.idempotency.requestHash });
    }
    if (this.#rows.has(r.id)) throw new Error(`duplicate transaction ${r.id}`);
    this.#rows.set(r.id, {
      tx: {
        id: r.id,
        namespace: r.namespace,
        status: 'active',
        onePhase: false,
        deadline: r.deadline,
        submittedBy: r.submittedBy,
        error: null,
        createdAt: new Date(),
        decidedAt: null,
        completedAt: null,
        driver: r.driver,
        leaseUntil: r.deadline,
        attempts: 0,
        lastError: null,
        inDoubt: false,
        heuristic: false,
        branches: r.branches.map((b) => newBranch(b.index, b.resource, b.gid)),
        events: [],
      },
      branchCount: r.branches.length,
      interactive: r.interactive ?? false,
      timeoutMs: r.timeoutMs,
      decidedApart: false,
      written: [],
    });
    return { created: true };
  }

  async transition(r: TransitionRecord): Promise<void> {
    this.asked.push(r);
    if (r.insert) {
      // The begin record folded into the first change: a row there already (a tombstone) wins.
      if (this.#rows.has(r.id)) throw new StaleStateError(r.id, r.from, r.to);
      await this.begin(r.insert);
      this.#rows.get(r.id)!.tx.createdAt = new Date(r.insert.deadline.getTime() - r.insert.timeoutMs);
    }
    const row = this.#rows.get(r.id);
    const tx = row?.tx;
    if (!row || !tx || tx.status !== r.from || tx.driver !== r.driver || (r.branchesChecked !== undefined && row.branchCount > r.branchesChecked)) {
      throw new StaleStateError(r.id, r.from, r.to);
    }
    const now = new Date();
    const completes = FINAL_TX_STATUSES.includes(r.to);
    const decides = DECISIONS.includes(r.to) || (r.from === 'active' && completes);
    tx.status = r.to;
    tx.onePhase ||= r.onePhase ?? false;
    tx.heuristic ||= r.heuristic ?? false;
    tx.inDoubt &&= !completes;
    if (r.error !== undefined && r.error !== null) tx.error = r.error;
    if (decides) tx.decidedAt = now;
    if (completes) tx.completedAt = now;
    if (decides && !completes) row.decidedApart = true;
    for (const u of r.branches ?? []) {
      const b = tx.branches.find((x) => x.index === u.index);
      if (!b) continue;
      // As the log's merge: a field left unset (undefined or null) keeps what the branch had.
      b.status = u.status;
      if (u.xid != null) b.xid = u.xid;
      if (u.readOnly != null) b.readOnly = u.readOnly;
      if (u.results != null) b.results = u.results;
      if (u.error != null) b.error = u.error;
      if (u.heuristic != null) b.heuristic = u.heuristic;
    }
    if (!r.event.derivable) row.written.push({ at: now, kind: r.event.kind, actor: r.event.actor ?? null, detail: r.event.detail ?? {} });
  }

  async load(id: string): Promise<LoggedTransaction | null> {
    const row = this.#rows.get(id);
    if (!row) return null;
    const tx = structuredClone(row.tx);
    tx.events = withHappyPathEvents(
      {
        status: tx.status,
        submitted_by: tx.submittedBy,
        created_at: tx.createdAt,
        decided_at: tx.decidedAt,
        completed_at: tx.completedAt,
        one_phase: tx.onePhase,
        interactive: row.interactive,
        timeout_ms: row.timeoutMs,
        resources: tx.branches.map((b) => b.resource),
        decided_apart: row.decidedApart,
      },
      structuredClone(row.written),
    );
    return tx;
  }

  async joinBranch(r: JoinRecord): Promise<JoinedBranchRecord | null> {
    const row = this.#rows.get(r.id);
    if (!row?.interactive || row.tx.status !== 'active' || row.tx.deadline.getTime() <= Date.now()) return null;
    const existing = row.tx.branches.find((b) => b.resource === r.resource);
    if (existing) return { index: existing.index, gid: existing.gid, deadline: row.tx.deadline, created: false };
    const index = row.branchCount++;
    row.tx.branches.push(newBranch(index, r.resource, `${r.gidPrefix}${index}`));
    row.written.push({ at: new Date(), kind: 'branch_joined', actor: r.actor, detail: { resource: r.resource, index } });
    return { index, gid: `${r.gidPrefix}${index}`, deadline: row.tx.deadline, created: true };
  }

  async accessOf(id: string): Promise<{ resources: string[]; owner: string | null } | null> {
    const tx = this.#rows.get(id)?.tx;
    return tx ? { resources: tx.branches.map((b) => b.resource), owner: tx.submittedBy } : null;
  }

  async appendEvent(id: string, kind: string, actor: string | null, detail: Record<string, unknown>): Promise<void> {
    const row = this.#rows.get(id);
    if (!row) throw new Error(`no transaction ${id} for event ${kind}`);
    row.written.push({ at: new Date(), kind, actor, detail });
  }

  async acquire(id: string, driver: string, leaseMs: number, options: { takeOverUndecided?: boolean } = {}): Promise<LoggedTransaction | null> {
    const tx = this.#rows.get(id)?.tx;
    if (!tx || isFinal(tx.status)) return null;
    const free = tx.driver === null || tx.driver === driver || (tx.leaseUntil !== null && tx.leaseUntil.getTime() < Date.now());
    if (!free && !(options.takeOverUndecided && tx.status === 'active')) return null;
    tx.driver = driver;
    tx.leaseUntil = new Date(Date.now() + leaseMs);
    return this.load(id);
  }

  async release(id: string, driver: string): Promise<void> {
    const tx = this.#rows.get(id)?.tx;
    if (tx?.driver === driver) {
      tx.driver = null;
      tx.leaseUntil = null;
    }
  }

  async recordFailedAttempt(id: string, error: unknown, inDoubtAfter: number, settled: readonly SettledBranch[] = []): Promise<boolean> {
    const row = this.#rows.get(id);
    if (!row || isFinal(row.tx.status)) return false;
    for (const s of settled) {
      const b = row.tx.branches.find((x) => x.index === s.index);
      if (b && (b.status === 'prepared' || b.status === 'active')) b.status = s.status;
    }
    const before = row.tx.inDoubt;
    row.tx.attempts++;
    row.tx.lastError = error;
    row.tx.inDoubt ||= row.tx.attempts >= inDoubtAfter;
    if (row.tx.inDoubt && !before) row.written.push({ at: new Date(), kind: 'in_doubt', actor: null, detail: { attempts: row.tx.attempts, error } });
    return row.tx.inDoubt;
  }

  async flagOverdue(namespace: string, olderThanMs: number): Promise<number> {
    let flagged = 0;
    for (const row of this.#rows.values()) {
      const tx = row.tx;
      if (tx.namespace !== namespace || (tx.status !== 'committing' && tx.status !== 'aborting') || tx.inDoubt) continue;
      if (tx.decidedAt === null || tx.decidedAt.getTime() >= Date.now() - olderThanMs) continue;
      tx.inDoubt = true;
      row.written.push({
        at: new Date(),
        kind: 'in_doubt',
        actor: null,
        detail: { attempts: tx.attempts, error: tx.lastError, unfinishedSince: tx.decidedAt },
      });
      flagged++;
    }
    return flagged;
  }

  async unattended(namespace: string, limit: number): Promise<{ id: string; status: TxStatus; deadline: Date }[]> {
    return [...this.#rows.values()]
      .map((r) => r.tx)
      .filter((tx) => tx.namespace === namespace && !isFinal(tx.status) && (tx.leaseUntil === null || tx.leaseUntil.getTime() < Date.now()))
      .sort((a, b) => a.deadline.getTime() - b.deadline.getTime())
      .slice(0, limit)
      .map((tx) => ({ id: tx.id, status: tx.status, deadline: tx.deadline }));
  }

  async waitingOn(namespace: string, resource: string, after: string | null, limit: number): Promise<string[]> {
    return [...this.#rows.values()]
      .map((r) => r.tx)
      .filter(
        (tx) =>
          tx.namespace === namespace &&
          (tx.status === 'committing' || tx.status === 'aborting') &&
          (tx.leaseUntil === null || tx.leaseUntil.getTime() < Date.now()) &&
          (after === null || tx.id > after) &&
          tx.branches.some((b) => b.resource === resource),
      )
      .map((tx) => tx.id)
      .sort()
      .slice(0, limit);
  }

  async abandon(r: AbandonedRecord): Promise<'created' | TxStatus> {
    const seen = this.#rows.get(r.id);
    if (seen) return seen.tx.status;
    await this.begin({ id: r.id, namespace: r.namespace, deadline: r.deadline, submittedBy: null, driver: r.driver, branches: r.branches, timeoutMs: 0 });
    const row = this.#rows.get(r.id)!;
    const now = new Date();
    Object.assign(row.tx, { status: 'aborted', error: r.reason, decidedAt: now, completedAt: now });
    for (const b of row.tx.branches) b.status = 'aborted';
    row.written.push({ at: now, kind: 'aborted', actor: null, detail: { outcome: 'aborted', by: 'recovery', reason: r.reason } });
    return 'created';
  }

  async statuses(ids: string[]): Promise<Map<string, { status: TxStatus; attended: boolean }>> {
    const out = new Map<string, { status: TxStatus; attended: boolean }>();
    for (const id of ids) {
      const tx = this.#rows.get(id)?.tx;
      if (tx) out.set(id, { status: tx.status, attended: tx.driver !== null && tx.leaseUntil !== null && tx.leaseUntil.getTime() >= Date.now() });
    }
    return out;
  }

  async audit(entry: AuditEntry): Promise<void> {
    this.audits.push(entry);
  }

  /** Time passes for one transaction: its deadline, and the lease its driver took until then, are over. */
  expire(id: string): void {
    const tx = this.#rows.get(id)?.tx;
    if (!tx) throw new Error(`no transaction ${id}`);
    tx.deadline = new Date(Date.now() - 1);
    if (tx.leaseUntil !== null) tx.leaseUntil = new Date(Date.now() - 1);
  }
}

function newBranch(index: number, resource: string, gid: string): LoggedBranch {
  return { index, resource, gid, status: 'active', xid: null, readOnly: false, results: null, error: null, heuristic: null, lastError: null };
}
