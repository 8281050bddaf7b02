import type { RunSample } from './runner.ts';
import type { Variant } from './variants.ts';

export interface Summary {
  variant: Variant['name'];
  label: string;
  tps: number;
  minRoundTps: number;
  maxRoundTps: number;
  p50: number;
  p99: number;
  mean: number;
  completed: number;
  errors: number;
  /** Throughput relative to variant (a), when (a) ran: overall, and the lowest and highest of the rounds. */
  ratio: number;
  roundRatioMin: number;
  roundRatioMax: number;
  perRoundTps: number[];
  /** p50 latency of each round, ms. */
  perRoundP50: number[];
  /** Share of the machine's CPU that was busy (every process, every core). */
  busyShare: number;
  /** CPU ms per completed transfer, by owner (see cpu.ts). */
  cpuMsPerTx: { machine: number; clusters: number[]; redis: number; bench: number; coordinator: number; foreign: number };
  /** Mean ms of each step, for variants that time their own steps (b). */
  phases: { prepare: number; decide: number; complete: number } | null;
  errorMessages: Map<string, number>;
}

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank]!;
}

export function summarize(variant: Variant, s: RunSample & { perRoundTps: number[]; perRoundP50: number[] }): Summary {
  const sorted = Float64Array.from(s.latencies).sort();
  const values = Array.from(sorted);
  const perTx = (seconds: number) => (s.completed ? (seconds * 1000) / s.completed : Number.NaN);
  return {
    variant: variant.name,
    label: variant.label,
    tps: s.elapsedMs > 0 ? (s.completed / s.elapsedMs) * 1000 : 0,
    minRoundTps: Math.min(...s.perRoundTps),
    maxRoundTps: Math.max(...s.perRoundTps),
    p50: percentile(values, 0.5),
    p99: percentile(values, 0.99),
    mean: values.length ? values.reduce((a, b) => a + b, 0) / values.length : Number.NaN,
    completed: s.completed,
    errors: s.errors,
    ratio: Number.NaN,
    roundRatioMin: Number.NaN,
    roundRatioMax: Number.NaN,
    perRoundTps: s.perRoundTps,
    perRoundP50: s.perRoundP50,
    busyShare: s.cpu.busyShare,
    cpuMsPerTx: {
      machine: perTx(s.cpu.machine),
      clusters: s.cpu.clusters.map(perTx),
      redis: perTx(s.cpu.redis),
      bench: perTx(s.cpu.bench),
      coordinator: perTx(s.cpu.coordinator),
      foreign: perTx(s.cpu.foreign),
    },
    phases:
      s.phaseCount > 0
        ? { prepare: s.phaseSums.prepare / s.phaseCount, decide: s.phaseSums.decide / s.phaseCount, complete: s.phaseSums.complete / s.phaseCount }
        : null,
    errorMessages: s.errorMessages,
  };
}

export function withRatios(summaries: Summary[]): Summary[] {
  const base = summaries.find((s) => s.variant === 'a');
  return summaries.map((s) => {
    // Round i of each variant ran within seconds of round i of (a): their ratio shrugs off slow drifts of the machine.
    const perRound = s.perRoundTps.map((t, i) => t / (base?.perRoundTps[i] ?? Number.NaN)).filter(Number.isFinite);
    return {
      ...s,
      ratio: base && base.tps > 0 ? s.tps / base.tps : Number.NaN,
      roundRatioMin: perRound.length ? Math.min(...perRound) : Number.NaN,
      roundRatioMax: perRound.length ? Math.max(...perRound) : Number.NaN,
    };
  });
}

const f = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : '–');

/** Markdown tables: readable on a terminal and pasted as is into RESULTS.md. */
export function table(summaries: Summary[]): string {
  const head = ['variant', 'tx/s', 'rounds min–max tx/s', 'p50 ms', 'p99 ms', 'mean ms', 'tx', 'errors', '× (a)', '× (a) by round'];
  const rows = summaries.map((s) => [
    `(${s.variant}) ${s.label}`,
    f(s.tps, 0),
    `${f(s.minRoundTps, 0)}–${f(s.maxRoundTps, 0)}`,
    f(s.p50, 2),
    f(s.p99, 2),
    f(s.mean, 2),
    String(s.completed),
    String(s.errors),
    f(s.ratio, 2),
    `${f(s.roundRatioMin, 2)}–${f(s.roundRatioMax, 2)}`,
  ]);
  return markdown(head, rows, [false, ...head.slice(1).map(() => true)]);
}

/**
 * Pairs that ran in alternating rounds of one run, the first against the second: the change against its
 * baseline ((c)/(d)), keyed against unkeyed requests ((e)/(c), (f)/(d)), and the two keyed ones ((e)/(f)).
 */
