/*
 * The overload benchmark (`npm run bench -- --overload`): the service at its calm load (--concurrency
 * clients, 32 by default), then at each of --overload-clients (400 and 1000 by default), with the
 * same service configuration throughout (pools of --pool, which defaults to the calm concurrency).
 * It reports, per stage: commits/s and the ratio to the calm rate (the target is 0.7× or better),
 * refusals (503 overloaded) and their latency, 409s, answers after the 5 s deadline (must be 0),
 * the coordinator's peak RSS, and /healthz and /readyz latency measured during the load (target:
 * within 100 ms).
 */
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { snapshot, used, type CpuUsed } from './cpu.ts';
import { OVERLOAD_TIMEOUT_MS, runClients, startProber, startRssSampler, type ProbeTimes, type StageCounts } from './overload-client.ts';
import type { BenchOptions } from './options.ts';
import { diff, meanMs, scrapePhases, type PhaseSnapshot } from './metrics.ts';
import { machine, writeResults } from './report.ts';
import { markdown, percentile } from './stats.ts';
import { rollBackLeftovers, type World } from './world.ts';

// The issue's targets for 400–1000 clients.
const MIN_RATIO = 0.7;
const MAX_PROBE_MS = 100;

export interface StageResult extends StageCounts {
  clients: number;
  elapsedMs: number;
  rssPeakMiB: number;
  probes: ProbeTimes;
  /** The service's tpc_admission_refusals_total over the stage, by reason. */
  refusalReasons: Map<string, number>;
  /** CPU used during the stage: the coordinator's, and everyone else's on a shared machine. */
  cpu: CpuUsed;
  /** The service's tpc_phase_duration_seconds over the stage: where an admitted transaction's time went. */
  phases: PhaseSnapshot;
  /** Worst delay of this benchmark's own event loop, ms: the clients' latencies are only as good as it is small. */
  benchLoopDelayMaxMs: number;
}

async function refusalReasons(url: string): Promise<Map<string, number>> {
  const byReason = new Map<string, number>();
  try {
    const text = await (await fetch(`${url}/metrics`)).text();
    for (const m of text.matchAll(/^tpc_admission_refusals_total\{[^}]*reason="([^"]+)"[^}]*\} (\S+)$/gm)) {
      byReason.set(m[1]!, (byReason.get(m[1]!) ?? 0) + Number(m[2]));
    }
  } catch {
    // an unreadable /metrics leaves the breakdown empty; the clients' own counts still stand
  }
  return byReason;
}

async function runStage(w: World, options: BenchOptions, clients: number, durationMs: number, stopped: () => boolean): Promise<StageResult> {
  const before = await refusalReasons(w.coordinator.url);
  const phasesBefore = await scrapePhases(w.coordinator.url);
  const dataDirs = w.clusters.map((c) => c.dataDir);
  const pids = w.coordinator.pid === undefined ? [] : [w.coordinator.pid];
  const cpu0 = snapshot(dataDirs);
  const rss = startRssSampler(w.coordinator.pid);
  const prober = await startProber(w.coordinator.url);
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  const t0 = performance.now();
  const counts = await runClients(w.coordinator.url, clients, durationMs, options.accounts, stopped);
  const elapsedMs = performance.now() - t0;
  loop.disable();
  const cpu = used(snapshot(dataDirs), cpu0, pids);
  const probes = await prober.stop();
  const rssPeakMiB = rss.stop();
  const after = await refusalReasons(w.coordinator.url);
  const phases = diff(await scrapePhases(w.coordinator.url), phasesBefore);
  const reasons = new Map([...after].map(([k, v]) => [k, v - (before.get(k) ?? 0)] as const).filter(([, v]) => v > 0));
  return { ...counts, clients, elapsedMs, rssPeakMiB, probes, refusalReasons: reasons, cpu, phases, benchLoopDelayMaxMs: loop.max / 1e6 };
}

const f = (n: number, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : '–');
const p = (values: number[], q: number) =>
  percentile(
    [...values].sort((a, b) => a - b),
    q,
  );
const rate = (s: StageResult) => (s.commits / s.elapsedMs) * 1000;

