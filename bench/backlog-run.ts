import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { namespacePrefix } from '../participant-adapter/gid.ts';
import type { Coordinator } from './coordinator.ts';
import { snapshot, used, type CpuUsed } from './cpu.ts';
import { resetStatStatements, statStatementsReport } from './diagnose.ts';
import type { CutCounts, CutProxy } from './pg-cut-proxy.ts';
import { BANKS, type Bank, type World } from './world.ts';

/*
 * One backlog run against one coordinator (bench/backlog.ts runs one per coordinator): the idle
 * coordinator for a few seconds, then `size` transfers decided while every COMMIT PREPARED to
 * bank_c is cut, then bank_c restored and the drain timed until the log says every transaction
 * committed and no branch of the namespace is prepared anywhere. Its RSS is sampled throughout.
 */

// 10 s, the service's default deadline: the prepares run at the bench's ordinary pace, so this is ample.
export const BACKLOG_TIMEOUT_MS = 10_000;
// 5 s of idle memory before the load: enough samples for a median, short beside the run.
const IDLE_MS = 5_000;
// RSS every 100 ms: the drain lasts tens of seconds and its peak is the figure the issue asks for.
const RSS_INTERVAL_MS = 100;
// The drain's end is found by polling the log every 250 ms: the resolution of the drain time.
const POLL_MS = 250;
// A drain still going after 10 minutes is reported unfinished rather than awaited for ever.
const DRAIN_LIMIT_MS = 600_000;
export const START_BALANCE = 1_000_000;

export type Phase = 'idle' | 'build' | 'drain';
export const PHASES: Phase[] = ['idle', 'build', 'drain'];

/** What each account of each bank should hold, as a difference from the seeded balance. */
export type Expected = Record<Bank, Int32Array>;

/** Heap used and allocated, external (Buffers), and RSS, MiB, as the coordinator reports them on /metrics. */
export interface Memory {
  heapUsed: number;
  heapTotal: number;
  external: number;
  rss: number;
}

function memoryOf(gauges: Map<string, number>): Memory {
  const mib = (name: string) => (gauges.get(name) ?? Number.NaN) / 2 ** 20;
  return {
    heapUsed: mib('tpc_process_nodejs_heap_size_used_bytes'),
    heapTotal: mib('tpc_process_nodejs_heap_size_total_bytes'),
    external: mib('tpc_process_nodejs_external_memory_bytes'),
    rss: mib('tpc_process_process_resident_memory_bytes'),
  };
}

export interface BacklogRun {
  label: string;
  revision: string;
  namespace: string;
  submitted: number;
  buildMs: number;
  /** Answers to the submissions, by "status body-status" (503 refusals are retried and counted apart). */
  answers: Map<string, number>;
  /** Transactions of the namespace in the log when the outage ended, by status (and how many were flagged in doubt). */
  logAtCutEnd: Map<string, number>;
  inDoubtInLog: number;
  /** The coordinator's /metrics at the end of the outage, and how long that scrape took. */
  gauges: Map<string, number>;
  scrapeMs: number;
  /** The coordinator's own memory figures (prom-client's process metrics), MiB: at the end of the idle time, of the outage, of the drain. */
  memory: Record<Phase, Memory>;
  preparedOnBankCAtCutEnd: number;
  proxyDuringOutage: CutCounts;
  /** From the restore: first commit seen, half, 90 %, all (null if not within the limit), ms. */
  firstCommitMs: number | null;
  halfMs: number | null;
  ninetyMs: number | null;
  drainMs: number | null;
  /** Committed count at each whole second of the drain. */
  curve: number[];
  toCommit: number;
  proxyDuringDrain: CutCounts;
  rss: Record<Phase, { median: number; peak: number }>;
  /** The kernel's high-water mark of the coordinator's RSS (VmHWM) at the end of the run. */
  hwmMiB: number;
  cpuBuild: CpuUsed;
  cpuDrain: CpuUsed;
  /** Verification: empty when money is conserved and every decided transfer is applied on both banks. */
  problems: string[];
  logAtEnd: Map<string, number>;
  heuristics: number;
}

