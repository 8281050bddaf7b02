import { describe, expect, it } from 'vitest';
import { loadConfig } from '../coordinator/config/load-config.ts';
import { adminUrl, createWorld, transfer, type World } from './harness/world.ts';
import { eventually, query } from './harness/waits.ts';

/*
 * TPC_POOL_IDLE_TIMEOUT_MS: how long the log's and the resources' pools keep a connection nobody
 * uses. A pool that lets them all go at once after a lull makes its databases end every backend
 * together, at a cost to whatever else runs on the machine then; 0 keeps them for the process's life.
 */

const base = { DATABASE_URL: 'postgres://u@127.0.0.1/log', REDIS_URL: 'redis://127.0.0.1:6379', TPC_RESOURCES: '{"a":"postgres://u@127.0.0.1/a"}' };

/** The coordinator's sessions on one database of the world, by the application_name its pools give them. */
async function sessions(world: World, database: 'bank_a' | 'log'): Promise<number> {
  const url = new URL(world.urls[database]);
  const name = url.pathname.slice(1);
  const application = database === 'log' ? 'tpc-coordinator-log' : 'tpc-coordinator';
  const rows = await query<{ n: number }>(
    adminUrl({ host: url.hostname, port: Number(url.port) }, name),
    'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = $2',
    [name, application],
  );
  return rows[0]!.n;
}

describe('TPC_POOL_IDLE_TIMEOUT_MS', () => {
  it('defaults to 30 s, takes 0, and refuses anything else by name', () => {
    expect(loadConfig(base).poolIdleTimeoutMs).toBe(30_000);
    expect(loadConfig({ ...base, TPC_POOL_IDLE_TIMEOUT_MS: '0' }).poolIdleTimeoutMs).toBe(0);
    expect(loadConfig({ ...base, TPC_POOL_IDLE_TIMEOUT_MS: '1500' }).poolIdleTimeoutMs).toBe(1500);
    for (const bad of ['-1', 'soon', '1.5', '86400001']) {
      expect(() => loadConfig({ ...base, TPC_POOL_IDLE_TIMEOUT_MS: bad }), bad).toThrow(/^TPC_POOL_IDLE_TIMEOUT_MS: /);
    }
  });

  it('closes the log and resource connections a transaction used once they have been idle that long', async () => {
    const world = await createWorld({ env: { TPC_POOL_IDLE_TIMEOUT_MS: '1000' } });
    try {
      const before = await world.balance('bank_a', 1);
      const r = await world.submit(transfer('bank_a', 'bank_b', 5));
      expect(r.status).toBe(201);
      // Counted at once: a second is ample for one query, even on a loaded machine.
      expect(await sessions(world, 'bank_a')).toBeGreaterThan(0);
      await eventually(
        () => sessions(world, 'bank_a'),
        (n) => n === 0,
        'the resource pool closing its idle connections',
        10_000,
      );
      await eventually(
        () => sessions(world, 'log'),
        (n) => n === 0,
        'the log pools closing their idle connections',
        10_000,
      );
      // Closed connections are reopened on demand: the next transaction runs as the first did.
      expect((await world.submit(transfer('bank_b', 'bank_a', 5, 2, 1))).status).toBe(201);
      expect(await world.balance('bank_a', 1)).toBe(before);
    } finally {
      await world.close();
    }
  });

  it('keeps them open with 0', async () => {
    const world = await createWorld({ env: { TPC_POOL_IDLE_TIMEOUT_MS: '0' } });
    try {
      expect((await world.submit(transfer('bank_a', 'bank_b', 5))).status).toBe(201);
      const open = { bank: await sessions(world, 'bank_a'), log: await sessions(world, 'log') };
      expect(open.bank).toBeGreaterThan(0);
      expect(open.log).toBeGreaterThan(0);
      // Two and a half times the timeout the test above sees them close after.
      await new Promise((r) => setTimeout(r, 2_500));
      expect(await sessions(world, 'bank_a')).toBeGreaterThanOrEqual(open.bank);
      expect(await sessions(world, 'log')).toBeGreaterThanOrEqual(open.log);
    } finally {
      await world.close();
    }
  });
});
