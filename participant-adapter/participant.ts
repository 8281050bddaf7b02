import type { PrepareResult, StatementResult } from './branch.ts';

export interface OpenBranchOptions {
  /** Server-side bound on each statement (the time left until the transaction's deadline). */
  statementTimeoutMs: number;
  /** Aborts waiting for a connection or a reply (deadline passed, or a sibling branch failed). */
  signal?: AbortSignal;
}

export interface PreparedBranchInfo {
  gid: string;
  preparedAt: Date;
  owner: string;
  database: string;
}

/** A prepared branch as its database sees it now. */
export interface PreparedBranchState {
  preparedAt: Date;
  /** Locks the prepared transaction holds (rows, tables): what it blocks until decided; null when not asked for. */
  locks: number | null;
  /** The 64-bit transaction id, for pg_xact_status once the gid is gone. */
  xid: string;
}

export type XactStatus = 'committed' | 'aborted' | 'in progress' | 'unknown';

export interface ParticipantHealth {
  resource: string;
  reachable: boolean;
  usable: boolean;
  serverVersion: string | null;
  maxPreparedTransactions: number | null;
  message: string | null;
}

/** The prepared-transaction slots of a database's cluster, shared by every database on it. */
export interface PreparedSlots {
  /** max_prepared_transactions: a PREPARE beyond it fails with SQLSTATE 53200. */
  maxPrepared: number;
  /** Every gid prepared on the cluster now, whoever owns it and in whichever database. */
  preparedGids: string[];
}

export type BranchState = 'open' | 'prepared' | 'finished' | 'broken';

/** One open database transaction, from BEGIN to PREPARE (or a one-phase COMMIT, or ROLLBACK). */
export interface BranchSession {
  readonly resource: string;
  readonly state: BranchState;
  /** Runs one statement. Calls may be issued back to back without awaiting; they run in order. */
  run(sql: string, params?: readonly unknown[]): Promise<StatementResult>;
  /** The branch's transaction id, or null if it has written nothing. */
  xid(): Promise<string | null>;
  /** Prepares under `gid`; reports the xid (null: the branch wrote nothing). */
  prepare(gid: string): Promise<PrepareResult>;
  /** One-phase commit; false when the server rolled back instead. */
  commit(): Promise<boolean>;
  rollback(): Promise<void>;
  /** Ends whatever statement is running (deadline, or a sibling failed). */
  cancel(): Promise<void>;
  /** Gives back what the branch holds; an unfinished branch is rolled back by its database. */
  release(): void;
}

/**
 * One participant database, as the engine, recovery and the operator views see it. Implemented
 * by DirectParticipant (the coordinator holds a pool on the database) and HttpParticipant (the
 * database's own service runs the participant router and the coordinator talks to it over HTTP).
 */
export interface Participant {
  /** The resource name clients use. */
  readonly name: string;
  readonly kind: 'postgres' | 'http';
  /**
   * Whether a branch can stay open across the coordinator's log write, which the one-phase path
   * of a single-branch transaction needs. Over HTTP it cannot: a single branch is prepared too.
   */
  readonly onePhase: boolean;
  /** Branches or connections handed out and not yet given back: a leak check for tests. */
  readonly connectionsInUse: number;
  openBranch(options: OpenBranchOptions): Promise<BranchSession>;
  /** COMMIT PREPARED. 'not-found' when no such gid is prepared (already finished, or never prepared). */
  commitPrepared(gid: string): Promise<'committed' | 'not-found'>;
  rollbackPrepared(gid: string): Promise<'rolled-back' | 'not-found'>;
  /** Prepared transactions of this database whose gid starts with `prefix`, oldest first. */
  listPrepared(prefix: string): Promise<PreparedBranchInfo[]>;
  /**
   * The live state of one gid, or null when it is not prepared. `locks: false`: the caller needs
   * only whether it is prepared and its xid (a commit's check, a retried prepare), and the count of
   * its locks, a scan of pg_locks, is left out.
   */
  inspectPrepared(gid: string, options?: { locks?: boolean }): Promise<PreparedBranchState | null>;
  /** The fate of a transaction id: how a branch that is no longer prepared ended. */
  xactStatus(xid: string): Promise<XactStatus>;
  /** Never throws: an unreachable participant is reported as such. */
  health(): Promise<ParticipantHealth>;
  /**
   * The cluster's prepared-transaction slots and who holds them, for admission control; null when
   * they are not visible from here (behind a participant router, whose own service bounds them).
   */
  preparedSlots(): Promise<PreparedSlots | null>;
  close(): Promise<void>;
}
