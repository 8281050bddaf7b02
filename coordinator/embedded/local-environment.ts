import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { closeDatabaseToPublic, ensureLoginRole, ensureOwnedDatabase, moveOwnership } from './database-roles.ts';
import { readKeptPorts, writeKeptPorts } from './kept-ports.ts';
import { startPostgresCluster, type PostgresCluster } from './postgres-cluster.ts';
import { startRedisServer, type RedisServer } from './redis-server.ts';

/** The demo databases of the embedded default, each with an accounts table (ids 1..10, 1000 each). */
export const DEMO_BANKS = ['bank_a', 'bank_b', 'bank_c'] as const;
export const DEMO_ACCOUNTS = 10;
export const DEMO_BALANCE = 1000;
/** The log database, owned by a role of the same name (as each bank is by its own). */
export const LOG_DATABASE = 'tpc_log';
/** Where each role's password is kept in the data directory (JSON: role → password, mode 0600). */
export const ROLE_PASSWORDS_FILE = 'db-passwords';

/*
 * Prepared transactions the cluster can hold at once, across its three banks: each bank's pool
 * (TPC_RESOURCE_POOL_SIZE, 20) can have that many branches preparing, and prepared branches stay
 * while phase 2 runs or waits on a retry, and SDK branches (joined from other services) and
 * operators' leftovers add theirs: 3 × 20 = 60 in the steady state, with room above for a burst of
 * decided-but-unfinished transactions. A slot costs shared memory for its locks only; running out
 * fails PREPARE with 53200, which admission control is there to prevent.
 */
const MAX_PREPARED_TRANSACTIONS = 200;

const ACCOUNTS_SQL = `
  CREATE TABLE IF NOT EXISTS accounts (id int PRIMARY KEY, owner text NOT NULL, balance int NOT NULL CHECK (balance >= 0));
  INSERT INTO accounts SELECT g, 'customer ' || g, ${DEMO_BALANCE} FROM generate_series(1, ${DEMO_ACCOUNTS}) g ON CONFLICT (id) DO NOTHING;
`;

export interface LocalEnvironmentOptions {
  /** Where the cluster and the dev token live (TPC_DATA_DIR, default `.tpc` in the working directory). */
  dataDir: string;
  pgBinDir?: string;
  /** A Redis the user runs (REDIS_URL): then none is started. */
  redisUrl?: string;
  /** Tokens the user configured (TPC_API_TOKENS): then no dev token is made. */
  tokens?: string;
}

/** What `npm start` with nothing configured runs against, and how to stop it. */
export interface LocalEnvironment {
  readonly dataDir: string;
  /** DATABASE_URL, REDIS_URL, TPC_RESOURCES and TPC_API_TOKENS for the service. */
  readonly env: Record<string, string>;
  /** The dev token (full scopes, every resource); null when the user gave TPC_API_TOKENS. */
  readonly token: string | null;
  readonly resources: readonly string[];
  /** Each demo bank's URL for its own role (password included): what a newcomer points a pg.Pool at. */
  readonly bankUrls: Readonly<Record<string, string>>;
  /** The Redis it started; null when the user gave REDIS_URL. */
  readonly redisUrl: string | null;
  readonly cluster: PostgresCluster;
  stop(): Promise<void>;
}

