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
    if (!h) phases.set(phase, (h = { sum: 0, count: 0, buckets: new Map() }));
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

export interface ServiceProbe {
  variant: 'c' | 'd';
  label: string;
  url: string;
  before: PhaseSnapshot;
}

/** The phase histograms of each coordinator since `before`: one table each, and the step means. */
export async function servicePhases(probes: ServiceProbe[], meanLatency: (variant: string) => number): Promise<{ tables: string | null; steps: ServiceSteps[] }> {
  const tables: string[] = [];
  const steps: ServiceSteps[] = [];
  for (const p of probes) {
    const phases = diff(await scrapePhases(p.url), p.before);
    tables.push(probes.length > 1 ? `(${p.variant}) ${p.label}:\n\n${phaseTable(phases)}` : phaseTable(phases));
    steps.push({
      variant: p.variant,
      prepare: meanMs(phases, 'prepare'), decide: meanMs(phases, 'decide'), complete: meanMs(phases, 'complete'),
      total: meanMs(phases, 'total'), http: meanLatency(p.variant),
    });
  }
  return { tables: tables.length ? tables.join('\n\n') : null, steps };
}
