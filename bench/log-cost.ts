import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { startPostgresCluster, type PostgresCluster } from '../coordinator/embedded/postgres-cluster.ts';
import { snapshot, used } from './cpu.ts';

/*
 * The log alone: C drivers each writing what a committed two-branch transfer writes to the log
 * (begin, the forced commit decision, the completion; or, folded, the decision inserting the row
 * and the completion) through the real TransactionsStore, against
 * the bare protocol's log write (one forced INSERT of the transaction id), in alternating rounds on
 * one cluster with fsync on. Prints transactions/s, the log server's CPU per transaction (its
 * processes, from /proc), statements and WAL bytes per transaction. With --baseline-root DIR the
 * store of another checkout runs too (a before/after of a change to the log's statements).
 * Figures only; nothing is asserted.
 *
 *   node --import tsx bench/log-cost.ts [--seconds 4] [--rounds 3] [--clients 32] [--baseline-root DIR [--baseline-folded]] [--statements]
 */
const arg = (name: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? undefined : process.argv[i + 1];
};
const seconds = Number(arg('seconds') ?? 4);
const rounds = Number(arg('rounds') ?? 3);
const clients = Number(arg('clients') ?? 32);
const baselineRoot = arg('baseline-root');

interface Store {
  begin(r: unknown): Promise<unknown>;
  transition(r: unknown): Promise<void>;
  close(): Promise<void>;
}
interface Variant {
  name: string;
  url?: string;
  run(): Promise<void>;
  close(): Promise<void>;
}

/**
 * folded: the begin record folded into the decision (the decision inserts the row, as a
 * transaction that decides within TPC_BEGIN_DEFER_MS writes it); a store of a revision before
 * that cannot run it.
 */
async function storeVariant(name: string, root: string, cluster: PostgresCluster, folded = false): Promise<Variant> {
  const url = await cluster.createDatabase(`log_${name.replace(/\W/g, '_')}`);
  const { migrateLog, openLogDatabase } = await import(pathToFileURL(resolve(root, 'coordinator/log/log-database.ts')).href);
  const { TransactionsStore } = await import(pathToFileURL(resolve(root, 'coordinator/log/transactions-store.ts')).href);
  await migrateLog(url);
  const db = openLogDatabase({ url, maxConnections: 16 });
  const store = new TransactionsStore(db) as Store;
  const branches = (id: string) => [0, 1].map((index) => ({ index, resource: `bank_${index}`, gid: `tpc:bench:${id}:${index}` }));
  return {
    name,
    url,
    async run() {
      const id = randomUUID();
      // Both revisions' begin records: `detail` (before the lean log) and `timeoutMs` (after).
      const record = {
        id,
        namespace: 'bench',
        deadline: new Date(Date.now() + 30_000),
        submittedBy: 'bench',
        driver: 'me',
        branches: branches(id),
        timeoutMs: 30_000,
        detail: { timeoutMs: 30_000, resources: ['bank_0', 'bank_1'] },
      };
      if (!folded) await store.begin(record);
      await store.transition({
        ...(folded ? { insert: record } : {}),
        id,
        driver: 'me',
        from: 'active',
        to: 'committing',
        forced: true,
        branches: [0, 1].map((index) => ({ index, status: 'prepared', xid: String(1000 + index), readOnly: false })),
        event: { kind: 'decided', detail: { outcome: 'commit' }, derivable: true },
      });
      await store.transition({
        id,
        driver: 'me',
        from: 'committing',
        to: 'committed',
        forced: false,
        branches: [0, 1].map((index) => ({ index, status: 'committed', readOnly: false, results: [{ rowCount: 1, rows: [] }] })),
        event: { kind: 'completed', detail: { outcome: 'committed' }, derivable: true },
      });
    },
    async close() {
      await store.close();
      await db.close();
    },
  };
}

async function bareVariant(cluster: PostgresCluster): Promise<Variant> {
  const url = await cluster.createDatabase('log_bare');
  const pool = new pg.Pool({ connectionString: url, max: 16 });
  pool.on('error', () => {});
  await pool.query('CREATE TABLE decisions (txid uuid PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())');
  return {
    name: 'bare: one forced INSERT',
    async run() {
      await pool.query({ name: 'decide', text: 'INSERT INTO decisions (txid) VALUES ($1)', values: [randomUUID()] });
    },
    async close() {
      await pool.end();
    },
  };
}

