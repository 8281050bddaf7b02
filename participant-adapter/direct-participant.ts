import pg from 'pg';
import { Branch } from './branch.ts';
import { CoalescedQueries } from './coalesced-queries.ts';
import { ParticipantError, toParticipantError } from './errors.ts';
import { gidLiteral } from './gid.ts';
import type { OpenBranchOptions, Participant, ParticipantHealth, PreparedBranchInfo, PreparedBranchState, PreparedSlots, XactStatus } from './participant.ts';
import { ROLE_POWERS_SQL, rolePowersOf, type RolePowers } from './role-powers.ts';
import { sendQuery } from './sent-query.ts';
import { sessionConnection } from './session-settings.ts';
import { StatementNames } from './statement-names.ts';

export interface DirectParticipantOptions {
  /** The resource name clients use. */
  name: string;
  /** The database to open a pool on (pipeline mode: a branch's statements and PREPARE travel together)… */
  connectionString?: string;
  /** …or a pool the caller owns (a service's own, for the participant router); close() leaves it open. */
  pool?: pg.Pool;
  /** Pool size; each open branch pins one connection until it is prepared or finished. */
  maxConnections?: number;
  /** How long the pool keeps an idle connection (default 30 s); 0: until close(). Unused with `pool`. */
  idleTimeoutMs?: number;
  /** Bound on connecting and on each administrative statement (commit prepared, listings, health). */
  operationTimeoutMs?: number;
  /** Called for errors on idle pooled connections, which would otherwise crash the process. */
  onIdleError?: (err: Error) => void;
  /** application_name of the pool's sessions (shown in pg_stat_activity). */
  applicationName?: string;
}

/** One Postgres database as a 2PC participant, on a pool. The only place that speaks participant 2PC SQL. */
export class DirectParticipant implements Participant {
  readonly name: string;
  readonly kind = 'postgres';
  readonly onePhase = true;
  readonly #pool: pg.Pool;
  readonly #ownsPool: boolean;
  readonly #timeoutMs: number;
  /** One naming for the whole pool: node-postgres refuses a name reused for other text on a connection. */
  readonly #names = new StatementNames();
  /** COMMIT/ROLLBACK PREPARED issued together share a connection and a write; null when the pool is not pipelined. */
  readonly #phaseTwo: CoalescedQueries | null;

