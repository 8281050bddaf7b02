/*
 * The transfers benchmark: concurrent transfers over three databases, committed three ways,
 * alternating in rounds (forward, then backward) so that machine noise hits every variant alike:
 *   (a) non-atomic: a local transaction on each database, in parallel (the baseline);
 *   (b) the bare 2PC protocol inline: prepare all, one forced log insert, commit prepared all;
 *   (c) the coordinator through POST /v1/transactions;
 *   (j) (b) behind a bare node:http server taking (c)'s requests: the floor of any REST service;
 *   (e) the same with a fresh Idempotency-Key per request (keyed begins are forced), on request;
 *   (g) the SDK over REST and (h) the SDK with an embedded coordinator, on request (sdk-variants.ts).
 * It starts its own Postgres clusters, Redis and coordinator, and tears them all down at the end,
 * on error and on Ctrl-C. Options: `npm run bench -- --help`. With --overload it measures the
 * service alone under 400 and 1000 clients against its calm rate instead (bench/overload.ts); with
 * --backlog it builds a backlog of decided transactions and measures its drain (bench/backlog.ts).
 */
import { fileURLToPath } from 'node:url';
import { snapshot, used, type CpuSnapshot } from './cpu.ts';
import { resetStatStatements, statStatementsReport } from './diagnose.ts';
import { addPhases, diff, scrapePhases, servicePhases, type PhaseSnapshot } from './metrics.ts';
import { parseOptions, type BenchOptions } from './options.ts';
import { runBacklog } from './backlog.ts';
import { runOverload } from './overload.ts';
import { loadAverage, machine, renderSection, sectionKey, stepComparison, writeResults } from './report.ts';
import { merge, REWARM_MS, timedRun, type RunSample } from './runner.ts';
import { abLines, againstBareLines, cpuTable, summarize, table, withRatios } from './stats.ts';
import { makeVariants, randomTransfer, type Variant } from './variants.ts';
import { CLUSTER_NAMES, rollBackLeftovers, startWorld, type World } from './world.ts';

const RESULTS = fileURLToPath(new URL('./RESULTS.md', import.meta.url));
const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);

const control = { stopped: false };
let closeWorld: (() => Promise<void>) | undefined;
let interrupted = 0;

function onSignal(signal: NodeJS.Signals): void {
  interrupted++;
  control.stopped = true;
  if (interrupted === 1) {
    log(`${signal}: stopping the clients and tearing the world down (again to exit at once)`);
  } else {
    log('exiting without cleanup');
    process.exit(130);
  }
}

