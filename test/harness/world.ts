import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { pino, type Logger } from 'pino';
import { inject } from 'vitest';
import { loadConfig, type Config } from '../../coordinator/config/load-config.ts';
import { ensureLoginRole, ensureOwnedDatabase } from '../../coordinator/embedded/database-roles.ts';
import { startService, type RunningService } from '../../coordinator/service.ts';

export const BANKS = ['bank_a', 'bank_b', 'bank_c'] as const;
export type Bank = (typeof BANKS)[number];

export const TOKENS = {
  full: 'full-token-0123456789abcdef',
  reader: 'reader-token-0123456789abcdef',
  limited: 'limited-token-0123456789abcdef',
} as const;

const TOKENS_JSON = JSON.stringify([
  { name: 'full', token: TOKENS.full, scopes: ['submit', 'read', 'operate'], resources: ['*'] },
  { name: 'reader', token: TOKENS.reader, scopes: ['read'], resources: ['*'] },
  { name: 'limited', token: TOKENS.limited, scopes: ['submit', 'read'], resources: ['bank_a'] },
]);

export interface HttpAnswer {
  status: number;
  headers: Headers;
  body: any;
}

export interface World {
  service: RunningService;
  config: Config;
  namespace: string;
  /** Direct connections to every database, as the superuser: the tests' oracle, to assert on the databases themselves. */
  db: Record<Bank | 'log', pg.Pool>;
  /** What the coordinator is given: each database's own login role (its owner), never the superuser. */
  urls: Record<Bank | 'log', string>;
  request(
    method: string,
    path: string,
    body?: unknown,
    options?: { token?: string | null; headers?: Record<string, string>; raw?: string },
  ): Promise<HttpAnswer>;
  submit(body: unknown, options?: { token?: string; headers?: Record<string, string> }): Promise<HttpAnswer>;
  balance(bank: Bank, id: number): Promise<number>;
  /** Prepared transactions of this world's namespace, on every participant database. */
  preparedGids(): Promise<string[]>;
  /** Fails the test if the world leaks prepared transactions or connections. */
  close(): Promise<void>;
}

/** The superuser's URL of a database on one of the suite's clusters: for setup and assertions, never for a coordinator. */
export function adminUrl(cluster: { host: string; port: number }, name: string): string {
  return `postgres://postgres@${cluster.host}:${cluster.port}/${name}`;
}

/**
 * A database owned by a login role of the same name, which only that role (and the superuser)
 * may connect to; returns the role's URL. Tests run the coordinator as a careful deployment does:
 * on a role with no power beyond its own database (roles are cluster-wide, so the name carries
 * the test's tag). The coordinator refuses a superuser resource without TPC_PRIVILEGED_RESOURCES.
 */
export async function createDatabase(cluster: { host: string; port: number }, name: string): Promise<string> {
  const admin = new pg.Client({ connectionString: adminUrl(cluster, 'postgres') });
  await admin.connect();
  try {
    await ensureLoginRole(admin, name);
    await ensureOwnedDatabase(admin, name, name);
  } finally {
    await admin.end();
  }
  return `postgres://${name}@${cluster.host}:${cluster.port}/${name}`;
}

export const ACCOUNTS_SQL = `
  CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL CHECK (balance >= 0));
  INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, 10) g;
`;

export interface WorldOptions {
  env?: Record<string, string>;
  /** More participants (name → url), e.g. on a cluster the test stops and crashes. */
  extraResources?: Record<string, string>;
  /** A log database elsewhere (a cluster the test can stop). */
  logUrl?: string;
  /** The service's logger (default: silent, or TEST_LOG_LEVEL), e.g. one writing to an array a test asserts on. */
  logger?: Logger;
  /** Runs once the databases exist, before the coordinator starts; returns environment overrides. */
  beforeStart?: (dbs: Databases) => Promise<Record<string, string>>;
}

/** The databases of one test, without a coordinator: for tests that run coordinators as processes. */
export interface Databases {
  tag: string;
  namespace: string;
  db: Record<Bank | 'log', pg.Pool>;
  urls: Record<Bank | 'log', string>;
  /** The environment a coordinator for these databases starts from. */
  env: Record<string, string>;
  balance(bank: Bank, id: number): Promise<number>;
  preparedGids(): Promise<string[]>;
  end(): Promise<void>;
}