  constructor(options: DirectParticipantOptions) {
    this.name = options.name;
    this.#timeoutMs = options.operationTimeoutMs ?? 5_000;
    if (!options.pool === !options.connectionString) throw new Error('DirectParticipant needs exactly one of connectionString and pool');
    this.#ownsPool = !options.pool;
    this.#pool =
      options.pool ??
      new pg.Pool({
        // The session settings the branches and administrative queries rely on are fixed at startup,
        // so a role default changed behind the coordinator's back cannot break them.
        ...sessionConnection(options.connectionString!),
        max: options.maxConnections ?? 20,
        connectionTimeoutMillis: this.#timeoutMs,
        idleTimeoutMillis: options.idleTimeoutMs ?? 30_000,
        keepAlive: true,
        application_name: options.applicationName ?? 'tpc-coordinator',
        pipeline: true,
      } as pg.PoolConfig);
    if (this.#ownsPool) this.#pool.on('error', (err) => options.onIdleError?.(err));
    // pg-pool drops its own 'error' listener when it hands a connection out; a fatal error read in
    // the same packet as "ready for query" would then be emitted with no listener and kill the
    // process. Every connection keeps this one for life; the error still fails its queries.
    if (this.#ownsPool) this.#pool.on('connect', (client) => client.on('error', () => {}));
    // On a pool not in pipeline mode the queries would wait for each other's answers, one round trip each.
    const pipelined = this.#ownsPool || (this.#pool as unknown as { options?: { pipeline?: boolean } }).options?.pipeline === true;
    this.#phaseTwo = pipelined ? new CoalescedQueries({ connect: () => this.#connect(), timeoutMs: this.#timeoutMs }) : null;
  }

  /** Connections handed out and not yet returned: a leak check for tests and metrics. */
  get connectionsInUse(): number {
    return this.#pool.totalCount - this.#pool.idleCount;
  }

  openBranch(options: OpenBranchOptions): Promise<Branch> {
    return this.#connect(options.signal).then((client) => new Branch(this.name, client, options.statementTimeoutMs, this.#names));
  }

  /** COMMIT PREPARED from any session. 'not-found' when no such gid is prepared (already finished, or never prepared). */
  commitPrepared(gid: string): Promise<'committed' | 'not-found'> {
    return this.#finishPrepared('COMMIT PREPARED', gid, 'committed');
  }

  rollbackPrepared(gid: string): Promise<'rolled-back' | 'not-found'> {
    return this.#finishPrepared('ROLLBACK PREPARED', gid, 'rolled-back');
  }

  /** Prepared transactions of this database whose gid starts with `prefix`. */
  async listPrepared(prefix: string): Promise<PreparedBranchInfo[]> {
    const r = await this.#admin(
      'SELECT gid, prepared, owner, database FROM pg_catalog.pg_prepared_xacts WHERE database = pg_catalog.current_database() AND pg_catalog.starts_with(gid, $1) ORDER BY prepared',
      [prefix],
      'listing prepared transactions',
    );
    return r.rows.map((row) => ({
      gid: row.gid as string,
      preparedAt: row.prepared as Date,
      owner: row.owner as string,
      database: row.database as string,
    }));
  }

  /** The live state of one gid: prepared since when, and how many locks it holds (null: not prepared). */
  async inspectPrepared(gid: string, options: { locks?: boolean } = {}): Promise<PreparedBranchState | null> {
    const withLocks = options.locks ?? true;
    const r = await this.#admin(
      // A prepared transaction's locks have no pid; they share the virtual transaction of its xid lock.
      // pg_prepared_xacts gives a 32-bit xid; pg_xact_status wants the 64-bit one. Its epoch is that of
      // the snapshot's xmax, adjusted by one when the two lie on either side of a wraparound: a live
      // xid is within 2^31 of xmax, on either side (xmax is the latest completed xid + 1, so a
      // prepared, still running xid may be above it).
      `SELECT p.prepared, ${
        withLocks
          ? `(
         SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks l WHERE l.pid IS NULL AND l.virtualtransaction = (
           SELECT x.virtualtransaction FROM pg_catalog.pg_locks x
           WHERE x.pid IS NULL AND x.locktype = 'transactionid' AND x.transactionid = p.transaction LIMIT 1))::pg_catalog.int4`
          : 'NULL::pg_catalog.int4'
      } AS locks,
         (((s.xmax >> 32) + CASE
             WHEN p.transaction::pg_catalog.text::pg_catalog.int8 - (s.xmax & 4294967295) > 2147483648 THEN -1
             WHEN p.transaction::pg_catalog.text::pg_catalog.int8 - (s.xmax & 4294967295) < -2147483648 THEN 1
             ELSE 0 END) << 32 | p.transaction::pg_catalog.text::pg_catalog.int8)::pg_catalog.text AS xid
       FROM pg_catalog.pg_prepared_xacts p,
         (SELECT pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::pg_catalog.text::pg_catalog.int8 AS xmax) s
       WHERE p.gid = $1 AND p.database = pg_catalog.current_database()`,
      [gid],
      'inspecting a prepared transaction',
      withLocks ? 'tpc_admin_inspect_locks' : 'tpc_admin_inspect',
    );
    const row = r.rows[0];
    return row ? { preparedAt: row.prepared as Date, locks: row.locks as number | null, xid: row.xid as string } : null;
  }