function table(stages: StageResult[]): string {
  const calm = stages[0] ? rate(stages[0]) : Number.NaN;
  const head = [
    'clients',
    'commits/s',
    '× calm',
    'commit p50 ms',
    'commit p99 ms',
    'refusals',
    'refusal p50 ms',
    'refusal p99 ms',
    '409s',
    'after deadline',
    'in service: total ms',
    'prepare ms',
    'decide ms',
    'complete ms',
    'other errors',
    'coordinator RSS peak MiB',
    'coordinator cores',
    'coordinator CPU ms per answer',
    'bench cores',
    'machine busy %',
    'not ours, cores',
    '/healthz p99 ms',
    '/healthz max ms',
    '/readyz p99 ms',
    '/readyz max ms',
  ];
  const rows = stages.map((s) => [
    String(s.clients),
    f(rate(s)),
    f(rate(s) / calm, 2),
    f(p(s.commitLatencies, 0.5), 1),
    f(p(s.commitLatencies, 0.99), 1),
    String(s.refusals),
    f(p(s.refusalLatencies, 0.5), 1),
    f(p(s.refusalLatencies, 0.99), 1),
    String(s.aborted),
    String(s.late),
    ...['total', 'prepare', 'decide', 'complete'].map((ph) => f(meanMs(s.phases, ph), 1)),
    String([...s.errors.values()].reduce((a, b) => a + b, 0) - s.aborted),
    f(s.rssPeakMiB),
    f(s.cpu.coordinator / (s.elapsedMs / 1000), 2),
    f((s.cpu.coordinator * 1000) / (s.commits + s.refusals + s.aborted), 3),
    f(s.cpu.bench / (s.elapsedMs / 1000), 2),
    f(s.cpu.busyShare * 100),
    f(s.cpu.foreign / (s.elapsedMs / 1000), 2),
    f(p(s.probes.healthz, 0.99), 1),
    f(Math.max(...s.probes.healthz), 1),
    f(p(s.probes.readyz, 0.99), 1),
    f(Math.max(...s.probes.readyz), 1),
  ]);
  return markdown(
    head,
    rows,
    head.map((_, i) => i > 0),
  );
}

/** Whether each overload stage met the issue's targets, one line each. */
function verdicts(stages: StageResult[]): string[] {
  const calm = stages[0];
  if (!calm) return [];
  return stages.slice(1).map((s) => {
    const ratio = rate(s) / rate(calm);
    const probeMax = Math.max(...s.probes.healthz, ...s.probes.readyz);
    const misses = [
      ratio < MIN_RATIO ? `commits ${f(ratio, 2)}× calm (target ≥ ${MIN_RATIO})` : null,
      s.late > 0 ? `${s.late} answers after the deadline` : null,
      s.aborted > 0 ? `${s.aborted} × 409` : null,
      probeMax > MAX_PROBE_MS ? `a probe took ${f(probeMax)} ms (target ≤ ${MAX_PROBE_MS})` : null,
      s.probes.failures.size > 0 ? `probes failed: ${[...s.probes.failures].map(([k, n]) => `${n} × ${k}`).join(', ')}` : null,
    ].filter((x): x is string => x !== null);
    return `- ${s.clients} clients: ${misses.length ? `MISSED: ${misses.join('; ')}` : 'met every target'}`;
  });
}

