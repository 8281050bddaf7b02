import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import type { BenchOptions } from './options.ts';
import type { ServiceSteps } from './metrics.ts';
import { REWARM_MS } from './runner.ts';
import { markdown, type Summary } from './stats.ts';

export interface Machine {
  nproc: number;
  memoryGiB: number;
  cpuModel: string;
  node: string;
  postgres: string;
  redis: string;
  date: string;
  /** 1, 5 and 15 minute load averages when the run started (others' work on a shared machine shows here). */
  loadBefore: string;
}

export function loadAverage(): string {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    return 'unknown';
  }
}

export function machine(postgres: string, redis: string, loadBefore: string): Machine {
  let cpuModel = cpus()[0]?.model ?? 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) cpuModel = m[1]!.trim();
  } catch {
    // not Linux: keep os.cpus()'s answer
  }
  return {
    nproc: cpus().length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    cpuModel,
    node: process.version,
    postgres,
    redis,
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    loadBefore,
  };
}

export interface RunReport {
  machine: Machine;
  /** The coordinator under test: where it ran from and its git revision; and the baseline's (variant d), if any. */
  coordinator: { root: string; revision: string };
  baseline: { root: string; revision: string } | null;
  options: BenchOptions;
  table: string;
  cpuTable: string;
  /** pg_stat_statements tables (--pg-stat-statements), or null. */
  statements: string | null;
  summaries: Summary[];
  /** The services' phase histograms over the measured rounds, as tables; null when no service variant ran. */
  servicePhases: string | null;
  /** Mean ms per step of the service (from /metrics) and of (b) (own timing), side by side. */
  stepComparison: string | null;
  preparedLeft: string[];
}

/** The variants as given, when they are not the default set (a run of (c) and (e) is a setup of its own). */
function chosenVariants(o: BenchOptions): string | null {
  const given = o.variants.join(',');
  return given === (o.baselineRoot ? 'a,b,c,d' : 'a,b,c') ? null : given;
}

/** One section per revision and setup: a rerun replaces its own, a new revision adds one (before/after stay side by side). */
export function sectionKey(o: BenchOptions, revision: string): string {
  const rev = /^[0-9a-f]{4,40}/.exec(revision)?.[0] ?? 'unknown';
  const dirty = revision.includes('uncommitted') ? '-dirty' : '';
  const variants = chosenVariants(o);
  return (
    `${rev}${dirty}-fsync-${o.fsync}-${o.service}-c${o.concurrency}${o.pgStatStatements ? '-pgss' : ''}${o.baselineRoot ? '-ab' : ''}` +
    `${variants ? `-${variants.replaceAll(',', '')}` : ''}`
  );
}

