/*
 * The backlog benchmark (`npm run bench -- --backlog [--backlog-size 10000]`), issue 13: recovery at
 * scale. bank_c sits behind a proxy (bench/pg-cut-proxy.ts) that resets every connection sending
 * COMMIT PREPARED while cut. N transfers (a debit on bank_a or bank_b, a credit on bank_c) are
 * submitted at --concurrency: each is decided, its phase 2 fails on bank_c, and it is answered 202
 * committing. Then bank_c is restored, and the drain is timed until the log holds every one
 * committed and no branch of the namespace is prepared on any bank. Reported: the drain time and
 * rate (target: under 30 s for 10 000, as the README promises), the coordinator's RSS idle, while
 * building and while draining (target: under 256 MiB throughout), CPU per part during the drain,
 * COMMIT PREPAREDs sent to bank_c for how many branches, and tpc_in_doubt_transactions at the end
 * of the outage. The money is checked account by account at the end of each run.
 * With --baseline-root, the same is run afterwards against the baseline coordinator (same N, same
 * banks, its own log database), the first coordinator stopped first: one after the other, not at once.
 */
import type { CpuUsed } from './cpu.ts';
import type { BenchOptions } from './options.ts';
import { machine, writeResults } from './report.ts';
import { markdown } from './stats.ts';
import { BACKLOG_TIMEOUT_MS, PHASES, runBacklogOnce, type BacklogRun, type Expected, type RunTarget } from './backlog-run.ts';
import { CLUSTER_NAMES, NAMESPACE, rollBackLeftovers, type World } from './world.ts';

// The issue's targets.
const MAX_DRAIN_MS = 30_000;
const MAX_RSS_MIB = 256;

const f = (n: number | null | undefined, digits = 0) => (n !== null && n !== undefined && Number.isFinite(n) ? n.toFixed(digits) : '–');
const s = (ms: number | null) => f(ms === null ? null : ms / 1000, 1);

function summaryTable(runs: BacklogRun[]): string {
  const row = (name: string, pick: (r: BacklogRun) => string) => [name, ...runs.map(pick)];
  const count = (m: Map<string, number>) => [...m].map(([k, n]) => `${n} ${k}`).join(', ') || '–';
  const rows = [
    row('answers to the submissions', (r) => count(r.answers)),
    row('build: s (tx/s)', (r) => `${s(r.buildMs)} (${f(r.submitted / (r.buildMs / 1000))})`),
    row('log at the end of the outage', (r) => count(r.logAtCutEnd)),
    row('flagged in doubt in the log then', (r) => String(r.inDoubtInLog)),
    row('tpc_in_doubt_transactions then (GET /metrics)', (r) => f(r.gauges.get('tpc_in_doubt_transactions'))),
    row(
      'tpc_prepared_branches{bank_c} / tpc_orphan_branches{bank_c} then',
      (r) => `${f(r.gauges.get('tpc_prepared_branches{resource="bank_c"}'))} / ${f(r.gauges.get('tpc_orphan_branches{resource="bank_c"}'))}`,
    ),
    row('that /metrics scrape took, ms', (r) => f(r.scrapeMs)),
    row('prepared on bank_c then (pg_prepared_xacts)', (r) => String(r.preparedOnBankCAtCutEnd)),
    row(
      'COMMIT PREPARED cut / let through during the outage',
      (r) => `${r.proxyDuringOutage.commitPreparedCut} / ${r.proxyDuringOutage.commitPreparedForwarded}`,
    ),
    row('new connections to bank_c during the outage', (r) => String(r.proxyDuringOutage.connections)),
    row('transactions to drain', (r) => String(r.toCommit)),
    row('first commit after the restore, s', (r) => s(r.firstCommitMs)),
    row('50 % / 90 % committed, s', (r) => `${s(r.halfMs)} / ${s(r.ninetyMs)}`),
    row('**drain, s** (all committed, nothing prepared)', (r) => `**${s(r.drainMs)}**`),
    row('**drain rate, tx/s**', (r) => `**${r.drainMs === null ? '–' : f(r.toCommit / (r.drainMs / 1000))}**`),
    row(
      'COMMIT PREPARED sent to bank_c during the drain',
      (r) => `${r.proxyDuringDrain.commitPreparedForwarded} (${f(r.proxyDuringDrain.commitPreparedForwarded / r.toCommit, 2)} per branch)`,
    ),
    row('new connections to bank_c during the drain', (r) => String(r.proxyDuringDrain.connections)),
    ...PHASES.map((p) => row(`coordinator RSS ${p}: median / peak, MiB`, (r) => `${f(r.rss[p].median)} / **${f(r.rss[p].peak)}**`)),
    row('coordinator VmHWM at the end, MiB', (r) => f(r.hwmMiB)),
    ...PHASES.map((p) =>
      row(`heap used / heap total / external / RSS at the end of ${p === 'build' ? 'the outage' : p === 'idle' ? 'idling' : 'the drain'}, MiB`, (r) =>
        [r.memory[p].heapUsed, r.memory[p].heapTotal, r.memory[p].external, r.memory[p].rss].map((x) => f(x)).join(' / '),
      ),
    ),
    row('log at the end', (r) => count(r.logAtEnd)),
    row('heuristic hazards', (r) => String(r.heuristics)),
    row('verification (money, every transfer on both banks)', (r) => (r.problems.length ? `FAILED (${r.problems.length})` : 'ok')),
  ];
  return markdown(['', ...runs.map((r) => `${r.label} ${r.revision}`)], rows, [false, ...runs.map(() => true)]);
}