async function measure(v: Variant, cluster: PostgresCluster, admin: pg.Client, ms: number) {
  const stats = async () =>
    (
      await admin.query<{ stmts: string; wal: string }>(
        "SELECT (SELECT sum(xact_commit + xact_rollback) FROM pg_stat_database)::text AS stmts, pg_current_wal_lsn() - '0/0'::pg_lsn AS wal",
      )
    ).rows[0]!;
  const s0 = await stats();
  const c0 = snapshot([cluster.dataDir]);
  const t0 = performance.now();
  let done = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() - t0 < ms) {
        await v.run();
        done++;
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = used(snapshot([cluster.dataDir]), c0, []);
  const s1 = await stats();
  return { done, elapsed, cpu: cpu.clusters[0]!, xacts: Number(s1.stmts) - Number(s0.stmts), wal: Number(s1.wal) - Number(s0.wal) };
}

const statements = process.argv.includes('--statements');
const cluster = await startPostgresCluster({
  settings: {
    fsync: 'on',
    full_page_writes: 'on',
    synchronous_commit: 'on',
    max_connections: 200,
    ...(process.env.LOG_COST_SETTINGS ? (JSON.parse(process.env.LOG_COST_SETTINGS) as Record<string, string>) : {}),
    ...(statements ? { shared_preload_libraries: 'pg_stat_statements', 'pg_stat_statements.track_planning': 'on' } : {}),
  },
});
const admin = new pg.Client({ connectionString: cluster.url('postgres') });
await admin.connect();
try {
  if (statements) await admin.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
  const variants = [
    await bareVariant(cluster),
    await storeVariant('this checkout, begun', '.', cluster),
    await storeVariant('this checkout, begin folded into the decision', '.', cluster, true),
  ];
  if (baselineRoot) variants.push(await storeVariant(`baseline ${baselineRoot}`, baselineRoot, cluster));
  // A baseline from before the begin record could be folded into the decision (issue 13) cannot run this one.
  if (baselineRoot && process.argv.includes('--baseline-folded'))
    variants.push(await storeVariant(`baseline ${baselineRoot}, begin folded into the decision`, baselineRoot, cluster, true));
  for (const v of variants) await measure(v, cluster, admin, 1_000); // warm-up
  const totals = new Map(variants.map((v) => [v.name, { done: 0, elapsed: 0, cpu: 0, xacts: 0, wal: 0 }]));
  for (let r = 0; r < rounds; r++) {
    for (const v of variants) {
      const m = await measure(v, cluster, admin, seconds * 1000);
      const t = totals.get(v.name)!;
      for (const k of Object.keys(t) as (keyof typeof t)[]) t[k] += m[k];
      console.log(`[log-cost] round ${r + 1} ${v.name}: ${(m.done / m.elapsed).toFixed(0)} tx/s, ${((1000 * m.cpu) / m.done).toFixed(3)} ms log CPU/tx`);
    }
  }
  console.log(`\n${clients} drivers, ${rounds} rounds of ${seconds} s, fsync on\n`);
  console.log('| variant | tx/s | log CPU ms/tx | log transactions/tx | WAL bytes/tx |');
  console.log('|---|---:|---:|---:|---:|');
  for (const [name, t] of totals) {
    console.log(
      `| ${name} | ${(t.done / t.elapsed).toFixed(0)} | ${((1000 * t.cpu) / t.done).toFixed(3)} | ${(t.xacts / t.done).toFixed(2)} | ${(t.wal / t.done).toFixed(0)} |`,
    );
  }
  if (statements) {
    // Server time per statement over the whole run, per database (one per variant).
    const rows = await admin
      .query(`
      SELECT d.datname, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 70) AS query, s.calls, s.plans,
        round((s.total_exec_time / s.calls * 1000)::numeric) AS exec_us, round(s.wal_bytes / s.calls) AS wal_bytes
      FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
      WHERE d.datname LIKE 'log_%' AND s.calls > 100 ORDER BY d.datname, s.total_exec_time DESC`)
      .catch((err: Error) => ({ rows: [{ error: err.message }] }));
    console.table(rows.rows);
    for (const v of variants) {
      if (!v.url) continue;
      const c = new pg.Client({ connectionString: v.url });
      await c.connect();
      const t = await c.query(
        "SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd, n_dead_tup, autovacuum_count FROM pg_stat_user_tables WHERE relname = 'tpc_transactions'",
      );
      console.log(v.name, t.rows[0]);
      await c.end();
    }
  }
  for (const v of variants) await v.close();
} finally {
  await admin.end();
  await cluster.destroy();
}