export async function createDatabases(options: WorldOptions = {}): Promise<Databases> {
  const tag = randomBytes(5).toString('hex');
  const a = inject('clusterA');
  const b = inject('clusterB');
  const home = { log: a, bank_a: a, bank_b: a, bank_c: b };
  const names = { log: `w${tag}_log`, bank_a: `w${tag}_bank_a`, bank_b: `w${tag}_bank_b`, bank_c: `w${tag}_bank_c` };
  const urls = {
    log: options.logUrl ?? (await createDatabase(a, names.log)),
    bank_a: await createDatabase(a, names.bank_a),
    bank_b: await createDatabase(a, names.bank_b),
    bank_c: await createDatabase(b, names.bank_c),
  };
  // The oracle connects as the superuser; a log given by the test (options.logUrl) is reached as given.
  const admin = (k: Bank | 'log') => (k === 'log' && options.logUrl ? options.logUrl : adminUrl(home[k], names[k]));
  const db = Object.fromEntries(Object.keys(urls).map((k) => [k, new pg.Pool({ connectionString: admin(k as Bank | 'log'), max: 4 })])) as World['db'];
  for (const pool of Object.values(db)) pool.on('error', () => {});
  // Created by each bank's own role, so it owns its table, as an application's role would.
  await Promise.all(
    BANKS.map(async (bank) => {
      const owner = new pg.Client({ connectionString: urls[bank] });
      await owner.connect();
      try {
        await owner.query(ACCOUNTS_SQL);
      } finally {
        await owner.end();
      }
    }),
  );
  const namespace = `t${tag}`;
  return {
    tag,
    namespace,
    db,
    urls,
    env: {
      DATABASE_URL: urls.log,
      REDIS_URL: inject('redisUrl'),
      TPC_RESOURCES: JSON.stringify({ bank_a: urls.bank_a, bank_b: urls.bank_b, bank_c: urls.bank_c, ...options.extraResources }),
      PORT: '0',
      HOST: '127.0.0.1',
      TPC_NAMESPACE: namespace,
      TPC_API_TOKENS: TOKENS_JSON,
      LOG_LEVEL: 'silent',
      ...options.env,
    },
    async balance(bank, id) {
      const r = await db[bank].query<{ balance: number }>('SELECT balance FROM accounts WHERE id = $1', [id]);
      return r.rows[0]!.balance;
    },
    async preparedGids() {
      const rows = await Promise.all(
        BANKS.map((bank) => db[bank].query<{ gid: string }>('SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, $1)', [`tpc:${namespace}:`])),
      );
      return [...new Set(rows.flatMap((r) => r.rows.map((x) => x.gid)))];
    },
    async end() {
      await Promise.allSettled(Object.values(db).map((p) => p.end()));
    },
  };
}

/** One HTTP call to a coordinator, with the `full` token unless told otherwise; the body parsed when it is JSON. */
export async function httpRequest(
  baseUrl: string,
  method: string,
  path: string,
  body?: unknown,
  o: { token?: string | null; headers?: Record<string, string>; raw?: string } = {},
): Promise<HttpAnswer> {
  const token = o.token === undefined ? TOKENS.full : o.token;
  const res = await fetch(baseUrl + path, {
    method,
    headers: {
      ...(body !== undefined || o.raw !== undefined ? { 'content-type': 'application/json' } : {}),
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...o.headers,
    },
    body: o.raw ?? (body === undefined ? undefined : JSON.stringify(body)),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON: keep the text */
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/**
 * A fresh world for one test: its own log database and three participant databases (two on one
 * cluster, so gids of one transaction share a cluster), its own namespace and queue prefix, and a
 * running coordinator on a free port.
 */
export async function createWorld(options: WorldOptions = {}): Promise<World> {
  const dbs = await createDatabases(options);
  const { db, urls, namespace, preparedGids } = dbs;
  const config = loadConfig({ ...dbs.env, ...(await options.beforeStart?.(dbs)) });
  const service = await startService(config, { logger: options.logger ?? pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }), queuePrefix: `q${dbs.tag}` });
  const request: World['request'] = (method, path, body, o = {}) => httpRequest(service.url, method, path, body, o);

  return {
    service,
    config,
    namespace,
    db,
    urls,
    request,
    submit: (body, o) => request('POST', '/v1/transactions', body, o),
    balance: dbs.balance,
    preparedGids,
    async close() {
      try {
        await service.engine.drain();
        // Background passes (reconciliation, health checks) borrow connections briefly; a leak stays.
        const inUse = () => [...service.participants].filter(([, p]) => p.connectionsInUse !== 0).map(([n, p]) => `${n}: ${p.connectionsInUse}`);
        for (let i = 0; i < 50 && inUse().length > 0; i++) await new Promise((r) => setTimeout(r, 100));
        const leaks = inUse();
        await service.close();
        if (leaks.length) throw new Error(`connections not returned to the pool: ${leaks.join(', ')}`);
        const left = await preparedGids();
        if (left.length) throw new Error(`prepared transactions left behind: ${left.join(', ')}`);
      } finally {
        await dbs.end();
      }
    },
  };
}

/** A transfer of `amount` from account `from` on one bank to account `to` on another, in the contract's shape. */
export function transfer(fromBank: Bank, toBank: Bank, amount: number, from = 1, to = 2, extra: Record<string, unknown> = {}) {
  return {
    branches: [
      {
        resource: fromBank,
        statements: [{ sql: 'UPDATE accounts SET balance = balance - $1 WHERE id = $2 AND balance >= $1', params: [amount, from], expect: { rowCount: 1 } }],
      },
      { resource: toBank, statements: [{ sql: 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', params: [amount, to] }] },
    ],
    timeoutMs: 10_000,
    ...extra,
  };
}

export interface StatementSpec {
  sql: string;
  params: unknown[];
}

/** A statement that keeps its branch busy for `seconds` (to hold a transaction open before its decision). */
export const pause = (seconds: number): StatementSpec => ({ sql: 'SELECT pg_sleep($1)', params: [seconds] });

/**
 * Moves `amount` on account `id` from one resource to another, with no expectation (so it always
 * commits when nothing fails); `before` runs first on the debited branch.
 */
export function move(from: string, to: string, amount: number, id = 1, options: { before?: StatementSpec[]; timeoutMs?: number } = {}) {
  return {
    branches: [
      { resource: from, statements: [...(options.before ?? []), { sql: 'UPDATE accounts SET balance = balance - $1 WHERE id = $2', params: [amount, id] }] },
      { resource: to, statements: [{ sql: 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', params: [amount, id] }] },
    ],
    timeoutMs: options.timeoutMs ?? 10_000,
  };
}

/** What a service does with an interactive branch: its own statement on its own connection, then PREPARE under the gid. */
export async function prepareOwnBranch(url: string, gid: string, sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query('BEGIN');
    await c.query(sql);
    await c.query(`PREPARE TRANSACTION '${gid}'`);
  } finally {
    await c.end();
  }
}
