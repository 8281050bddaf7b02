import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import pg from 'pg';
import { startPostgresCluster } from '../coordinator/embedded/postgres-cluster.ts';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';

/*
 * What one direct-participant branch costs its database: statements and server CPU per branch,
 * for this checkout and (with --baseline-root, repeatable) others, in alternating rounds on one cluster
 * so that both see the same machine (other people's work on a shared box moves both alike).
 * A branch is what the engine does for a transfer's leg: open, one UPDATE by key and PREPARE in
 * one flight, release, COMMIT PREPARED from the pool.
 *
 *   node --import tsx bench/branch-cost.ts --baseline-root /tmp/tpc-base --branches 3000 --rounds 3
 */
const { values: args } = parseArgs({
  options: {
    'baseline-root': { type: 'string', multiple: true },
    branches: { type: 'string', default: '3000' },
    rounds: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '8' },
    /** UPDATEs per branch (distinct rows): named statements save planning per statement, the reset costs per branch. */
    statements: { type: 'string', default: '1' },
    'pg-stat-statements': { type: 'boolean', default: false },
  },
});
const branches = Number(args.branches);
const rounds = Number(args.rounds);
const concurrency = Number(args.concurrency);
const perBranch = Number(args.statements);
const statStatements = args['pg-stat-statements'];

interface ParticipantLike {
  openBranch(o: { statementTimeoutMs: number }): Promise<{
    run(sql: string, params?: readonly unknown[]): Promise<unknown>;
    prepare(gid: string): Promise<{ prepared: boolean }>;
    release(): void;
  }>;
  commitPrepared(gid: string): Promise<string>;
  close(): Promise<void>;
}
type Ctor = new (o: { name: string; connectionString: string; maxConnections: number }) => ParticipantLike;

/**
 * Nanoseconds on CPU of the cluster's processes (the postmaster and its children), from
 * /proc/<pid>/schedstat: /proc/<pid>/stat counts 10 ms ticks, too coarse for a round of a few
 * hundred milliseconds. The pools keep their backends for the whole run, so none is lost.
 */
function clusterCpuNs(dataDir: string): number {
  const postmaster = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  let ns = 0;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (Number(d) !== postmaster && ppid !== postmaster) continue;
      ns += Number(readFileSync(`/proc/${d}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the process ended meanwhile
    }
  }
  return ns;
}

async function load(root: string): Promise<Ctor> {
  const m = (await import(resolve(root, 'participant-adapter/direct-participant.ts'))) as { DirectParticipant: Ctor };
  return m.DirectParticipant;
}

const SQL = 'UPDATE accounts SET balance = balance + $1 WHERE id = $2';

async function runRound(p: ParticipantLike, tag: string, n: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const gid = `bc:${tag}:${i}`;
      const b = await p.openBranch({ statementTimeoutMs: 10_000 });
      const runs = Array.from({ length: perBranch }, (_, k) => b.run(SQL, [1, 1 + ((i * perBranch + k) % 1000)]));
      const prep = b.prepare(gid);
      await Promise.all(runs);
      const r = await prep;
      b.release();
      if (!r.prepared) throw new Error(`not prepared: ${gid}`);
      await p.commitPrepared(gid);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

const settings: Record<string, string> = statStatements
  ? {
      shared_preload_libraries: 'pg_stat_statements',
      'pg_stat_statements.track_utility': 'on',
      'pg_stat_statements.track_planning': 'on',
      'pg_stat_statements.max': '20000',
    }
  : {};
const cluster = await startPostgresCluster({ maxPreparedTransactions: 64, settings });
try {
  const url = await cluster.createDatabase('bank');
  const admin = new pg.Client({ connectionString: cluster.url('bank') });
  await admin.connect();
  await admin.query('CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)');
  await admin.query('ALTER TABLE accounts OWNER TO bank');
  await admin.query('INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 1000) g');
  await admin.query('VACUUM ANALYZE accounts');
  if (statStatements) await admin.query('CREATE EXTENSION pg_stat_statements');

  const variants: [string, ParticipantLike][] = [
    ['after', new (await load(resolve(import.meta.dirname, '..')))({ name: 'bank', connectionString: url, maxConnections: concurrency })],
  ];
  for (const root of (args['baseline-root'] ?? []).reverse()) {
    variants.unshift([basename(root), new (await load(root))({ name: 'bank', connectionString: url, maxConnections: concurrency })]);
  }
  for (const [name, p] of variants) await runRound(p, `warm-${name}`, 200);

  const cpu = new Map<string, number[]>();
  /** This process's CPU per branch: the coordinator's side of the same work (node-postgres, the guard, the branch). */
  const clientCpu = new Map<string, number[]>();
  const statements = new Map<string, Map<string, number>>();
  for (let r = 0; r < rounds; r++) {
    for (const [name, p] of variants) {
      if (statStatements) await admin.query('SELECT pg_stat_statements_reset()');
      const before = clusterCpuNs(cluster.dataDir);
      const client = process.cpuUsage();
      await runRound(p, `${name}-${r}`, branches);
      const ms = (clusterCpuNs(cluster.dataDir) - before) / 1e6 / branches;
      const spent = process.cpuUsage(client);
      cpu.set(name, [...(cpu.get(name) ?? []), ms]);
      clientCpu.set(name, [...(clientCpu.get(name) ?? []), (spent.user + spent.system) / 1e3 / branches]);
      if (statStatements && r === 0) {
        // Utility statements carry their gid literal on PG 15: fold them to one line each.
        const rows = (
          await admin.query<{ q: string; calls: string; ms: number }>(`
          SELECT regexp_replace(regexp_replace(query, '''[^'']*''', '''…''', 'g'), '\\s+', ' ', 'g') AS q,
                 sum(calls)::text AS calls, sum(total_exec_time + total_plan_time) AS ms
          FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'bank')
            AND query NOT LIKE '%pg_stat_statements%'
          GROUP BY 1 ORDER BY 3 DESC`)
        ).rows;
        statements.set(name, new Map(rows.map((x) => [`${x.q.slice(0, 110)}`, Number(x.calls) / branches])));
        console.log(`\n${name}: statements per branch (pg_stat_statements, calls / branches, server ms per branch)`);
        for (const x of rows) console.log(`  ${(Number(x.calls) / branches).toFixed(2).padStart(5)}  ${(x.ms / branches).toFixed(4)} ms  ${x.q.slice(0, 110)}`);
      }
    }
  }
  console.log(
    `\nserver CPU ms per branch (cluster processes, /proc/*/schedstat), ${rounds} rounds of ${branches} branches of ${perBranch} UPDATE(s), ${concurrency} concurrent:`,
  );
  const show = (figures: Map<string, number[]>) => {
    for (const [name, v] of figures) {
      const mean = v.reduce((a, b) => a + b, 0) / v.length;
      console.log(`  ${name.padEnd(10)} mean ${mean.toFixed(3)}  rounds ${v.map((x) => x.toFixed(3)).join(' ')}`);
    }
  };
  show(cpu);
  console.log('client (this process) CPU ms per branch:');
  show(clientCpu);
  await admin.end();
  for (const [, p] of variants) await p.close();
} finally {
  await cluster.destroy();
}