function cpuTable(runs: BacklogRun[], pick: (r: BacklogRun) => { cpu: CpuUsed; ms: number; tx: number }): string {
  const parts: [string, (c: CpuUsed) => number][] = [
    ['coordinator', (c) => c.coordinator],
    ...CLUSTER_NAMES.map((name, i): [string, (c: CpuUsed) => number] => [name, (c) => c.clusters[i] ?? Number.NaN]),
    ['Redis', (c) => c.redis],
    ['benchmark (clients, polling, the proxy)', (c) => c.bench],
    ['not ours (other processes)', (c) => c.foreign],
    ['machine (every process and the kernel)', (c) => c.machine],
  ];
  const rows = parts.map(([name, get]) => [
    name,
    ...runs.flatMap((r) => {
      const { cpu, ms, tx } = pick(r);
      return [`${f(get(cpu), 1)} s`, f(get(cpu) / (ms / 1000), 2), f((get(cpu) * 1000) / tx, 2)];
    }),
  ]);
  rows.push(['machine busy', ...runs.flatMap((r) => [`${f(pick(r).cpu.busyShare * 100)} %`, '', ''])]);
  const head = ['part', ...runs.flatMap((r) => [`${r.label}: CPU`, 'cores', 'ms per tx'])];
  return markdown(
    head,
    rows,
    head.map((_, i) => i > 0),
  );
}

function verdicts(runs: BacklogRun[]): string[] {
  return runs.map((r) => {
    const peak = Math.max(...PHASES.map((p) => r.rss[p].peak), r.hwmMiB);
    const misses = [
      r.drainMs === null ? 'the drain did not finish' : r.drainMs > MAX_DRAIN_MS ? `drain ${s(r.drainMs)} s (target < ${MAX_DRAIN_MS / 1000} s)` : null,
      peak >= MAX_RSS_MIB ? `RSS peaked at ${f(peak)} MiB (target < ${MAX_RSS_MIB})` : null,
      r.problems.length ? `verification: ${r.problems.join('; ')}` : null,
      r.heuristics ? `${r.heuristics} heuristic hazards` : null,
    ].filter((x): x is string => x !== null);
    return `- ${r.label} ${r.revision}: ${misses.length ? `MISSED: ${misses.join('; ')}` : 'met every target'}`;
  });
}

/** Committed transactions at each second of the drain (every 5th in a long one): where the time goes (waiting for retries, or working). */
function curves(runs: BacklogRun[]): string[] {
  return runs.map((r) => {
    const step = r.curve.length > 20 ? 5 : 1;
    const at = r.curve.map((n, i) => [i, n] as const).filter(([i]) => i % step === 0 || i === r.curve.length - 1);
    return `- ${r.label}: ${at.map(([i, n]) => `${i} s: ${n}`).join(', ')}`;
  });
}