const PAIRS: readonly [Variant['name'], Variant['name'], string][] = [
  ['c', 'd', 'the change against its baseline'],
  ['e', 'c', 'keyed against unkeyed'],
  ['f', 'd', 'keyed against unkeyed, baseline'],
  ['e', 'f', 'keyed, the change against its baseline'],
];

/**
 * One line per pair: throughput (overall and by round), latency, and CPU per transfer of the coordinator
 * and of the cluster holding the logs (`logCluster`, an index into the clusters).
 */
export function abLines(summaries: Summary[], logCluster: number): string | null {
  const lines: string[] = [];
  for (const [x, y, what] of PAIRS) {
    const c = summaries.find((s) => s.variant === x);
    const d = summaries.find((s) => s.variant === y);
    if (!c || !d || d.tps === 0) continue;
    const perRound = c.perRoundTps.map((t, i) => t / (d.perRoundTps[i] ?? Number.NaN)).filter(Number.isFinite);
    const logCpu = (s: Summary) => s.cpuMsPerTx.clusters[logCluster] ?? Number.NaN;
    // The median of the per-round ratios shrugs off a burst of other people's work that hit one round.
    const median = percentile(
      [...perRound].sort((p, q) => p - q),
      0.5,
    );
    lines.push(
      `(${x}) against (${y}), ${what}: throughput × ${f(c.tps / d.tps, 2)} ` +
        `(by round ${f(Math.min(...perRound), 2)}–${f(Math.max(...perRound), 2)}, median ${f(median, 2)}), ` +
        `p50 ${f(c.p50, 2)} against ${f(d.p50, 2)} ms, mean ${f(c.mean, 2)} against ${f(d.mean, 2)} ms; CPU per transfer: ` +
        `log cluster ${f(logCpu(c), 3)} against ${f(logCpu(d), 3)} ms (${signed(logCpu(c) - logCpu(d))}), ` +
        `coordinator ${f(c.cpuMsPerTx.coordinator, 3)} against ${f(d.cpuMsPerTx.coordinator, 3)} ms (${signed(c.cpuMsPerTx.coordinator - d.cpuMsPerTx.coordinator)}).`,
    );
  }
  return lines.length ? lines.join('\n\n') : null;
}

/** CPU ms per transfer of every part of this benchmark (clusters, Redis, the bench process, coordinator children): the whole transaction's. */
function oursMs(s: Summary): number {
  const c = s.cpuMsPerTx;
  return [...c.clusters, c.redis, c.bench, Number.isFinite(c.coordinator) ? c.coordinator : 0].reduce((a, b) => a + b, 0);
}

/**
 * Issue 13's "service side" of a REST variant: coordinator + log + banks + Redis, without the
 * client (the bench process), against (b)'s load generator + log + banks: a service's callers pay
 * for their HTTP client whatever coordinator they call.
 */
function serviceMs(s: Summary): number {
  const c = s.cpuMsPerTx;
  return [...c.clusters, c.redis, Number.isFinite(c.coordinator) ? c.coordinator : 0].reduce((a, b) => a + b, 0);
}

/**
 * The service variants against the bare protocol (b), as issue 13 states its aims: throughput (the
 * embedded SDK at >= 0.9× bare), latency (at one client, p50 <= 1.3× bare + 1 ms), and the whole
 * transaction's CPU. (h) runs its coordinator inside the benchmark process, so its CPU is in "bench
 * process" and nowhere else: its service side is bench process + clusters + Redis, against (b)'s
 * bench process + clusters (+ its Redis, ~0); (c) and (g) add the coordinator child's.
 */
