import { markdown } from './stats.ts';

/** One histogram series of the service's /metrics, cumulative since the service started. */
interface Histogram {
  sum: number;
  count: number;
  /** Upper bound (seconds) → cumulative count. */
  buckets: Map<number, number>;
}

export type PhaseSnapshot = Map<string, Histogram>;

const METRIC = 'tpc_phase_duration_seconds';

function labels(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of text.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) out.set(m[1]!, m[2]!);
  return out;
}

/** Reads `tpc_phase_duration_seconds` by phase from the Prometheus text the service serves. */
export function parsePhases(text: string): PhaseSnapshot {
  const phases: PhaseSnapshot = new Map();
  const get = (phase: string) => {
    let h = phases.get(phase);
    if (!h) {
      h = { sum: 0, count: 0, buckets: new Map() };
      phases.set(phase, h);
    }
    return h;
  };
  for (const line of text.split('\n')) {
    if (!line.startsWith(METRIC)) continue;
    const m = /^(\w+)\{([^}]*)\}\s+(\S+)/.exec(line);
    if (!m) continue;
    const [, name, labelText, value] = m;
    const l = labels(labelText!);
    const phase = l.get('phase');
    if (!phase) continue;
    const v = Number(value);
    if (name === `${METRIC}_sum`) get(phase).sum = v;
    else if (name === `${METRIC}_count`) get(phase).count = v;
    else if (name === `${METRIC}_bucket`) {
      const le = l.get('le');
      get(phase).buckets.set(le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le), v);
    }
  }
  return phases;
}

export async function scrapePhases(baseUrl: string): Promise<PhaseSnapshot> {
  const res = await fetch(`${baseUrl}/metrics`);
  if (!res.ok) throw new Error(`GET /metrics answered ${res.status}`);
  return parsePhases(await res.text());
}

/** What was observed between two scrapes. */
export function diff(after: PhaseSnapshot, before: PhaseSnapshot): PhaseSnapshot {
  const out: PhaseSnapshot = new Map();
  for (const [phase, a] of after) {
    const b = before.get(phase);
    const buckets = new Map<number, number>();
    for (const [le, n] of a.buckets) buckets.set(le, n - (b?.buckets.get(le) ?? 0));
    out.set(phase, { sum: a.sum - (b?.sum ?? 0), count: a.count - (b?.count ?? 0), buckets });
  }
  return out;
}

/** Two spans' observations together (the rounds of one variant, between which other variants ran). */
export function addPhases(a: PhaseSnapshot | undefined, b: PhaseSnapshot): PhaseSnapshot {
  const out: PhaseSnapshot = new Map();
  for (const phase of new Set([...(a?.keys() ?? []), ...b.keys()])) {
    const x = a?.get(phase);
    const y = b.get(phase);
    const buckets = new Map<number, number>();
    for (const le of new Set([...(x?.buckets.keys() ?? []), ...(y?.buckets.keys() ?? [])])) {
      buckets.set(le, (x?.buckets.get(le) ?? 0) + (y?.buckets.get(le) ?? 0));
    }
    out.set(phase, { sum: (x?.sum ?? 0) + (y?.sum ?? 0), count: (x?.count ?? 0) + (y?.count ?? 0), buckets });
  }
  return out;
}

/** The upper bound of the bucket holding quantile q (a histogram only knows that much). */
function bucketQuantile(h: Histogram, q: number): number {
  const target = q * h.count;
  for (const [le, n] of [...h.buckets].sort((x, y) => x[0] - y[0])) if (n >= target) return le;
  return Number.NaN;
}

const ORDER = ['work', 'prepare', 'decide', 'complete', 'total'];

/** Mean and bucketed p50/p99 per phase, in ms, as a Markdown table. */
export function phaseTable(phases: PhaseSnapshot): string {
  const ms = (s: number) => (Number.isFinite(s) ? (s * 1000).toFixed(2) : '> 10 000');
  const le = (s: number) => (Number.isFinite(s) ? `≤ ${+(s * 1000).toFixed(1)}` : '> 10 000');
  const rows = [...phases]
    .filter(([, h]) => h.count > 0)
    .sort((x, y) => ORDER.indexOf(x[0]) - ORDER.indexOf(y[0]))
    .map(([phase, h]) => [phase, String(h.count), ms(h.sum / h.count), le(bucketQuantile(h, 0.5)), le(bucketQuantile(h, 0.99))]);
  return markdown(['phase', 'observations', 'mean ms', 'p50 ms (bucket)', 'p99 ms (bucket)'], rows, [false, true, true, true, true]);
}

export function meanMs(phases: PhaseSnapshot, phase: string): number {
  const h = phases.get(phase);
  return h && h.count > 0 ? (h.sum / h.count) * 1000 : Number.NaN;
}

/** What one coordinator variant spent per step over the measured rounds (means, ms). */
export interface ServiceSteps {
  variant: string;
  prepare: number;
  decide: number;
  complete: number;
  total: number;
  /** Client-side mean latency. */
  http: number;
}

/**
 * One service variant's observations over its measured rounds. Read around each of its rounds, not
 * over the whole run: two variants may drive the same coordinator ((c) and its keyed twin (e)).
 */
export interface ServicePhases {
  variant: string;
  label: string;
  phases: PhaseSnapshot;
}

/** One table per service variant, and its step means. */
export function servicePhases(observed: ServicePhases[], meanLatency: (variant: string) => number): { tables: string | null; steps: ServiceSteps[] } {
  const tables: string[] = [];
  const steps: ServiceSteps[] = [];
  for (const { variant, label, phases } of observed) {
    tables.push(observed.length > 1 ? `(${variant}) ${label}:\n\n${phaseTable(phases)}` : phaseTable(phases));
    steps.push({
      variant,
      prepare: meanMs(phases, 'prepare'),
      decide: meanMs(phases, 'decide'),
      complete: meanMs(phases, 'complete'),
      total: meanMs(phases, 'total'),
      http: meanLatency(variant),
    });
  }
  return { tables: tables.length ? tables.join('\n\n') : null, steps };
}