  /** The fate of a transaction id: how a branch that is no longer prepared ended. */
  async xactStatus(xid: string): Promise<XactStatus> {
    if (!/^\d{1,20}$/.test(xid)) throw new ParticipantError('invalid_xid', `bad xid ${xid}`, { retryable: false, resource: this.name });
    const r = await this.#admin(
      'SELECT pg_catalog.pg_xact_status($1::pg_catalog.xid8) AS status',
      [xid],
      'looking up a transaction status',
      'tpc_admin_xact_status',
    );
    // NULL: the xid is too old for the commit log to remember.
    return (r.rows[0]?.status as XactStatus | null) ?? 'unknown';
  }

  async health(): Promise<ParticipantHealth> {
    try {
      const r = await this.#admin(
        "SELECT pg_catalog.current_setting('server_version') AS version, pg_catalog.current_setting('max_prepared_transactions')::pg_catalog.int4 AS max_prepared",
        [],
        'health check',
      );
      const max = r.rows[0]!.max_prepared as number;
      return {
        resource: this.name,
        reachable: true,
        usable: max > 0,
        serverVersion: r.rows[0]!.version as string,
        maxPreparedTransactions: max,
        message:
          max > 0
            ? null
            : `max_prepared_transactions is 0 on resource "${this.name}", so PREPARE TRANSACTION fails there: ` +
              'start its server with max_prepared_transactions set (e.g. -c max_prepared_transactions=100, or ALTER SYSTEM and a restart)',
      };
    } catch (err) {
      return {
        resource: this.name,
        reachable: false,
        usable: false,
        serverVersion: null,
        maxPreparedTransactions: null,
        message: err instanceof Error ? err.message : String(err),
      };
    }
  }

  /**
   * The role this resource's connections run as, and its powers beyond its own database
   * (superuser, CREATEROLE, server programs and files). Outside the Participant interface: only
   * a direct connection can ask; a participant router's role is out of the coordinator's reach.
   * Throws (a ParticipantError) when the database cannot be reached.
   */
  async roleReport(): Promise<RolePowers> {
    const r = await this.#admin(ROLE_POWERS_SQL, [], "reading the role's powers");
    return rolePowersOf(r.rows[0] as Record<string, unknown>);
  }

  /** max_prepared_transactions and every gid prepared on the cluster (pg_prepared_xacts spans its databases). */
  async preparedSlots(): Promise<PreparedSlots> {
    const r = await this.#admin(
      "SELECT pg_catalog.current_setting('max_prepared_transactions')::pg_catalog.int4 AS max, " +
        "coalesce((SELECT pg_catalog.array_agg(gid) FROM pg_catalog.pg_prepared_xacts), '{}') AS gids",
      [],
      'reading prepared-transaction slots',
    );
    return { maxPrepared: r.rows[0]!.max as number, preparedGids: r.rows[0]!.gids as string[] };
  }

  async close(): Promise<void> {
    if (this.#ownsPool) await this.#pool.end();
  }

  #finishPrepared<T extends string>(command: string, gid: string, done: T): Promise<T | 'not-found'> {
    let sent: Promise<unknown>;
    try {
      const text = `${command} ${gidLiteral(gid)}`;
      sent = this.#phaseTwo ? this.#phaseTwo.query(text) : this.#admin(text, undefined, command);
    } catch (err) {
      sent = Promise.reject(err);
    }
    // One reaction per branch in phase 2, not an async function's and a catch's (issue 13).
    return sent.then(
      () => done,
      (err: unknown) => {
        const mapped = toParticipantError(err, this.name, command);
        // 42704 undefined_object: "prepared transaction with identifier … does not exist".
        if (mapped.sqlState === '42704') return 'not-found' as const;
        throw mapped;
      },
    );
  }

  #connect(signal?: AbortSignal): Promise<pg.PoolClient> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    // An idle connection is handed over without waiting: no listener on the signal then (an add
    // and a remove on Node's EventTarget per branch, issue 13); one stopped meanwhile goes back.
    const waits = signal !== undefined && !(this.#pool.idleCount > 0 && this.#pool.waitingCount === 0);
    return new Promise<pg.PoolClient>((resolve, reject) => {
      const onAbort = () => reject(signal!.reason);
      if (waits) signal.addEventListener('abort', onAbort, { once: true });
      // The callback form: pg-pool makes no promise of its own for it (one less per branch).
      this.#pool.connect((err, client) => {
        if (waits) signal.removeEventListener('abort', onAbort);
        if (err || !client) {
          reject(toParticipantError(err ?? new Error('no connection'), this.name, 'connecting'));
          return;
        }
        // Exactly one path owns the connection once it arrives: a stop that came first (and
        // rejected already) gets it back to the pool, never leaked and never released twice.
        if (signal?.aborted) {
          client.release();
          reject(signal.reason);
          return;
        }
        resolve(client);
      });
    });
  }

  /**
   * `name`: sent as a named prepared statement, parsed and planned once per connection (the
   * session reset keeps it and counts it as ours). For the lookups recovery and every interactive
   * commit make per branch: planning pg_prepared_xacts' join cost the bank 0.2 ms, running it 0.05.
   */
  async #admin(text: string, values: unknown[] | undefined, what: string, name?: string): Promise<pg.QueryResult> {
    const client = await this.#connect();
    const onError = () => {}; // the query below rejects; this keeps the event from crashing us
    client.on('error', onError);
    let broken = false;
    try {
      return await sendQuery(client, { name, text, values, timeoutMs: this.#timeoutMs });
    } catch (err) {
      const mapped = toParticipantError(err, this.name, what);
      broken = !mapped.sqlState;
      throw mapped;
    } finally {
      client.off('error', onError);
      client.release(broken || undefined);
    }
  }
}
