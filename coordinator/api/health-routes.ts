import { Router } from 'express';
import { Gauge, type Registry } from 'prom-client';

export interface ReadinessCheck {
  name: string;
  check: () => Promise<void>;
}

// 1 s: a probe that hangs longer than that is as good as down to an orchestrator.
const PROBE_TIMEOUT_MS = 1_000;

function withTimeout(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<void>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export function healthRoutes(checks: ReadinessCheck[], registry: Registry): Router {
  const router = Router();
  // One probe of each dependency at a time, shared by every /readyz asking meanwhile: a burst of
  // probes (several orchestrators, a load balancer per zone) then costs one query, never a queue
  // of them behind the probe's single connection.
  const inFlight = new Map<string, Promise<void>>();
  const probe = (c: ReadinessCheck): Promise<void> => {
    let p = inFlight.get(c.name);
    if (!p) {
      p = c.check().finally(() => inFlight.delete(c.name));
      inFlight.set(c.name, p);
    }
    return p;
  };
  // The same probes, at scrape time, so that an alert rule can say which dependency /readyz fails on.
  new Gauge({
    name: 'tpc_dependency_up',
    help: 'Whether each dependency /readyz checks (the log, Redis) answers now (1) or not (0).',
    labelNames: ['dependency'],
    registers: [registry],
    async collect() {
      await Promise.all(
        checks.map(async (c) => {
          const ok = await withTimeout(probe(c), PROBE_TIMEOUT_MS).then(
            () => 1,
            () => 0,
          );
          this.set({ dependency: c.name }, ok);
        }),
      );
    },
  });
  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/readyz', async (_req, res) => {
    const results = await Promise.all(
      checks.map(async (c) => {
        try {
          await withTimeout(probe(c), PROBE_TIMEOUT_MS);
          return [c.name, { ok: true }] as const;
        } catch (err) {
          return [c.name, { ok: false, error: err instanceof Error ? err.message : String(err) }] as const;
        }
      }),
    );
    const ready = results.every(([, r]) => r.ok);
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'unavailable', checks: Object.fromEntries(results) });
  });
  router.get('/metrics', async (_req, res) => {
    res.type(registry.contentType).send(await registry.metrics());
  });
  return router;
}
