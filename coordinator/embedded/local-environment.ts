import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { startPostgresCluster, type PostgresCluster } from './postgres-cluster.ts';
import { startRedisServer, type RedisServer } from './redis-server.ts';

/** The demo databases of the embedded default, each with an accounts table (ids 1..10, 1000 each). */
export const DEMO_BANKS = ['bank_a', 'bank_b', 'bank_c'] as const;
export const DEMO_ACCOUNTS = 10;
export const DEMO_BALANCE = 1000;

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
  readonly cluster: PostgresCluster;
  stop(): Promise<void>;
}

/** Whether to start the embedded default: nothing says where the log and the resources are. */
export function wantsLocalEnvironment(env: Record<string, string | undefined>): boolean {
  return !env.DATABASE_URL && !env.TPC_RESOURCES && !env.TPC_RESOURCES_FILE;
}

async function ensureDatabase(cluster: PostgresCluster, name: string, setupSql?: string): Promise<string> {
  const admin = new pg.Client({ connectionString: cluster.url() });
  await admin.connect();
  try {
    const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (exists.rowCount === 0) await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = cluster.url(name);
  if (setupSql) {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try { await c.query(setupSql); } finally { await c.end(); }
  }
  return url;
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

/**
 * The embedded default: a Postgres cluster kept under the data directory (the log and the demo
 * banks), a Redis on a free port, and a dev token. Reused on the next start: the balances and the
 * log survive, Redis starts empty (it only holds reminders; reconciliation recreates them).
 */
export async function startLocalEnvironment(options: LocalEnvironmentOptions): Promise<LocalEnvironment> {
  const dataDir = resolve(options.dataDir);
  await mkdir(dataDir, { recursive: true });
  await claim(dataDir);
  const cluster = await startPostgresCluster({ dataDir: await clusterDir(dataDir), binDir: options.pgBinDir, maxPreparedTransactions: 100 });
  let redis: RedisServer | undefined;
  try {
    const log = await ensureDatabase(cluster, 'tpc_log');
    const banks: Record<string, string> = {};
    for (const bank of DEMO_BANKS) banks[bank] = await ensureDatabase(cluster, bank, ACCOUNTS_SQL);
    if (!options.redisUrl) {
      redis = await startRedisServer().catch((err: unknown) => {
        throw new Error(
          'no redis-server to start for the embedded default: install it (Debian: apt-get install redis-server) or set REDIS_URL to a Redis you run',
          { cause: err },
        );
      });
    }
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
