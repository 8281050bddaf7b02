import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../coordinator/config/load-config.ts';
import { applyHeapGrowth } from '../coordinator/heap-growth.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const run = promisify(execFile);

/*
 * What the coordinator does during a long outage, in miniature: some data stays alive, and much
 * short-lived data lives just long enough to be promoted to the old generation before it dies (a
 * retried phase 2's objects). The child reports its peak heap against what a full collection keeps.
 */
const CHURN = `
import v8 from 'node:v8';
import { applyHeapGrowth } from './coordinator/heap-growth.ts';
const percent = Number(process.argv.at(-1));
const applied = applyHeapGrowth(percent);
const live = [];
for (let i = 0; i < 24; i++) live.push(Array.from({ length: 32768 }, (_, j) => ({ i, j })));
const recent = new Array(200000);
let peak = 0;
for (let n = 0; n < 3000000; n++) {
  recent[n % recent.length] = { n, s: 'x' + (n % 1000), a: [n, n + 1] };
  if (n % 5000 === 0) peak = Math.max(peak, v8.getHeapStatistics().used_heap_size);
}
globalThis.gc();
const kept = v8.getHeapStatistics().used_heap_size;
console.log(JSON.stringify({ applied, ratio: peak / kept, keep: live.length + recent.length }));
`;

async function churn(percent: number, nodeFlags: string[] = []): Promise<{ applied: boolean; ratio: number }> {
  const { stdout } = await run(process.execPath, ['--expose-gc', ...nodeFlags, '--import', 'tsx', '--input-type=module', '-e', CHURN, String(percent)], {
    cwd: ROOT,
  });
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as { applied: boolean; ratio: number };
}

describe('the heap growth factor (TPC_HEAP_GROWTH_PERCENT)', () => {
  it('keeps the peak heap within about the factor of what is alive, where V8 alone let it reach several times that', async () => {
    const [ours, v8Alone] = await Promise.all([churn(50), churn(0)]);
    expect(ours.applied).toBe(true);
    expect(v8Alone.applied).toBe(false);
    // The workload is one V8 lets grow far (measured 4.1–4.4× here), else this test would show nothing.
    expect(v8Alone.ratio).toBeGreaterThan(3);
    // 1.5× the kept data, plus the young generation and the garbage in flight (measured 1.9×).
    expect(ours.ratio).toBeLessThan(2.5);
  }, 60_000);

  it('leaves a --heap-growing-percent given to Node in place', async () => {
    const theirs = await churn(50, ['--heap-growing-percent=300']);
    expect(theirs.applied).toBe(false);
    expect(theirs.ratio).toBeGreaterThan(3);
    expect(applyHeapGrowth(50, ['--heap_growing_percent=10'])).toBe(false);
    expect(applyHeapGrowth(0, [])).toBe(false);
  }, 60_000);

  it('is 50 by default, 0 turns it off, and anything else but 0–1000 stops the start naming the variable', () => {
    const env = { DATABASE_URL: 'postgres://u@127.0.0.1/log', REDIS_URL: 'redis://127.0.0.1:6379', TPC_RESOURCES: '{"a":"postgres://u@127.0.0.1/a"}' };
    expect(loadConfig(env).heapGrowthPercent).toBe(50);
    expect(loadConfig({ ...env, TPC_HEAP_GROWTH_PERCENT: '0' }).heapGrowthPercent).toBe(0);
    for (const bad of ['-1', '1001', '1.5', 'lots']) {
      expect(() => loadConfig({ ...env, TPC_HEAP_GROWTH_PERCENT: bad }), bad).toThrow(ConfigError);
      expect(() => loadConfig({ ...env, TPC_HEAP_GROWTH_PERCENT: bad }), bad).toThrow(/TPC_HEAP_GROWTH_PERCENT/);
    }
  });
});
