import pg from 'pg';
import { startPostgresCluster, type PostgresCluster } from '../coordinator/embedded/postgres-cluster.ts';
import { startRedisServer } from '../coordinator/embedded/redis-server.ts';
import type { BenchOptions } from './options.ts';
import { startBareHttp, startCoordinator, type Coordinator } from './coordinator.ts';
import { enableStatStatements, STAT_STATEMENTS_SETTINGS } from './diagnose.ts';
import { startCutProxy, type CutProxy } from './pg-cut-proxy.ts';

export const BANKS = ['bank_a', 'bank_b', 'bank_c'] as const;
export type Bank = (typeof BANKS)[number];

/** The gid prefix of the bare-protocol variant (b); the service's are `tpc:<namespace>:`. */
export const BENCH_GID_PREFIX = 'bench:';
export const NAMESPACE = 'bench';
/** The four clusters, in World.clusters order, named by what they hold. */
export const CLUSTER_NAMES = ['pg0 (logs)', 'pg1 (bank_a)', 'pg2 (bank_b)', 'pg3 (bank_c)'];

/**
 * Everything the benchmark runs against. Four clusters, so that the log and each bank have a
 * server of their own (their own WAL and fsyncs), as the README asks of a deployment, and the log's
 * CPU is measured apart from any bank's:
 *   pg0: tpc_log (the service's log), bench_log (variant b's log table), the other coordinators' logs
 *   pg1: bank_a
 *   pg2: bank_b
 *   pg3: bank_c
 */
export interface World {
  clusters: PostgresCluster[];
  /** Every database; tpc_log_baseline only with --baseline-root. */
  urls: Record<Bank | 'tpc_log' | 'bench_log', string> & { tpc_log_baseline?: string };
  /**
   * The same databases as the superuser, for the diagnosis only (pg_stat_statements). The
   * coordinators and the bench's own pools connect as each database's owner role, as a careful
   * deployment does (and as the coordinator insists on).
   */
  adminUrls: Record<string, string>;
  /** The benchmark's own pools (variants a and b), pipelined like the service's participant pools. */
  banks: Record<Bank, pg.Pool>;
  /** Variant b's log: synchronous_commit=on, so the decision insert is a forced write. */
  benchLog: pg.Pool;
  coordinator: Coordinator;
  /** The coordinator from --baseline-root (variant d), with its own log database and namespace; else null (and in --backlog mode). */
  baseline: Coordinator | null;
  /** Variant (j)'s server (bare-http-server.ts: (b) behind node:http), a child process; null unless (j) runs. */
  bareHttp: Coordinator | null;
  /** --backlog: the proxy the coordinators reach bank_c through (bench/pg-cut-proxy.ts); else null. */
  bankCProxy: CutProxy | null;
  /** The environment the coordinators get (log, Redis, banks, pool sizes), under `namespace`: for the embedded one of variant (h). */
  coordinatorEnv(namespace: string): Record<string, string>;
  /** Registers a teardown step (run in reverse order of registration, on error and Ctrl-C too). */
  addCleanup(fn: () => Promise<unknown>): void;
  /** --backlog: starts a coordinator from `root` on a new log database `logDatabase` (runs one after the other). */
  startCoordinatorFrom(root: string | undefined, namespace: string, logDatabase: string): Promise<{ coordinator: Coordinator; logUrl: string }>;
  postgresVersion: string;
  redisVersion: string;
  /** Prepared transactions still on any bank (gid list), read just before the world is torn down. */
  preparedLeft(): Promise<string[]>;
  /** Stops the service, closes pools, stops Redis and destroys every cluster. Safe to call twice. */
  close(): Promise<void>;
}

const ACCOUNTS_SQL = `
  CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);
  CREATE TABLE audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    src int NOT NULL, dst int NOT NULL, amount int NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
  );`;

export function benchPool(url: string, max: number, extra: Partial<pg.PoolConfig> = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max,
    connectionTimeoutMillis: 10_000,
    application_name: 'tpc-bench',
    // The same wire behaviour as the coordinator's participant pools: queries issued without
    // awaiting the previous one share a round trip (BEGIN + statement + COMMIT/PREPARE).
    pipeline: true,
    // Idle connections are kept until the run ends. With pg's default (10 s) the pools of (b), (h)
    // and (i) closed all their connections at once about 10 s after their round, inside the round of
    // whatever ran then: a hundred backends exiting put the VM at 60 % system time, and that round
    // ((k) when it ran after (i)) came out at a third of the others.
    idleTimeoutMillis: 0,
    ...extra,
  } as pg.PoolConfig);
  pool.on('error', () => {}); // an idle connection dropped at shutdown must not crash the run
  return pool;
}

