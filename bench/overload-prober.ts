/*
 * Times GET /healthz and /readyz every 100 ms, in a process of its own: in the benchmark's process
 * the probes would wait behind a thousand clients' callbacks, and measure the benchmark, not the
 * service. Run by overload-client.ts: `node --import tsx bench/overload-prober.ts <base URL>`; says
 * "ready" on stdout, probes until its stdin closes, then prints its timings as one JSON line.
 */
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

// A probe every 100 ms: an orchestrator's probe is far rarer; this only needs enough samples for a p99.
const PROBE_INTERVAL_MS = 100;

const base = process.argv[2]!;
const agent = new Agent({ keepAlive: true, maxSockets: 2 });
const times = { healthz: [] as number[], readyz: [] as number[], failures: {} as Record<string, number> };
let running = true;
process.stdin.on('end', () => {
  running = false;
});
process.stdin.resume();

const probe = (path: '/healthz' | '/readyz') =>
  new Promise<void>((resolve) => {
    const t0 = performance.now();
    const fail = (what: string) => {
      times.failures[`${path} ${what}`] = (times.failures[`${path} ${what}`] ?? 0) + 1;
      resolve();
    };
    const req = request(new URL(path, base), { agent }, (res) => {
      res.resume();
      res.on('end', () => {
        times[path === '/healthz' ? 'healthz' : 'readyz'].push(performance.now() - t0);
        if (res.statusCode !== 200) fail(String(res.statusCode));
        else resolve();
      });
      res.on('error', (err) => fail(err.message));
    });
    req.on('error', (err) => fail(err.message));
    req.end();
  });

process.stdout.write('ready\n');
while (running) {
  const next = performance.now() + PROBE_INTERVAL_MS;
  await Promise.all([probe('/healthz'), probe('/readyz')]);
  await sleep(Math.max(0, next - performance.now()));
}
agent.destroy();
process.stdout.write(`${JSON.stringify(times)}\n`);
