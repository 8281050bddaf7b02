import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { KeyedCounter, KeyedHistogram } from '../coordinator/observability/keyed-series.ts';

/*
 * The hot path's counter and histogram must be exported exactly as prom-client's own (dashboards,
 * alerts and the benchmark read that text): the same observations into both, the same registry
 * output, label values that need escaping and values on and beyond the bounds included.
 */
describe('keyed series', () => {
  it('export the text prom-client exports for the same observations', async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const buckets = [0.001, 0.01, 0.1, 1];
    const hist = new KeyedHistogram({ name: 'h_seconds', help: 'a histogram', labelNames: ['resource', 'outcome'], buckets, registers: [ours] });
    const promHist = new Histogram({ name: 'h_seconds', help: 'a histogram', labelNames: ['resource', 'outcome'], buckets, registers: [theirs] });
    const counter = new KeyedCounter({ name: 'c_total', help: 'a counter', labelNames: ['outcome'], registers: [ours] });
    const promCounter = new Counter({ name: 'c_total', help: 'a counter', labelNames: ['outcome'], registers: [theirs] });
    new KeyedHistogram({ name: 'e_seconds', help: 'never observed', labelNames: ['phase'], buckets, registers: [ours] });
    new Histogram({ name: 'e_seconds', help: 'never observed', labelNames: ['phase'], buckets, registers: [theirs] });

    const observations: [number, string, string][] = [
      [0.0005, 'bank_a', 'ok'],
      [0.001, 'bank_a', 'ok'], // on a bound: counted in it, as `le` says
      [0.05, 'bank_a', 'failed'],
      [7, 'bank_b', 'ok'], // beyond every bound: only +Inf, sum and count
      [0.2, 'quote"back\\slash\nnewline', 'ok'],
    ];
    for (const [value, resource, outcome] of observations) {
      hist.observe(value, resource, outcome);
      promHist.observe({ resource, outcome }, value);
    }
    for (const outcome of ['committed', 'committed', 'aborted']) {
      counter.inc(outcome);
      promCounter.inc({ outcome });
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });

  it('drops a value that is not a finite number instead of throwing into the caller', async () => {
    const registry = new Registry();
    const hist = new KeyedHistogram({ name: 'x_seconds', help: 'x', labelNames: ['phase'], buckets: [1], registers: [registry] });
    expect(() => hist.observe(Number.NaN, 'prepare')).not.toThrow();
    expect(() => hist.observe(Number.POSITIVE_INFINITY, 'prepare')).not.toThrow();
    hist.observe(0.5, 'prepare');
    expect(await registry.metrics()).toContain('x_seconds_count{phase="prepare"} 1');
  });
});