/** Whether to start the embedded default: nothing says where the log and the resources are. */
export function wantsLocalEnvironment(env: Record<string, string | undefined>): boolean {
  return !env.DATABASE_URL && !env.TPC_RESOURCES && !env.TPC_RESOURCES_FILE;
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/**
 * Least privilege by construction: the log and each bank are owned by a login role of their own,
 * with a password, and no role may connect to a database it does not own (CONNECT is taken from
 * PUBLIC on every database of the cluster). The superuser stays with this setup, over the Unix
 * socket; nothing the coordinator runs connects as it. A data directory made by an earlier
 * version (everything owned by postgres, trust on loopback) is brought to the same state at every
 * start: each step is idempotent. Returns each database's URL for its own role.
 */
async function setUpDatabases(cluster: PostgresCluster, passwords: Readonly<Record<string, string>>): Promise<Record<string, string>> {
  const databases = [LOG_DATABASE, ...DEMO_BANKS];
  await withClient(cluster.url(), async (admin) => {
    for (const db of databases) {
      await ensureLoginRole(admin, db, passwords[db]);
      await ensureOwnedDatabase(admin, db, db);
    }
    const all = await admin.query<{ datname: string }>('SELECT datname FROM pg_catalog.pg_database WHERE datallowconn');
    for (const { datname } of all.rows) await closeDatabaseToPublic(admin, datname);
  });
  for (const db of databases) await withClient(cluster.url(db), (c) => moveOwnership(c, db));
  const urls = Object.fromEntries(databases.map((db) => [db, `postgres://${db}:${encodeURIComponent(passwords[db]!)}@${cluster.host}:${cluster.port}/${db}`]));
  // The accounts table is made by the bank's own role, so it owns it from the start.
  for (const bank of DEMO_BANKS) await withClient(urls[bank]!, (c) => c.query(ACCOUNTS_SQL));
  return urls;
}

/** A password per role, made once and kept in the data directory, readable by its owner only. */
async function rolePasswords(dataDir: string, roles: readonly string[]): Promise<Record<string, string>> {
  const file = join(dataDir, ROLE_PASSWORDS_FILE);
  let kept: Record<string, unknown> = {};
  if (existsSync(file)) {
    try {
      kept = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    } catch {
      kept = {};
    }
  }
  const passwords: Record<string, string> = {};
  let changed = false;
  for (const role of roles) {
    const p = kept[role];
    if (typeof p === 'string' && p.length >= 16) passwords[role] = p;
    else {
      passwords[role] = randomBytes(18).toString('base64url');
      changed = true;
    }
  }
  if (changed) await writeFile(file, `${JSON.stringify({ ...kept, ...passwords }, null, 2)}\n`, { mode: 0o600 });
  await chmod(file, 0o600);
  return passwords;
}

/** A token made once and kept in the data directory, so that a restart does not change it. */
async function devToken(dataDir: string): Promise<string> {
  const file = join(dataDir, 'dev-token');
  if (existsSync(file)) {
    const kept = (await readFile(file, 'utf8')).trim();
    if (kept.length >= 16) return kept;
  }
  const token = `dev-${randomBytes(18).toString('base64url')}`;
  await writeFile(file, `${token}\n`, { mode: 0o600 });
  return token;
}

/**
 * One process at a time per data directory. A cluster found running is taken over (stopped and
 * started again) when the process that started it is gone; while that process lives, taking it
 * over would pull the database from under a running coordinator, so the start is refused.
 */
async function claim(dataDir: string): Promise<void> {
  const file = join(dataDir, 'owner.pid');
  if (existsSync(file)) {
    const pid = Number((await readFile(file, 'utf8')).trim());
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
      throw new Error(`${dataDir} is in use by another start (pid ${pid}): stop it, or set TPC_DATA_DIR to another directory`);
    }
  }
  await writeFile(file, `${process.pid}\n`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Postgres refuses to run as root, so as root the cluster belongs to the postgres user, which must
 * be able to reach it. The data directory is opened for traversal (not reading: the dev token stays
 * private); if a parent is closed to that user (a clone under /root), the cluster is kept in
 * /var/tmp instead, under a name derived from the data directory so the next start finds it.
 */
async function clusterDir(dataDir: string): Promise<string> {
  const wanted = join(dataDir, 'postgres');
  if (process.getuid?.() !== 0) return wanted;
  await chmod(dataDir, 0o711);
  if (spawnSync('runuser', ['-u', 'postgres', '--', 'test', '-x', dataDir]).status === 0) return wanted;
  const elsewhere = join('/var/tmp', `tpc-${createHash('sha256').update(dataDir).digest('hex').slice(0, 12)}`);
  await mkdir(elsewhere, { recursive: true, mode: 0o711 });
  await chmod(elsewhere, 0o711);
  process.stderr.write(`the postgres user cannot reach ${dataDir}: its cluster is kept in ${elsewhere} instead\n`);
  return join(elsewhere, 'postgres');
}

/** A saved URL stops working when its server moves: say so, where the user sees it. */
function movedNotice(server: string, wanted: number | undefined, got: number): void {
  if (wanted === undefined || wanted === got) return;
  process.stderr.write(`${server}'s port of the last start (${wanted}) is taken by another program: it is on ${got} this time\n`);
}

/**
 * The embedded default: a Postgres cluster kept under the data directory (the log and the demo
 * banks), a Redis, each on the port of its last start when that is free, and a dev token. Reused
 * on the next start: the balances and the log survive, Redis starts empty (it only holds
 * reminders; reconciliation recreates them).
 */
export async function startLocalEnvironment(options: LocalEnvironmentOptions): Promise<LocalEnvironment> {
  const dataDir = resolve(options.dataDir);
  await mkdir(dataDir, { recursive: true });
  await claim(dataDir);
  // The ports of the last start are asked for again, so the URLs a user saved (a pg.Pool's, a
  // psql alias) keep working; one taken meanwhile by another program gets a new port instead.
  const kept = await readKeptPorts(dataDir);
  const cluster = await startPostgresCluster({
    dataDir: await clusterDir(dataDir),
    binDir: options.pgBinDir,
    maxPreparedTransactions: MAX_PREPARED_TRANSACTIONS,
    passwordAuth: true,
    port: kept.postgres,
  });
  movedNotice('Postgres', kept.postgres, cluster.port);
  let redis: RedisServer | undefined;
  try {
    const urls = await setUpDatabases(cluster, await rolePasswords(dataDir, [LOG_DATABASE, ...DEMO_BANKS]));
    const log = urls[LOG_DATABASE]!;
    const banks: Record<string, string> = Object.fromEntries(DEMO_BANKS.map((bank) => [bank, urls[bank]!]));
    if (!options.redisUrl) {
      redis = await startRedisServer('redis-server', { port: kept.redis }).catch((err: unknown) => {
        throw new Error(
          'no redis-server to start for the embedded default: install it (Debian: apt-get install redis-server) or set REDIS_URL to a Redis you run',
          { cause: err },
        );
      });
      movedNotice('Redis', kept.redis, redis.port);
    }
    await writeKeptPorts(dataDir, { postgres: cluster.port, redis: redis?.port ?? kept.redis });
    const token = options.tokens ? null : await devToken(dataDir);
    const env: Record<string, string> = {
      DATABASE_URL: log,
      REDIS_URL: options.redisUrl ?? redis!.url,
      TPC_RESOURCES: JSON.stringify(banks),
    };
    if (token) env.TPC_API_TOKENS = JSON.stringify([{ name: 'dev', token, scopes: ['submit', 'read', 'operate'], resources: ['*'] }]);
    return {
      dataDir,
      env,
      token,
      resources: Object.keys(banks),
      bankUrls: banks,
      redisUrl: redis?.url ?? null,
      cluster,
      async stop() {
        await Promise.allSettled([cluster.stop(), redis?.stop()]);
        await rm(join(dataDir, 'owner.pid'), { force: true });
      },
    };
  } catch (err) {
    await Promise.allSettled([cluster.stop(), redis?.stop()]);
    await rm(join(dataDir, 'owner.pid'), { force: true });
    throw err;
  }
}