export async function runBacklog(
  options: BenchOptions,
  w: World,
  control: { readonly stopped: boolean },
  log: (msg: string) => void,
  resultsPath: string,
  loadBefore: string,
): Promise<void> {
  const proxy = w.bankCProxy;
  if (!proxy) throw new Error('--backlog needs the world started with bank_c behind the cut proxy');
  const size = options.backlogSize;
  const expected: Expected = {
    bank_a: new Int32Array(options.accounts + 1),
    bank_b: new Int32Array(options.accounts + 1),
    bank_c: new Int32Array(options.accounts + 1),
  };
  const targets: (() => Promise<RunTarget>)[] = [
    () =>
      Promise.resolve({
        label: 'coordinator',
        coordinator: w.coordinator,
        namespace: NAMESPACE,
        logUrl: w.urls.tpc_log,
        logAdminUrl: options.pgStatStatements ? w.adminUrls.tpc_log : undefined,
      }),
  ];
  const baselineRoot = options.baselineRoot;
  if (baselineRoot) {
    targets.push(async () => {
      await w.coordinator.close(); // one at a time: the first must not compete for the CPU
      const namespace = `${NAMESPACE}-baseline`;
      const { coordinator, logUrl } = await w.startCoordinatorFrom(baselineRoot, namespace, 'tpc_log_baseline');
      log(`baseline coordinator (${coordinator.revision}) listening at ${coordinator.url}`);
      return { label: 'baseline', coordinator, namespace, logUrl };
    });
  }
  const runs: BacklogRun[] = [];
  const started: RunTarget[] = [];
  for (const make of targets) {
    if (control.stopped) break;
    const target = await make();
    started.push(target);
    runs.push(await runBacklogOnce(w, proxy, target, size, options.concurrency, options.accounts, expected, () => control.stopped, log));
  }
  if (runs.length === 0) return;

  const summary = summaryTable(runs);
  const cpuDrain = cpuTable(runs, (r) => ({ cpu: r.cpuDrain, ms: r.drainMs ?? Number.NaN, tx: r.toCommit }));
  const cpuBuild = cpuTable(runs, (r) => ({ cpu: r.cpuBuild, ms: r.buildMs, tx: r.submitted }));
  const judged = verdicts(runs);
  const drainCurves = curves(runs);
  process.stdout.write(
    `\n${summary}\n\nCPU during the drain:\n${cpuDrain}\n\nCPU while building the backlog:\n${cpuBuild}\n\n` +
      `Committed, by second of the drain:\n${drainCurves.join('\n')}\n\n${judged.join('\n')}\n`,
  );

  await Promise.all(started.map((t) => t.coordinator.close()));
  const preparedLeft = await w.preparedLeft();
  if (preparedLeft.length) await rollBackLeftovers(w);
  process.stdout.write(`\nprepared transactions left after the run: ${preparedLeft.length}\n`);

  if (!options.write) return;
  const m = machine(w.postgresVersion, w.redisVersion, loadBefore);
  const section = [
    `### Backlog: ${size} in-doubt transactions drained after bank_c returns (issue 13)`,
    '',
    `- date: ${m.date}; ${runs.map((r) => `${r.label} revision ${r.revision}`).join(', ')}; ${options.service === 'child' ? 'in a child process' : 'in the benchmark process'}` +
      `${runs.length > 1 ? ', one after the other (the first stopped before the second started), same banks, own log databases' : ''}`,
    `- machine: ${m.nproc} CPUs (${m.cpuModel}), ${m.memoryGiB} GiB RAM; Node ${m.node}; PostgreSQL ${m.postgres}; Redis ${m.redis}; load average before the run ${m.loadBefore}`,
    `- parameters: ${size} transfers at ${options.concurrency} clients, each a debit on bank_a or bank_b and a credit on bank_c (an account of its own), ` +
      `${BACKLOG_TIMEOUT_MS / 1000} s deadline; bank_c's cluster with max_prepared_transactions=${size + 128}; ${options.pool} connections per database; ` +
      `the service's default retry policy; fsync=${options.fsync}`,
    `- command: \`npm run bench -- --backlog --backlog-size ${size} --concurrency ${options.concurrency} --fsync ${options.fsync}` +
      `${options.coordinatorRoot ? ' --coordinator-root DIR' : ''}${options.baselineRoot ? ' --baseline-root DIR' : ''}\``,
    '- the cut: bank_c behind bench/pg-cut-proxy.ts, which reads the frontend messages and, while cut, resets the connection of any',
    '  COMMIT PREPARED (simple query or Parse) before it reaches the server; everything else passes. Restored once every transfer was answered.',
    '',
    summary,
    '',
    'The drain is timed from the restore until the log holds every decided transaction `committed` and no branch of the namespace is',
    'prepared on any bank (polled every 250 ms). RSS is VmRSS of the coordinator process, sampled every 100 ms: "idle" is the 5 s before',
    'the load. COMMIT PREPAREDs are counted by the proxy; more than one per branch are duplicate drives.',
    '',
    'CPU during the drain ("ms per tx": per drained transaction):',
    '',
    cpuDrain,
    '',
    "CPU while building the backlog (includes the outage's failed COMMIT PREPARED retries and the reconnections they cause):",
    '',
    cpuBuild,
    '',
    'Committed transactions by second of the drain:',
    '',
    ...drainCurves,
    '',
    ...judged,
    '',
    preparedLeft.length ? `Prepared transactions left after the run: ${preparedLeft.length}` : 'Prepared transactions left after the run: none.',
  ].join('\n');
  const rev = /^[0-9a-f]{4,40}/.exec(w.coordinator.revision)?.[0] ?? 'unknown';
  writeResults(resultsPath, `backlog-${rev}-n${size}-fsync-${options.fsync}-${options.service}${baselineRoot ? '-ab' : ''}`, section);
  log(`wrote ${resultsPath}`);
}
