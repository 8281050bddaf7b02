import { percentile } from './stats.ts';
import { performance } from 'node:perf_hooks';
import { addUsed, zeroUsed, type CpuSnapshot, type CpuUsed } from './cpu.ts';
import type { Phases, Transfer, Variant } from './variants.ts';

/** The unmeasured run before each measured round (bench/transfers.ts): 1 s did not bring a cold coordinator back, 4 s did. */
export const REWARM_MS = 4_000;

/** What one variant did in one timed run (a round, or the warm-up). */
export interface RunSample {
  completed: number;
  errors: number;
  /** Latency of every completed transaction, ms. */
  latencies: number[];
  /** From the first start to the last worker's end, ms (includes draining the requests in flight). */
  elapsedMs: number;
  /** Sums over completed transactions, for variants that time their own steps. */
  phaseSums: Phases;
  phaseCount: number;
  /** Distinct error messages with their counts. */
  errorMessages: Map<string, number>;
  /** CPU used during the run: the machine, the benchmark, the coordinator, each cluster. */
  cpu: CpuUsed;
}

export interface CpuProbe {
  snapshot(): CpuSnapshot;
  used(after: CpuSnapshot, before: CpuSnapshot): CpuUsed;
}

export interface RunControl {
  /** Set when the run must end early (Ctrl-C). */
  readonly stopped: boolean;
}

/** A sample with nothing counted yet. */
function emptySample(cpu: CpuUsed): RunSample {
  return {
    completed: 0,
    errors: 0,
    latencies: [],
    elapsedMs: 0,
    phaseSums: { prepare: 0, decide: 0, complete: 0 },
    phaseCount: 0,
    errorMessages: new Map(),
    cpu,
  };
}

/**
 * Runs `variant` with `concurrency` closed-loop clients for `durationMs`: each client starts its
 * next transfer as soon as the previous one ends. No new transfer starts after the deadline; the
 * ones in flight are waited for and counted.
 */
export async function timedRun(
  variant: Variant,
  next: () => Transfer,
  concurrency: number,
  durationMs: number,
  control: RunControl,
  cpu: CpuProbe,
): Promise<RunSample> {
  const cpu0 = cpu.snapshot();
  const sample = emptySample(cpu.used(cpu0, cpu0));
  const start = performance.now();
  const end = start + durationMs;

  const worker = async () => {
    while (!control.stopped && performance.now() < end) {
      const tx = next();
      const t0 = performance.now();
      try {
        const phases = await variant.run(tx);
        sample.latencies.push(performance.now() - t0);
        sample.completed++;
        if (phases) {
          sample.phaseSums.prepare += phases.prepare;
          sample.phaseSums.decide += phases.decide;
          sample.phaseSums.complete += phases.complete;
          sample.phaseCount++;
        }
      } catch (err) {
        sample.errors++;
        const msg = (err instanceof Error ? err.message : String(err)).slice(0, 200);
        sample.errorMessages.set(msg, (sample.errorMessages.get(msg) ?? 0) + 1);
        // A failing world (server gone) must not spin: back off a little.
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));

  sample.elapsedMs = performance.now() - start;
  sample.cpu = cpu.used(cpu.snapshot(), cpu0);
  return sample;
}

/** Every round's samples of one variant, merged. */
export function merge(samples: RunSample[], clusters: number): RunSample & { perRoundTps: number[]; perRoundP50: number[] } {
  const out: RunSample & { perRoundTps: number[]; perRoundP50: number[] } = {
    ...emptySample(zeroUsed(clusters)),
    perRoundTps: [],
    perRoundP50: [],
  };
  let busyWeighted = 0;
  for (const s of samples) {
    out.completed += s.completed;
    out.errors += s.errors;
    for (const l of s.latencies) out.latencies.push(l);
    out.elapsedMs += s.elapsedMs;
    out.phaseSums.prepare += s.phaseSums.prepare;
    out.phaseSums.decide += s.phaseSums.decide;
    out.phaseSums.complete += s.phaseSums.complete;
    out.phaseCount += s.phaseCount;
    for (const [m, n] of s.errorMessages) out.errorMessages.set(m, (out.errorMessages.get(m) ?? 0) + n);
    out.cpu = addUsed(out.cpu, s.cpu);
    busyWeighted += s.cpu.busyShare * s.elapsedMs; // time-weighted mean of the busy share
    out.perRoundTps.push(s.elapsedMs > 0 ? (s.completed / s.elapsedMs) * 1000 : 0);
    out.perRoundP50.push(percentile(Array.from(Float64Array.from(s.latencies).sort()), 0.5));
  }
  out.cpu.busyShare = out.elapsedMs > 0 ? busyWeighted / out.elapsedMs : Number.NaN;
  return out;
}