export function againstBareLines(summaries: Summary[], concurrency: number): string | null {
  const b = summaries.find((s) => s.variant === 'b');
  if (!b || b.tps === 0) return null;
  const lines: string[] = [];
  for (const s of summaries) {
    if (!['c', 'e', 'g', 'h', 'j', 'k'].includes(s.variant)) continue;
    const inBench = s.variant === 'h' || s.variant === 'k';
    const perRound = s.perRoundTps.map((t, i) => t / (b.perRoundTps[i] ?? Number.NaN)).filter(Number.isFinite);
    const median = percentile(
      [...perRound].sort((p, q) => p - q),
      0.5,
    );
    const p50Bound = 1.3 * b.p50 + 1;
    const where = inBench ? ' (bench process, coordinator included, + clusters + Redis)' : ' (bench process + clusters + Redis + coordinator child)';
    lines.push(
      `(${s.variant}) against (b) bare: throughput × ${f(s.tps / b.tps, 2)} (by round ${f(Math.min(...perRound), 2)}–${f(Math.max(...perRound), 2)}, ` +
        `median ${f(median, 2)}); p50 ${f(s.p50, 2)} against ${f(b.p50, 2)} ms` +
        (concurrency === 1
          ? ` (one-client aim: p50 <= 1.3 × (b) + 1 ms = ${f(p50Bound, 2)} ms: ${s.p50 <= p50Bound ? 'met' : 'not met'}; ${byRound(s, b)})`
          : '') +
        `; CPU per transfer${where} ${f(oursMs(s), 3)} against (b)'s ${f(oursMs(b), 3)} ms (× ${f(oursMs(s) / oursMs(b), 2)})` +
        (inBench ? '.' : `; service side alone ${f(serviceMs(s), 3)} ms (× ${f(serviceMs(s) / oursMs(b), 2)}).`),
    );
  }
  // The SDK against the same protocol done by hand the way its callback must: statements answered before PREPARE.
  const i = summaries.find((s) => s.variant === 'i');
  const h = summaries.find((s) => s.variant === 'h');
  if (i && h && i.tps > 0) {
    lines.push(
      `(h) against (i) bare interactive: throughput × ${f(h.tps / i.tps, 2)}; CPU per transfer ${f(oursMs(h), 3)} against (i)'s ${f(oursMs(i), 3)} ms ` +
        `(× ${f(oursMs(h) / oursMs(i), 2)}); (i) against (b): throughput × ${f(i.tps / b.tps, 2)}, CPU × ${f(oursMs(i) / oursMs(b), 2)}.`,
    );
  }
  // The service against the same protocol behind the leanest HTTP server: what the coordinator adds to HTTP.
  const j = summaries.find((s) => s.variant === 'j');
  const c = summaries.find((s) => s.variant === 'c');
  if (j && c && j.tps > 0) {
    lines.push(
      `(c) against (j) bare behind HTTP: throughput × ${f(c.tps / j.tps, 2)}; p50 ${f(c.p50, 2)} against ${f(j.p50, 2)} ms; ` +
        `service side ${f(serviceMs(c), 3)} against (j)'s ${f(serviceMs(j), 3)} ms (× ${f(serviceMs(c) / serviceMs(j), 2)}); ` +
        `(j) against (b): throughput × ${f(j.tps / b.tps, 2)}, p50 ${f(j.p50, 2)} against ${f(b.p50, 2)} ms.`,
    );
  }
  return lines.length ? lines.join('\n\n') : null;
}

/**
 * The one-client aim round by round: each round's p50 against the aim from (b)'s p50 in the same
 * round, which ran seconds before or after it. A slow round of (b) or of the variant then moves one
 * round's verdict, not the pooled one.
 */
function byRound(s: Summary, b: Summary): string {
  const margins = s.perRoundP50.map((p, i) => 1.3 * (b.perRoundP50[i] ?? Number.NaN) + 1 - p).filter(Number.isFinite);
  if (margins.length === 0) return 'no rounds to compare';
  const met = margins.filter((m) => m >= 0).length;
  const median = percentile(
    [...margins].sort((x, y) => x - y),
    0.5,
  );
  return `by round met in ${met} of ${margins.length}, median margin ${median >= 0 ? '' : '−'}${f(Math.abs(median), 2)} ms`;
}

const signed = (n: number) => (Number.isFinite(n) ? `${n >= 0 ? '+' : '−'}${Math.abs(n).toFixed(3)}` : '–');

/** Where the CPU went, per completed transfer. */
export function cpuTable(summaries: Summary[], clusterNames: string[]): string {
  const head = ['variant', 'CPU busy', 'machine', ...clusterNames, 'Redis', 'bench process', 'coordinator(s)', 'not ours', 'kernel, unattributed'];
  const rows = summaries.map((s) => {
    const c = s.cpuMsPerTx;
    const parts = [...c.clusters, c.redis, c.bench, c.coordinator, c.foreign].filter(Number.isFinite);
    return [
      `(${s.variant}) ${s.label}`,
      Number.isFinite(s.busyShare) ? `${Math.round(s.busyShare * 100)} %` : '–',
      f(c.machine, 3),
      ...clusterNames.map((_, i) => f(c.clusters[i] ?? Number.NaN, 3)),
      f(c.redis, 3),
      f(c.bench, 3),
      f(c.coordinator, 3),
      f(c.foreign, 3),
      f(c.machine - parts.reduce((a, b) => a + b, 0), 3),
    ];
  });
  return markdown(head, rows, [false, ...head.slice(1).map(() => true)]);
}

export function markdown(head: string[], rows: string[][], rightAlign: boolean[]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const pad = (cell: string, i: number) => (rightAlign[i] ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!));
  const line = (cells: string[]) => `| ${cells.map(pad).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (rightAlign[i] ? `${'-'.repeat(w + 1)}:` : `${'-'.repeat(w + 2)}`)).join('|')}|`;
  return [line(head), rule, ...rows.map(line)].join('\n');
}