function readStatus(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const kb = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return kb ? Number(kb[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** The coordinator's RSS every 100 ms, filed under the phase the run is in. */
function rssTrace(pid: number | undefined) {
  const samples = new Map<Phase, number[]>(PHASES.map((p) => [p, []]));
  let phase: Phase = 'idle';
  const read = () => (pid === undefined ? process.memoryUsage().rss / 2 ** 20 : readStatus(pid, 'VmRSS'));
  const timer = setInterval(() => {
    const v = read();
    if (Number.isFinite(v)) samples.get(phase)!.push(v);
  }, RSS_INTERVAL_MS);
  return {
    set(p: Phase) {
      phase = p;
    },
    stop(): Record<Phase, { median: number; peak: number }> {
      clearInterval(timer);
      const out = {} as Record<Phase, { median: number; peak: number }>;
      for (const [p, xs] of samples) {
        const sorted = [...xs].sort((a, b) => a - b);
        out[p] = { median: sorted[Math.floor(sorted.length / 2)] ?? Number.NaN, peak: sorted.at(-1) ?? Number.NaN };
      }
      return out;
    },
  };
}

function post(agent: Agent, url: URL, body: string): Promise<{ status: number; text: string; retryAfter: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), retryAfter: res.headers['retry-after'] as string | undefined }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * Transfer i debits account i on bank_a (odd i) or bank_b (even i) and credits account i on bank_c:
 * an account of its own on bank_c, whose row lock the prepared branch holds until the drain.
 */
async function build(
  baseUrl: string,
  size: number,
  concurrency: number,
  expected: Expected,
  stopped: () => boolean,
  log: (msg: string) => void,
): Promise<Map<string, number>> {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
  const url = new URL('/v1/transactions', baseUrl);
  const answers = new Map<string, number>();
  const count = (k: string) => answers.set(k, (answers.get(k) ?? 0) + 1);
  let next = 1;
  let done = 0;
  const progress = setInterval(() => log(`  built ${done}/${size}`), 5_000);
  const client = async () => {
    while (!stopped()) {
      const i = next++;
      if (i > size) return;
      const debit: Bank = i % 2 === 1 ? 'bank_a' : 'bank_b';
      const amount = 1 + Math.floor(Math.random() * 100);
      const body = JSON.stringify({
        branches: [
          { resource: debit, statements: [{ sql: 'UPDATE accounts SET balance = balance - $1 WHERE id = $2', params: [amount, i], expect: { rowCount: 1 } }] },
          {
            resource: 'bank_c',
            statements: [{ sql: 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', params: [amount, i], expect: { rowCount: 1 } }],
          },
        ],
        timeoutMs: BACKLOG_TIMEOUT_MS,
      });
      for (;;) {
        let a: Awaited<ReturnType<typeof post>>;
        try {
          a = await post(agent, url, body);
        } catch (err) {
          count(`no answer: ${err instanceof Error ? err.message : String(err)}`);
          break;
        }
        // A refusal at admission began nothing: send it again after Retry-After.
        if (a.status === 503 && a.text.includes('urn:tpc:problem:overloaded')) {
          count('503 overloaded (sent again)');
          await sleep(Math.max(1, Number(a.retryAfter) || 1) * 1000);
          continue;
        }
        let bodyStatus = '?';
        try {
          bodyStatus = String((JSON.parse(a.text) as { status?: unknown }).status ?? '?');
        } catch {
          /* not JSON */
        }
        count(`${a.status} ${bodyStatus}`);
        // 202 committing (phase 2 cut) is what the outage should give; 201 would mean the cut leaked.
        // 202 aborting is an abort decided (its deadline passed before the decision) whose rollback waits for bank_c.
        if ((a.status === 201 || a.status === 202) && (bodyStatus === 'committed' || bodyStatus === 'committing')) {
          expected[debit][i]! -= amount;
          expected.bank_c[i]! += amount;
        }
        break;
      }
      done++;
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, client));
  } finally {
    clearInterval(progress);
    agent.destroy();
  }
  return answers;
}

async function scrape(url: string): Promise<{ gauges: Map<string, number>; ms: number }> {
  const t0 = performance.now();
  const gauges = new Map<string, number>();
  try {
    const text = await (await fetch(`${url}/metrics`)).text();
    const names =
      'tpc_in_doubt_transactions|tpc_heuristic_transactions|tpc_orphan_branches|tpc_prepared_branches|' +
      'tpc_process_nodejs_heap_size_used_bytes|tpc_process_nodejs_heap_size_total_bytes|tpc_process_nodejs_external_memory_bytes|tpc_process_process_resident_memory_bytes';
    for (const m of text.matchAll(new RegExp(`^(${names})(\\{[^}]*\\})? (\\S+)$`, 'gm'))) {
      gauges.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
    }
  } catch {
    // unreadable /metrics: the report shows no gauges
  }
  return { gauges, ms: performance.now() - t0 };
}

const diffCounts = (a: CutCounts, b: CutCounts): CutCounts => ({
  connections: a.connections - b.connections,
  commitPreparedForwarded: a.commitPreparedForwarded - b.commitPreparedForwarded,
  commitPreparedCut: a.commitPreparedCut - b.commitPreparedCut,
});

/** Every account of every bank against the expected balances, and the total against the seeded total. */
async function verify(w: World, accounts: number, expected: Expected): Promise<string[]> {
  const problems: string[] = [];
  let total = 0;
  for (const bank of BANKS) {
    const rows = (await w.banks[bank].query<{ id: number; balance: number }>('SELECT id, balance FROM accounts')).rows;
    let wrong = 0;
    for (const r of rows) {
      total += r.balance;
      const want = START_BALANCE + (expected[bank][r.id] ?? 0);
      if (r.balance !== want) {
        if (wrong < 5) problems.push(`${bank} account ${r.id}: balance ${r.balance}, expected ${want}`);
        wrong++;
      }
    }
    if (wrong > 5) problems.push(`${bank}: ${wrong} accounts differ in all`);
  }
  const seeded = START_BALANCE * accounts * BANKS.length;
  if (total !== seeded) problems.push(`money not conserved: ${total} on the banks, ${seeded} seeded`);
  return problems;
}

export interface RunTarget {
  label: string;
  coordinator: Coordinator;
  namespace: string;
  logUrl: string;
  /** The log database as a superuser, when pg_stat_statements is loaded (--pg-stat-statements): its statements during the drain are reported. */
  logAdminUrl?: string;
}

export async function runBacklogOnce(
  w: World,
  proxy: CutProxy,
  target: RunTarget,
  size: number,
  concurrency: number,
  accounts: number,
  expected: Expected,
  stopped: () => boolean,
  log: (msg: string) => void,
): Promise<BacklogRun> {
  const { coordinator } = target;
  const logDb = new pg.Client({ connectionString: target.logUrl });
  await logDb.connect();
  const prefix = namespacePrefix(target.namespace);
  const byStatus = async () => {
    const rows = (
      await logDb.query<{ status: string; n: number; in_doubt: number; heuristic: number }>(
        `SELECT status::text AS status, count(*)::int AS n, (count(*) FILTER (WHERE in_doubt))::int AS in_doubt,
              (count(*) FILTER (WHERE heuristic))::int AS heuristic
       FROM tpc_transactions WHERE namespace = $1 GROUP BY status`,
        [target.namespace],
      )
    ).rows;
    return {
      statuses: new Map(rows.map((r) => [r.status, r.n])),
      inDoubt: rows.reduce((a, r) => a + r.in_doubt, 0),
      heuristic: rows.reduce((a, r) => a + r.heuristic, 0),
    };
  };
  const committed = async () =>
    (await logDb.query<{ n: number }>("SELECT count(*)::int AS n FROM tpc_transactions WHERE namespace = $1 AND status = 'committed'", [target.namespace]))
      .rows[0]!.n;
  const prepared = async (bank: Bank) =>
    (
      await w.banks[bank].query<{ n: number }>(
        'SELECT count(*)::int AS n FROM pg_prepared_xacts WHERE database = current_database() AND starts_with(gid, $1)',
        [prefix],
      )
    ).rows[0]!.n;
  const dataDirs = w.clusters.map((c) => c.dataDir);
  const pids = coordinator.pid === undefined ? [] : [coordinator.pid];
  const rss = rssTrace(coordinator.pid);
  try {
    log(`[${target.label}] idle for ${IDLE_MS / 1000} s`);
    await sleep(IDLE_MS);
    const idleMemory = memoryOf((await scrape(coordinator.url)).gauges);

    proxy.cut();
    rss.set('build');
    const proxy0 = proxy.counts();
    const cpu0 = snapshot(dataDirs);
    log(`[${target.label}] bank_c cut; submitting ${size} transfers with ${concurrency} clients`);
    const t0 = performance.now();
    const answers = await build(coordinator.url, size, concurrency, expected, stopped, log);
    const buildMs = performance.now() - t0;
    const cpuBuild = used(snapshot(dataDirs), cpu0, pids);
    const atCut = await byStatus();
    const { gauges, ms: scrapeMs } = await scrape(coordinator.url);
    const preparedOnBankCAtCutEnd = await prepared('bank_c');
    const proxyDuringOutage = diffCounts(proxy.counts(), proxy0);
    log(
      `[${target.label}] built in ${(buildMs / 1000).toFixed(1)} s: ${[...answers].map(([k, n]) => `${n} × ${k}`).join(', ')}; ` +
        `log: ${[...atCut.statuses].map(([k, n]) => `${n} ${k}`).join(', ')} (${atCut.inDoubt} in doubt); ${preparedOnBankCAtCutEnd} prepared on bank_c; ` +
        `gauge in doubt ${gauges.get('tpc_in_doubt_transactions') ?? '?'}`,
    );

    const toCommit = [...answers].filter(([k]) => k === '201 committed' || k === '202 committing').reduce((a, [, n]) => a + n, 0);
    const already = await committed();
    if (target.logAdminUrl) await resetStatStatements([target.logAdminUrl]);
    proxy.restore();
    rss.set('drain');
    const restoredAt = performance.now();
    const proxy1 = proxy.counts();
    const cpu1 = snapshot(dataDirs);
    log(`[${target.label}] bank_c restored; ${already} already committed, waiting for ${toCommit}`);
    const curve: number[] = [];
    let firstCommitMs: number | null = null;
    let halfMs: number | null = null;
    let ninetyMs: number | null = null;
    let drainMs: number | null = null;
    let lastLog = 0;
    while (!stopped()) {
      const elapsed = performance.now() - restoredAt;
      const n = await committed();
      while (curve.length <= Math.floor(elapsed / 1000)) curve.push(n);
      if (firstCommitMs === null && n > already) firstCommitMs = elapsed;
      if (halfMs === null && n >= toCommit / 2) halfMs = elapsed;
      if (ninetyMs === null && n >= toCommit * 0.9) ninetyMs = elapsed;
      if (n >= toCommit) {
        const left = (await Promise.all(BANKS.map(prepared))).reduce((a, b) => a + b, 0);
        if (left === 0) {
          drainMs = performance.now() - restoredAt;
          break;
        }
      }
      if (elapsed > DRAIN_LIMIT_MS) break;
      if (elapsed - lastLog > 5_000) {
        lastLog = elapsed;
        log(`  drain: ${n}/${toCommit} committed after ${(elapsed / 1000).toFixed(0)} s`);
      }
      await sleep(POLL_MS);
    }
    const cpuDrain = used(snapshot(dataDirs), cpu1, pids);
    const proxyDuringDrain = diffCounts(proxy.counts(), proxy1);
    const rssByPhase = rss.stop();
    const hwmMiB = coordinator.pid === undefined ? Number.NaN : readStatus(coordinator.pid, 'VmHWM');
    log(
      `[${target.label}] drained in ${drainMs === null ? 'NOT within the limit' : `${(drainMs / 1000).toFixed(1)} s`}; ` +
        `${proxyDuringDrain.commitPreparedForwarded} COMMIT PREPARED sent to bank_c; RSS peak ${rssByPhase.drain.peak.toFixed(0)} MiB`,
    );
    if (target.logAdminUrl) {
      const statements = await statStatementsReport({ [`log (${target.label})`]: target.logAdminUrl }, 12);
      log(`[${target.label}] the log's statements during the drain (pg_stat_statements):\n${statements}`);
    }
    const drainMemory = memoryOf((await scrape(coordinator.url)).gauges);
    const end = await byStatus();
    const problems = await verify(w, accounts, expected);
    if (end.statuses.get('committed') !== toCommit) problems.push(`log: ${end.statuses.get('committed') ?? 0} committed of ${toCommit} decided`);
    return {
      label: target.label,
      revision: coordinator.revision,
      namespace: target.namespace,
      submitted: size,
      buildMs,
      answers,
      logAtCutEnd: atCut.statuses,
      inDoubtInLog: atCut.inDoubt,
      gauges,
      scrapeMs,
      memory: { idle: idleMemory, build: memoryOf(gauges), drain: drainMemory },
      preparedOnBankCAtCutEnd,
      proxyDuringOutage,
      firstCommitMs,
      halfMs,
      ninetyMs,
      drainMs,
      curve,
      toCommit,
      proxyDuringDrain,
      rss: rssByPhase,
      hwmMiB,
      cpuBuild,
      cpuDrain,
      problems,
      logAtEnd: end.statuses,
      heuristics: end.heuristic,
    };
  } finally {
    rss.stop();
    proxy.restore();
    await logDb.end();
  }
}