export async function runOverload(
  options: BenchOptions,
  w: World,
  control: { readonly stopped: boolean },
  log: (msg: string) => void,
  resultsPath: string,
  loadBefore: string,
): Promise<void> {
  const stopped = () => control.stopped;
  if (options.warmupMs > 0) {
    const warm = await runClients(w.coordinator.url, options.concurrency, options.warmupMs, options.accounts, stopped);
    log(`warm-up: ${warm.commits} commits, ${warm.refusals} refusals`);
  }
  const stages: StageResult[] = [];
  for (const clients of [options.concurrency, ...options.overloadClients]) {
    if (control.stopped) return;
    log(`stage: ${clients} clients for ${options.overloadMs / 1000} s`);
    const s = await runStage(w, options, clients, options.overloadMs, stopped);
    stages.push(s);
    log(
      `  ${f(rate(s))} commits/s, ${s.refusals} refusals, ${s.aborted} × 409, ${s.late} after the deadline, RSS peak ${f(s.rssPeakMiB)} MiB, ` +
        `the benchmark's own event loop delayed up to ${f(s.benchLoopDelayMaxMs)} ms`,
    );
    if (s.lateSent.length) {
      const bySecond = new Map<string, number>();
      for (const l of s.lateSent) bySecond.set(`${Math.floor(l.at / 1000)}s:${l.status}`, (bySecond.get(`${Math.floor(l.at / 1000)}s:${l.status}`) ?? 0) + 1);
      log(`  late answers by the second they were sent in, and status: ${[...bySecond].map(([k, n]) => `${k} ×${n}`).join(', ')}`);
      const slowSend = s.lateSent.filter((l) => l.sentMs > 1_000).length;
      log(
        `  of which ${slowSend} took over 1 s to be written (connection setup); median write ${f(
          p(
            s.lateSent.map((l) => l.sentMs),
            0.5,
          ),
        )} ms`,
      );
      const slowConnect = s.lateSent.filter((l) => l.connectMs > 1_000).length;
      log(
        `  connections: ${slowConnect} took over 1 s to establish; median connect ${f(
          p(
            s.lateSent.map((l) => l.connectMs),
            0.5,
          ),
        )} ms, median first byte ${f(
          p(
            s.lateSent.map((l) => l.firstByteMs),
            0.5,
          ),
        )} ms`,
      );
    }
  }
  const rendered = table(stages);
  const judged = verdicts(stages);
  const reasons = stages.map(
    (s) => `- ${s.clients} clients: ${s.refusalReasons.size ? [...s.refusalReasons].map(([k, n]) => `${n} ${k}`).join(', ') : 'none'}`,
  );
  const errors = stages.flatMap((s) => [...s.errors].map(([msg, n]) => `- (${s.clients} clients) ${n} × ${msg}`));
  process.stdout.write(`\n${rendered}\n\n${judged.join('\n')}\n\nRefusals by reason (service metrics):\n${reasons.join('\n')}\n`);
  if (errors.length) process.stdout.write(`\nErrors:\n${errors.join('\n')}\n`);

  await w.coordinator.close(); // it drains what it drives; anything still prepared is a finding
  const preparedLeft = await w.preparedLeft();
  if (preparedLeft.length) await rollBackLeftovers(w);
  process.stdout.write(`\nprepared transactions left after the run: ${preparedLeft.length}\n`);

  if (!options.write) return;
  const m = machine(w.postgresVersion, w.redisVersion, loadBefore);
  const section = [
    `### Overload: ${options.concurrency} clients (calm), then ${options.overloadClients.join(' and ')}`,
    '',
    `- date: ${m.date}; coordinator revision ${w.coordinator.revision}, ${options.service === 'child' ? 'in a child process' : 'in the benchmark process'}`,
    `- machine: ${m.nproc} CPUs (${m.cpuModel}), ${m.memoryGiB} GiB RAM; Node ${m.node}; PostgreSQL ${m.postgres}; Redis ${m.redis}; load average before the run ${m.loadBefore}`,
    `- parameters: ${options.overloadMs / 1000} s per stage after a ${options.warmupMs / 1000} s warm-up; ${options.pool} connections per database; ` +
      `default admission knobs; transfers over three banks with a ${OVERLOAD_TIMEOUT_MS / 1000} s deadline; refused clients wait Retry-After plus up to 0.5 s; fsync=${options.fsync}`,
    `- command: \`npm run bench -- --overload --concurrency ${options.concurrency} --overload-clients ${options.overloadClients.join(',')} ` +
      `--overload-seconds ${options.overloadMs / 1000} --fsync ${options.fsync}\``,
    '',
    rendered,
    '',
    'Latencies are client-side. "after deadline": answers (or failures) that came later than the transaction\'s deadline.',
    '"coordinator CPU ms per answer": its CPU over the stage divided by every answer it gave (commits, refusals, 409s);',
    '"not ours": CPU of processes outside this benchmark (other people\'s work on a shared machine).',
    '/healthz and /readyz were probed every 100 ms during each stage, from a process of their own (bench/overload-prober.ts).',
    '',
    ...judged,
    '',
    "Refusals by reason (the service's `tpc_admission_refusals_total`):",
    '',
    ...reasons,
    '',
    errors.length ? `Errors:\n\n${errors.join('\n')}` : 'Errors: none.',
    '',
    preparedLeft.length ? `Prepared transactions left after the run: ${preparedLeft.join(', ')}` : 'Prepared transactions left after the run: none.',
  ].join('\n');
  const rev = /^[0-9a-f]{4,40}/.exec(w.coordinator.revision)?.[0] ?? 'unknown';
  writeResults(resultsPath, `overload-${rev}-fsync-${options.fsync}-${options.service}`, section);
  log(`wrote ${resultsPath}`);
}