async function measure(options: BenchOptions, w: World, loadBefore: string, last: boolean): Promise<void> {
  const variants = await makeVariants(w, options.variants, options.concurrency);
  const next = () => randomTransfer(options.accounts);
  const samples = new Map<Variant['name'], RunSample[]>(variants.map((v) => [v.name, []]));
  const phasesOf = new Map<Variant['name'], PhaseSnapshot>();
  const dataDirs = w.clusters.map((c) => c.dataDir);
  const pids = [w.coordinator.pid, w.baseline?.pid, w.bareHttp?.pid].filter((p): p is number => p !== undefined);
  const cpu = { snapshot: () => snapshot(dataDirs), used: (a: CpuSnapshot, b: CpuSnapshot) => used(a, b, pids) };
  try {
    if (options.warmupMs > 0) {
      for (const v of variants) {
        if (control.stopped) return;
        const s = await timedRun(v, next, options.concurrency, options.warmupMs, control, cpu);
        log(`warm-up (${v.name}): ${s.completed} tx, ${s.errors} errors`);
      }
    }
    if (options.pgStatStatements) await resetStatStatements(Object.values(w.adminUrls));
    for (let round = 1; round <= options.rounds; round++) {
      // Forward, then backward: whatever a round leaves to the next (autovacuum, the checkpointer)
      // falls on each neighbour alike. In one fixed order, the same code as (c) and (d) came out
      // 1.62× apart; with the re-warm-up below and alternating rounds, at 0.79–1.08 by round.
      for (const v of round % 2 === 1 ? variants : [...variants].reverse()) {
        if (control.stopped) return;
        // Unmeasured: the coordinators' pools close connections idle for 30 s (the benchmark's own
        // keep theirs, world.ts), and a variant can wait longer than that for its next round; it would pay
        // for opening them again (backend start-up, empty catalog and plan caches) in its measured
        // time, which no steady load does. In an A/A run without it, (d) ran at 87–127 tx/s in the
        // rounds it had waited 33 s for, against 257–310 in the others.
        if (options.warmupMs > 0) await timedRun(v, next, options.concurrency, REWARM_MS, control, cpu);
        const before = v.serviceUrl ? await scrapePhases(v.serviceUrl) : null;
        const s = await timedRun(v, next, options.concurrency, options.roundMs, control, cpu);
        samples.get(v.name)!.push(s);
        if (v.serviceUrl && before) phasesOf.set(v.name, addPhases(phasesOf.get(v.name), diff(await scrapePhases(v.serviceUrl), before)));
        const tps = (s.completed / s.elapsedMs) * 1000;
        const foreign = s.cpu.foreign / (s.elapsedMs / 1000);
        log(
          `round ${round}/${options.rounds} (${v.name}): ${tps.toFixed(0)} tx/s, ${s.errors} errors, ` +
            `machine ${Math.round(s.cpu.busyShare * 100)} % busy, other processes ${foreign.toFixed(2)} cores`,
        );
      }
    }
  } finally {
    await Promise.all(variants.map((v) => v.close()));
  }

  const summaries = withRatios(variants.map((v) => summarize(v, merge(samples.get(v.name)!, dataDirs.length))));
  const observed = variants.flatMap((v) => {
    const phases = phasesOf.get(v.name);
    return phases ? [{ variant: v.name, label: v.label, phases }] : [];
  });
  const phases = servicePhases(observed, (variant) => summaries.find((s) => s.variant === variant)?.mean ?? Number.NaN);
  const steps = stepComparison(
    summaries.find((s) => s.variant === 'b'),
    phases.steps,
  );
  const comparisons = [abLines(summaries, 0), againstBareLines(summaries, options.concurrency)].filter((x): x is string => x !== null);
  const rendered = [table(summaries), ...comparisons].join('\n\n');
  const cpuRendered = cpuTable(summaries, CLUSTER_NAMES);
  process.stdout.write(`\n${rendered}\n\nCPU ms per transfer:\n${cpuRendered}\n`);
  if (steps) process.stdout.write(`\nMean ms per step:\n${steps}\n`);
  if (phases.tables) process.stdout.write(`\nService tpc_phase_duration_seconds (measured rounds):\n${phases.tables}\n`);
  for (const s of summaries) for (const [msg, n] of s.errorMessages) process.stdout.write(`(${s.variant}) ${n} × ${msg}\n`);
  const statements = options.pgStatStatements ? await statStatementsReport(w.adminUrls) : null;
  if (statements) process.stdout.write(`\npg_stat_statements over the measured rounds:\n${statements}\n`);

  // The services first (they drain what they drive), then whatever is still prepared is a finding.
  // Before another measurement the services stay up: what they still drive is given 15 s to finish.
  if (last) await Promise.all([w.coordinator.close(), w.baseline?.close(), w.bareHttp?.close()]);
  else for (let waited = 0; waited < 15_000 && (await w.preparedLeft()).length > 0; waited += 250) await new Promise((r) => setTimeout(r, 250));
  const preparedLeft = await w.preparedLeft();
  if (preparedLeft.length) {
    log(`prepared transactions left behind: ${preparedLeft.length}; rolling them back`);
    await rollBackLeftovers(w);
  }
  process.stdout.write(`\nprepared transactions left after the run: ${preparedLeft.length}\n`);

  if (options.write) {
    const section = renderSection({
      machine: machine(w.postgresVersion, w.redisVersion, loadBefore),
      coordinator: { root: w.coordinator.root, revision: w.coordinator.revision },
      baseline: w.baseline ? { root: w.baseline.root, revision: w.baseline.revision } : null,
      options,
      table: rendered,
      cpuTable: cpuRendered,
      statements,
      summaries,
      servicePhases: phases.tables,
      stepComparison: steps,
      preparedLeft,
    });
    writeResults(RESULTS, sectionKey(options, w.coordinator.revision), section);
    log(`wrote ${RESULTS}`);
  }
}

/** A crash (in process, the coordinator's own code runs here) still tears the world down. */
function onCrash(err: unknown): void {
  process.stderr.write(`bench crashed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  control.stopped = true;
  const timer = setTimeout(() => process.exit(1), 30_000);
  void (closeWorld?.() ?? Promise.resolve()).finally(() => {
    clearTimeout(timer);
    process.exit(1);
  });
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2), process.env);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('uncaughtException', onCrash);
  process.on('unhandledRejection', onCrash);
  const started = Date.now();
  const loadBefore = loadAverage();
  try {
    const world = await startWorld(options, log, (close) => {
      closeWorld = close;
    });
    if (!control.stopped && options.backlog) await runBacklog(options, world, control, log, RESULTS, loadBefore);
    else if (!control.stopped && options.overload) await runOverload(options, world, control, log, RESULTS, loadBefore);
    else if (!control.stopped) {
      // The one-client round: latency without queueing, for the variants that have a p50 aim, and
      // (i), the floor of the SDK's interactive shape, and (j), the floor of a REST service.
      const oneClient = options.variants.filter((v) => ['b', 'c', 'd', 'h', 'i', 'j', 'k'].includes(v));
      const latency = options.concurrency > 1 && options.latencyRounds > 0 && oneClient.length > 1;
      await measure(options, world, loadBefore, !latency);
      if (latency && !control.stopped) {
        log(`one-client round: ${oneClient.join(', ')}`);
        await measure(
          { ...options, concurrency: 1, variants: oneClient, rounds: options.latencyRounds, warmupMs: Math.min(options.warmupMs, 1000) },
          world,
          loadBefore,
          true,
        );
      }
    }
  } finally {
    log('tearing down');
    await closeWorld?.();
    log(`done in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  }
  return control.stopped ? 130 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