async function seed(url: string, accounts: number): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(ACCOUNTS_SQL);
    await client.query('INSERT INTO accounts (id, balance) SELECT g, 1000000 FROM generate_series(1, $1::int) AS g', [accounts]);
    await client.query('VACUUM ANALYZE accounts');
  } finally {
    await client.end();
  }
}

async function adminQuery<T extends pg.QueryResultRow>(url: string, text: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(text)).rows;
  } finally {
    await client.end();
  }
}

/** `register` receives the teardown at once, so that a crash while the world is starting still cleans up. */
export async function startWorld(options: BenchOptions, log: (msg: string) => void, register: (close: () => Promise<void>) => void): Promise<World> {
  const cleanups: (() => Promise<unknown>)[] = [];
  let closed: Promise<void> | undefined;
  const close = () => {
    closed ??= (async () => {
      for (const fn of cleanups.reverse()) await fn().catch((err: unknown) => log(`cleanup step failed: ${String(err)}`));
    })();
    return closed;
  };
  register(close);

  try {
    const settings: Record<string, string | number> = {
      max_connections: 400,
      fsync: options.fsync,
      full_page_writes: options.fsync,
      synchronous_commit: 'on',
      ...(options.pgStatStatements ? STAT_STATEMENTS_SETTINGS : {}),
    };
    log(`starting 4 PostgreSQL clusters (fsync=${options.fsync}) and Redis`);
    // --backlog leaves every branch on bank_c (pg3) prepared at once; each needs a slot of its own.
    const slots = (i: number) => (options.backlog && i === 3 ? options.backlogSize + 128 : 128);
    const started = await Promise.allSettled([0, 1, 2, 3].map((i) => startPostgresCluster({ maxPreparedTransactions: slots(i), settings })));
    const clusters = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    for (const c of clusters) cleanups.push(() => c.destroy());
    const failed = started.find((s) => s.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    const [pg0, pg1, pg2, pg3] = clusters as [PostgresCluster, PostgresCluster, PostgresCluster, PostgresCluster];

    const redis = await startRedisServer();
    cleanups.push(() => redis.stop());

    const urls: World['urls'] = {
      tpc_log: await pg0.createDatabase('tpc_log'),
      bench_log: await pg0.createDatabase('bench_log'),
      bank_a: await pg1.createDatabase('bank_a'),
      bank_b: await pg2.createDatabase('bank_b'),
      bank_c: await pg3.createDatabase('bank_c'),
    };
    const owner: Record<string, PostgresCluster> = { tpc_log: pg0, bench_log: pg0, bank_a: pg1, bank_b: pg2, bank_c: pg3 };
    const adminUrls: Record<string, string> = Object.fromEntries(Object.entries(owner).map(([db, c]) => [db, c.url(db)]));
    log(`seeding ${options.accounts} accounts in each bank`);
    await Promise.all(BANKS.map((b) => seed(urls[b], options.accounts)));
    if (options.pgStatStatements) await enableStatStatements(Object.values(adminUrls));
    await adminQuery(urls.bench_log, 'CREATE TABLE decisions (txid text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())');
    // Start the measurement from a fresh checkpoint (the seeding's WAL is not flushed mid-run).
    await Promise.all(clusters.map((c) => adminQuery(c.url(), 'CHECKPOINT')));

    const banks = Object.fromEntries(BANKS.map((b) => [b, benchPool(urls[b], options.pool)])) as Record<Bank, pg.Pool>;
    const benchLog = benchPool(urls.bench_log, options.pool, { options: '-c synchronous_commit=on' } as Partial<pg.PoolConfig>);
    cleanups.push(() => Promise.allSettled([...Object.values(banks), benchLog].map((p) => p.end())));

    const postgresVersion = (await adminQuery<{ v: string }>(urls.bank_a, "SELECT current_setting('server_version') AS v"))[0]!.v;
    let bankCProxy: CutProxy | null = null;
    if (options.backlog) {
      const proxy = await startCutProxy(pg3.host, pg3.port);
      bankCProxy = proxy;
      cleanups.push(() => proxy.close());
    }
    const env = (logUrl: string, namespace: string) => ({
      DATABASE_URL: logUrl,
      REDIS_URL: redis.url,
      TPC_RESOURCES: JSON.stringify({ bank_a: urls.bank_a, bank_b: urls.bank_b, bank_c: bankCProxy ? bankCProxy.via(urls.bank_c) : urls.bank_c }),
      HOST: '127.0.0.1',
      TPC_NAMESPACE: namespace,
      LOG_LEVEL: 'silent',
      TPC_RESOURCE_POOL_SIZE: String(options.pool),
      // Two pools of this size (forced and relaxed) on the log database.
      TPC_LOG_POOL_SIZE: String(Math.max(2, options.pool)),
      // The coordinators keep their connections between their rounds, as the benchmark's own pools do
      // (benchPool): with the default 30 s, each coordinator idle through the other variants' rounds
      // closed its hundred connections at once inside one of them (seen: 24 to 67 backends exiting
      // in a second). A baseline that predates the variable ignores it.
      TPC_POOL_IDLE_TIMEOUT_MS: '0',
    });
    const coordinator = await startCoordinator(options, env(urls.tpc_log, NAMESPACE), log);
    cleanups.push(() => coordinator.close());
    log(`coordinator (${options.service}, ${coordinator.revision}) listening at ${coordinator.url}`);
    let baseline: Coordinator | null = null;
    if (options.baselineRoot && !options.backlog) {
      // Its own log database (its migrations may differ) and namespace (gids, queues); the same banks.
      const logUrl = await pg0.createDatabase('tpc_log_baseline');
      urls.tpc_log_baseline = logUrl;
      adminUrls.tpc_log_baseline = pg0.url('tpc_log_baseline');
      if (options.pgStatStatements) await enableStatStatements([adminUrls.tpc_log_baseline]);
      const started = await startCoordinator(options, env(logUrl, `${NAMESPACE}-baseline`), log, options.baselineRoot, options.baselineNodeArgs);
      baseline = started;
      cleanups.push(() => started.close());
      log(`baseline coordinator (${options.service}, ${started.revision}) listening at ${started.url}`);
    }

    let bareHttp: Coordinator | null = null;
    if (options.variants.includes('j') && !options.backlog && !options.overload) {
      const urlsOf = { bank_a: urls.bank_a, bank_b: urls.bank_b, bank_c: urls.bank_c, bench_log: urls.bench_log };
      const started = await startBareHttp({ BARE_URLS: JSON.stringify(urlsOf), BARE_POOL_SIZE: String(options.pool) }, log);
      bareHttp = started;
      cleanups.push(() => started.close());
      log(`bare protocol behind HTTP (j) listening at ${started.url}`);
    }

    const preparedLeft = async () => {
      const rows = await Promise.all(
        BANKS.map((b) => banks[b].query<{ gid: string }>('SELECT gid FROM pg_prepared_xacts WHERE database = current_database()')),
      );
      return rows.flatMap((r) => r.rows.map((x) => x.gid));
    };

    const startCoordinatorFrom = async (root: string | undefined, namespace: string, logDatabase: string) => {
      const logUrl = await pg0.createDatabase(logDatabase);
      const started = await startCoordinator(options, env(logUrl, namespace), log, root);
      cleanups.push(() => started.close());
      return { coordinator: started, logUrl };
    };

    return {
      clusters,
      urls,
      adminUrls,
      banks,
      benchLog,
      coordinator,
      baseline,
      bareHttp,
      bankCProxy,
      startCoordinatorFrom,
      coordinatorEnv: (namespace) => env(urls.tpc_log, namespace),
      addCleanup: (fn) => {
        cleanups.push(fn);
      },
      postgresVersion,
      redisVersion: await redisVersion(),
      preparedLeft,
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

async function redisVersion(): Promise<string> {
  const { execFile } = await import('node:child_process');
  return new Promise((resolve) => {
    execFile('redis-server', ['--version'], (err, stdout) => {
      resolve(err ? 'unknown' : (/v=(\S+)/.exec(stdout)?.[1] ?? stdout.trim()));
    });
  });
}

/** Rolls back prepared transactions left on the banks (after an error); returns their gids. */
export async function rollBackLeftovers(world: World): Promise<string[]> {
  const left: string[] = [];
  for (const bank of BANKS) {
    const rows = await world.banks[bank].query<{ gid: string }>('SELECT gid FROM pg_prepared_xacts WHERE database = current_database()');
    for (const { gid } of rows.rows) {
      if (!/^[A-Za-z0-9_\-:.]{1,200}$/.test(gid)) continue;
      await world.banks[bank].query(`ROLLBACK PREPARED '${gid}'`).catch(() => {});
      left.push(`${bank}:${gid}`);
    }
  }
  return left;
}