export function renderSection(r: RunReport): string {
  const o = r.options;
  const m = r.machine;
  const errors = r.summaries.flatMap((s) => [...s.errorMessages].map(([msg, n]) => `- (${s.variant}) ${n} × ${msg}`));
  const lines = [
    `### Run: fsync ${o.fsync}, coordinator ${o.service === 'child' ? 'in a child process' : 'in the benchmark process'}, ` +
      `${o.concurrency} client${o.concurrency === 1 ? '' : 's'}${o.pgStatStatements ? ', with pg_stat_statements (diagnosis)' : ''}`,
    '',
    `- date: ${m.date}`,
    `- coordinator under test: revision ${r.coordinator.revision}${r.options.coordinatorRoot ? ` (from ${r.coordinator.root})` : ''}` +
      (r.baseline ? `; baseline (d): revision ${r.baseline.revision} (from ${r.baseline.root}), own log database, same banks` : ''),
    `- machine: ${m.nproc} CPUs (${m.cpuModel}), ${m.memoryGiB} GiB RAM; Node ${m.node}; PostgreSQL ${m.postgres}; Redis ${m.redis}; ` +
      `load average before the run ${m.loadBefore}`,
    `- parameters: ${o.concurrency} concurrent client${o.concurrency === 1 ? '' : 's'}; ${o.rounds} rounds × ${o.roundMs / 1000} s per variant, ` +
      `variants alternating (${o.variants.join(', ')}, then backward, …); ${o.warmupMs / 1000} s unmeasured warm-up per variant` +
      `${o.warmupMs > 0 ? `, and ${REWARM_MS / 1000} s more before each of its rounds` : ''}; ` +
      `${o.accounts} accounts per bank; ${o.pool} connection${o.pool === 1 ? '' : 's'} per database (benchmark pools and service pools alike); ` +
      `fsync=${o.fsync}, full_page_writes=${o.fsync}, synchronous_commit=on`,
    `- command: \`npm run bench -- --fsync ${o.fsync} --service ${o.service} --concurrency ${o.concurrency} --rounds ${o.rounds} ` +
      `--round-seconds ${o.roundMs / 1000}${chosenVariants(o) ? ` --variants ${chosenVariants(o)}` : ''}` +
      `${o.coordinatorRoot ? ' --coordinator-root DIR' : ''}${o.baselineRoot ? ' --baseline-root DIR' : ''}` +
      `${o.pgStatStatements ? ' --pg-stat-statements' : ''}\``,
    '',
    r.table,
    '',
    'tx/s is the total of completed transfers over the total measured time; p50/p99/mean are client-side latencies of',
    'every completed transfer; × (a) is the throughput relative to (a), overall and per round (round i of a variant',
    'against round i of (a), which ran seconds before it).',
    '',
    'CPU ms per completed transfer ("CPU busy": share of the whole machine, every core; "machine": every process and the',
    'kernel; pgN: the postmaster and all its children; "not ours": every process outside this benchmark — on a shared',
    'machine, other people\'s work; "kernel, unattributed": the rest — interrupts, and processes that ended mid-round):',
    '',
    r.cpuTable,
    ...(o.variants.includes('h') || o.variants.includes('k')
      ? [
          '',
          '(h) and (k) run their coordinator (engine, workers, pools) inside the benchmark process: its CPU is in "bench process",',
          'with the load generator and the SDK, and "coordinator(s)" is only the idle child of (c). (b) does its protocol in the',
          "benchmark process too, so (h)'s and (k)'s bench process + clusters + Redis compare with (b)'s bench process + clusters.",
        ]
      : []),
  ];
  if (r.stepComparison)
    lines.push('', "Mean time per protocol step, ms: (b) timed by the benchmark, (c) from the service's `tpc_phase_duration_seconds`:", '', r.stepComparison);
  if (r.servicePhases) lines.push('', "The service's `tpc_phase_duration_seconds` over the measured rounds:", '', r.servicePhases);
  if (r.statements) lines.push('', 'pg_stat_statements over the measured rounds (all variants), costliest first:', '', r.statements);
  lines.push('', errors.length ? `Errors:\n\n${errors.join('\n')}` : 'Errors: none.');
  lines.push(
    '',
    r.preparedLeft.length
      ? `Prepared transactions left after the run (rolled back by the benchmark before teardown): ${r.preparedLeft.join(', ')}`
      : 'Prepared transactions left after the run: none.',
  );
  return lines.join('\n');
}

export function stepComparison(b: Summary | undefined, services: ServiceSteps[]): string | null {
  if (!b?.phases && services.length === 0) return null;
  const f = (n: number | undefined) => (n !== undefined && Number.isFinite(n) ? n.toFixed(2) : '–');
  const cols = (pick: (s: ServiceSteps) => number) => services.map((s) => f(pick(s)));
  const sum = b?.phases ? b.phases.prepare + b.phases.decide + b.phases.complete : undefined;
  const rows = [
    ['work + prepare (all branches, parallel)', f(b?.phases?.prepare), ...cols((s) => s.prepare)],
    ['decide (forced log write)', f(b?.phases?.decide), ...cols((s) => s.decide)],
    ['complete (COMMIT PREPARED, all branches, parallel)', f(b?.phases?.complete), ...cols((s) => s.complete)],
    ['sum of the three steps', f(sum), ...cols((s) => s.prepare + s.decide + s.complete)],
    ['engine total (+ waiting for the begin record, final log write)', '–', ...cols((s) => s.total)],
    ['client-side latency (+ HTTP, JSON, validation, queueing)', f(b?.mean), ...cols((s) => s.http)],
  ];
  return markdown(['step', '(b) bare', ...services.map((s) => `(${s.variant}) service`)], rows, [false, true, ...services.map(() => true)]);
}

const HEADER = `# Benchmark results

Produced by \`npm run bench\` (bench/transfers.ts). A run replaces the section of its own revision and
setup (between its markers) and appends one otherwise; the text outside the markers is written by hand.
`;

/** Replaces (or appends) this run's section of bench/RESULTS.md, leaving everything else as it is. */
export function writeResults(path: string, key: string, section: string): void {
  const begin = `<!-- bench:${key}:begin -->`;
  const end = `<!-- bench:${key}:end -->`;
  const block = `${begin}\n${section}\n${end}`;
  const text = existsSync(path) ? readFileSync(path, 'utf8') : HEADER;
  const i = text.indexOf(begin);
  const j = text.indexOf(end);
  const next = i !== -1 && j > i ? text.slice(0, i) + block + text.slice(j + end.length) : `${text.replace(/\n*$/, '\n')}\n${block}\n`;
  writeFileSync(path, next);
}
