import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { startPostgresCluster } from '../coordinator/embedded/postgres-cluster.ts';
import { GroupCommit } from '../coordinator/log/group-commit.ts';

/*
 * Micro-benchmark of the group-commit batcher: C clients each moving their own row with a
 * compare-and-set, for a few seconds, (a) one `UPDATE … WHERE id AND status` per write on a pool,
 * (b) through the batcher (one `UPDATE … FROM unnest(…)` per batch), with 1 or 2 batches in flight,
 * and with 1 in flight where a batch of one takes the plain statement (`x1+1`).
 * Prints writes/s, statements/s, mean batch, mean latency, and CPU per write of this process and of
 * the Postgres server (its backends, from /proc). Figures only; nothing is asserted.
 *
 *   node --import tsx bench/group-commit.ts [--seconds 3] [--clients 1,16,64] [--fsync] [--generic]
 *
 * Without --fsync the cluster runs as the tests' does (fsync off): a commit costs CPU, not a disk
 * flush. With --fsync every commit waits for the WAL flush, as the log's forced writes do.
 * --generic sets plan_cache_mode=force_generic_plan on the pool: with array parameters Postgres
 * otherwise keeps planning the batch statement at each execution (a custom plan knows the arrays'
 * length, so it looks cheaper than the generic one).
 */

const arg = (name: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? undefined : process.argv[i + 1];
};
const seconds = Number(arg('seconds') ?? 3);
const clientCounts = (arg('clients') ?? '1,16,64').split(',').map(Number);
const fsync = process.argv.includes('--fsync');
const generic = process.argv.includes('--generic');
const POOL = 8;

const SINGLE = 'UPDATE gc_rows SET status = $3 WHERE id = $1 AND status = $2';
const BATCH = `
  UPDATE gc_rows AS r SET status = u.next
  FROM unnest($1::int[], $2::text[], $3::text[]) WITH ORDINALITY AS u(id, expected, next, ord)
  WHERE r.id = u.id AND r.status = u.expected
  RETURNING u.ord`;

interface Move {
  id: number;
  from: string;
  to: string;
}
type Writer = { write(m: Move): Promise<void>; statements(): number; close(): Promise<void> };

function direct(pool: pg.Pool): Writer {
  let statements = 0;
  return {
    async write(m) {
      statements += 1;
      const r = await pool.query({ name: 'gc_single', text: SINGLE, values: [m.id, m.from, m.to] });
      if (r.rowCount !== 1) throw new Error(`stale ${m.id}`);
    },
    statements: () => statements,
    close: async () => {},
  };
}

function batched(pool: pg.Pool, maxInFlight: number, singleAlone = false): Writer {
  let statements = 0;
  const batcher = new GroupCommit<Move, true>({
    name: 'bench',
    maxBatch: 256,
    maxQueued: 10_000,
    maxInFlight,
    write: async (items) => {
      statements += 1;
      if (singleAlone && items.length === 1) {
        // A batch of one (one client alone) takes the plain statement: no arrays to build or unnest.
        const m = items[0]!;
        const r = await pool.query({ name: 'gc_single', text: SINGLE, values: [m.id, m.from, m.to] });
        return [r.rowCount === 1 ? true : new Error(`stale ${m.id}`)];
      }
      const r = await pool.query<{ ord: string }>({
        name: 'gc_batch',
        text: BATCH,
        values: [items.map((m) => m.id), items.map((m) => m.from), items.map((m) => m.to)],
      });
      const matched = new Set(r.rows.map((row) => Number(row.ord)));
      return items.map((m, i) => (matched.has(i + 1) ? true : new Error(`stale ${m.id}`)));
    },
  });
  return {
    write: async (m) => {
      await batcher.submit(m);
    },
    statements: () => statements,
    close: () => batcher.close(),
  };
}

/** CPU seconds so far of the postmaster and its children (the backends): the log database's cost. */
function serverCpuSeconds(postmasterPid: number): number {
  let ticks = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue;
    }
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const pid = Number(entry);
    if (pid !== postmasterPid && Number(fields[1]) !== postmasterPid) continue;
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks / 100; // USER_HZ is 100 on Linux
}

async function run(pool: pg.Pool, writer: Writer, clients: number, pmPid: number, offset: number) {
  let writes = 0;
  let latency = 0;
  const stopAt = performance.now() + seconds * 1000;
  const cpu0 = process.cpuUsage();
  const server0 = serverCpuSeconds(pmPid);
  const started = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      const id = offset + c;
      let status = 'a';
      while (performance.now() < stopAt) {
        const next = status === 'a' ? 'b' : 'a';
        const t = performance.now();
        await writer.write({ id, from: status, to: next });
        latency += performance.now() - t;
        status = next;
        writes += 1;
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const serverCpu = serverCpuSeconds(pmPid) - server0;
  await writer.close();
  // Reset the rows for the next run.
  await pool.query(`UPDATE gc_rows SET status = 'a'`);
  return {
    writesPerSecond: writes / elapsed,
    statementsPerSecond: writer.statements() / elapsed,
    meanBatch: writes / writer.statements(),
    meanLatencyMs: latency / writes,
    clientCpuUsPerWrite: (cpu.user + cpu.system) / writes,
    serverCpuUsPerWrite: (serverCpu * 1e6) / writes,
  };
}

const cluster = await startPostgresCluster({ binDir: process.env.TPC_PG_BINDIR, settings: fsync ? { fsync: 'on', full_page_writes: 'on' } : {} });
try {
  const url = await cluster.createDatabase('gc_bench');
  const pool = new pg.Pool({ connectionString: url, max: POOL, ...(generic ? { options: '-c plan_cache_mode=force_generic_plan' } : {}) });
  pool.on('error', () => {});
  await pool.query(`CREATE TABLE gc_rows (id int PRIMARY KEY, status text NOT NULL)`);
  await pool.query(`INSERT INTO gc_rows SELECT g, 'a' FROM generate_series(0, 9999) g`);
  // Without statistics the planner may join unnest's rows to a sequential scan of the table.
  await pool.query('ANALYZE gc_rows');
  const pmPid = Number(readFileSync(join(cluster.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  console.log(`group commit bench: ${seconds} s per run, pool of ${POOL}, fsync ${fsync ? 'on' : 'off'}, plans ${generic ? 'generic' : 'auto'}`);
  console.log('clients  mode           writes/s  statements/s  mean batch  mean latency ms  node µs/write  postgres µs/write');
  for (const clients of clientCounts) {
    const modes: [string, () => Writer][] = [
      ['direct', () => direct(pool)],
      ['batched x1', () => batched(pool, 1)],
      ['batched x2', () => batched(pool, 2)],
      ['batched x1+1', () => batched(pool, 1, true)],
    ];
    for (const [mode, make] of modes) {
      const r = await run(pool, make(), clients, pmPid, 0);
      console.log(
        [
          String(clients).padStart(7),
          mode.padEnd(12),
          r.writesPerSecond.toFixed(0).padStart(10),
          r.statementsPerSecond.toFixed(0).padStart(13),
          r.meanBatch.toFixed(1).padStart(11),
          r.meanLatencyMs.toFixed(2).padStart(16),
          r.clientCpuUsPerWrite.toFixed(1).padStart(14),
          r.serverCpuUsPerWrite.toFixed(1).padStart(18),
        ].join('  '),
      );
    }
  }
  await pool.end();
} finally {
  await cluster.destroy();
}
