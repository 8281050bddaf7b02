import type { Kysely } from 'kysely';
import type pg from 'pg';
import type { EmbeddedCoordinator } from './embedded.ts';
import { pinnedKysely } from '../../participant-adapter/pinned-kysely.ts';

export interface ClientOptions {
  /** The coordinator's base URL, e.g. http://127.0.0.1:8080 (or give `coordinator` instead). */
  url?: string;
  /** An embedded coordinator (createCoordinator): no HTTP hop, same log and recovery. */
  coordinator?: EmbeddedCoordinator;
  /** Bearer token with the `submit` scope (none when the coordinator runs without tokens). */
  token?: string;
  /** This service's own pools, by the resource names the coordinator knows them by. */
  resources: Record<string, pg.Pool>;
}

export interface TransactionOptions {
  /** Deadline of the whole transaction (default 10 s); statements are bounded by it too. */
  timeoutMs?: number;
  /** Run the callback again on a serialization failure or deadlock (SQLSTATE 40001/40P01); off by default. */
  retries?: number;
}

/** The coordinator's answer, or a local one when every branch only read. */
export interface Outcome {
  id: string | null;
  status: string;
  [key: string]: unknown;
}

export interface GlobalTransaction {
  /** A Kysely handle inside an open transaction on `resource`, opened on first use. */
  branch<DB>(resource: string): Promise<Kysely<DB>>;
}

/** The transaction did not commit: every branch was rolled back. `outcome` is the coordinator's answer. */
export class TransactionAbortedError extends Error {
  override readonly name = 'TransactionAbortedError';
  constructor(message: string, readonly outcome: Outcome | null, options?: { cause?: unknown }) {
    super(message, options);
  }
}

interface OpenBranch {
  resource: string;
  client: pg.PoolClient;
  db: Kysely<unknown>;
}

const RETRYABLE = new Set(['40001', '40P01']);

/**
 * The SDK: ordinary code spans several databases atomically. The callback works through Kysely
 * handles on open transactions; when it returns, branches that only read are committed locally,
 * the writing ones are registered with the coordinator, prepared under their gids and committed
 * by its decision. A thrown error rolls every branch back and is rethrown.
 */
export function createClient(options: ClientOptions) {
  if (!options.url === !options.coordinator) throw new Error('createClient needs exactly one of url and coordinator');
  const call = async (method: string, path: string, body?: unknown) => {
    if (options.coordinator) return options.coordinator.call(method, path, body);
    const res = await fetch(new URL(path, options.url), {
      method,
      headers: { 'content-type': 'application/json', ...(options.token ? { authorization: `Bearer ${options.token}` } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(60_000),
    });
    return { status: res.status, body: (await res.json().catch(() => null)) as Record<string, any> | null };
  };

  async function attempt<T>(fn: (tx: GlobalTransaction) => Promise<T>, timeoutMs: number): Promise<{ result: T; outcome: Outcome }> {
    const open = new Map<string, OpenBranch>();
    const finish = async (b: OpenBranch, sql: string) => {
      try { await b.client.query(sql); b.client.release(); } catch (err) { b.client.release(err as Error); }
    };
    const tx: GlobalTransaction = {
      async branch<DB>(resource: string) {
        let b = open.get(resource);
        if (!b) {
          const pool = options.resources[resource];
          if (!pool) throw new Error(`no pool for resource "${resource}" was given to createClient`);
          const client = await pool.connect();
          await client.query(`BEGIN; SET LOCAL statement_timeout = ${Math.max(1, Math.ceil(timeoutMs))}`);
          b = { resource, client, db: pinnedKysely(client) };
          open.set(resource, b);
        }
        return b.db as Kysely<DB>;
      },
    };
    let result: T;
    try {
      result = await fn(tx);
    } catch (err) {
      await Promise.all([...open.values()].map((b) => finish(b, 'ROLLBACK')));
      throw err;
    }
    // Read-only branches take no part: commit them here and now.
    const writers: OpenBranch[] = [];
    for (const b of open.values()) {
      const r = await b.client.query('SELECT pg_current_xact_id_if_assigned()::text AS xid');
      if (r.rows[0]?.xid === null) await finish(b, 'COMMIT');
      else writers.push(b);
    }
    if (writers.length === 0) return { result, outcome: { id: null, status: 'committed' } };

    const begun = await call('POST', '/v1/transactions', { interactive: true, branches: writers.map((b) => ({ resource: b.resource })), timeoutMs })
      .catch((err: unknown) => ({ status: 0, body: { detail: String(err) } as Record<string, any> }));
    if (begun.status !== 201 || !begun.body) {
      await Promise.all(writers.map((b) => finish(b, 'ROLLBACK')));
      throw new TransactionAbortedError(`the coordinator did not begin the transaction: ${begun.body?.detail ?? begun.status}`, null);
    }
    const id = begun.body.id as string;
    const gids = new Map((begun.body.branches as { resource: string; gid: string }[]).map((b) => [b.resource, b.gid]));
    const prepared = await Promise.allSettled(writers.map(async (b) => {
      const gid = gids.get(b.resource)!;
      if (!/^[A-Za-z0-9_\-:.]{1,200}$/.test(gid)) throw new Error(`unexpected gid ${gid}`);
      const r = await b.client.query(`PREPARE TRANSACTION '${gid}'`);
      b.client.release();
      if (r.command !== 'PREPARE') throw new Error(`PREPARE on ${b.resource} was rolled back by the server`);
    }));
    const failed = prepared.find((p) => p.status === 'rejected');
    if (failed) {
      for (const [i, p] of prepared.entries()) if (p.status === 'rejected') writers[i]!.client.release(true);
      const aborted = await call('POST', `/v1/transactions/${id}/abort`).catch(() => null);
      throw new TransactionAbortedError('a branch could not be prepared; the transaction is aborted', (aborted?.body as Outcome) ?? null, { cause: (failed as PromiseRejectedResult).reason });
    }
    const committed = await call('POST', `/v1/transactions/${id}/commit`);
    if (committed.status === 200 || committed.status === 202) return { result, outcome: committed.body as Outcome };
    throw new TransactionAbortedError(`the transaction did not commit: ${committed.body?.error?.message ?? committed.body?.refusal?.message ?? committed.status}`, committed.body as Outcome);
  }

  return {
    /** Runs `fn` as one global transaction; returns its result and the outcome. */
    async transaction<T>(fn: (tx: GlobalTransaction) => Promise<T>, opts: TransactionOptions = {}): Promise<{ result: T; outcome: Outcome }> {
      const timeoutMs = opts.timeoutMs ?? 10_000;
      for (let tries = 0; ; tries++) {
        try {
          return await attempt(fn, timeoutMs);
        } catch (err) {
          const code = (err as { code?: string }).code;
          if (tries < (opts.retries ?? 0) && code && RETRYABLE.has(code)) continue;
          throw err;
        }
      }
    },
  };
}

export type TpcClient = ReturnType<typeof createClient>;
