import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedisServer, type RedisServer } from '../coordinator/embedded/redis-server.ts';
import { eventually } from './harness/waits.ts';
import { createWorld, transfer, type HttpAnswer, type World } from './harness/world.ts';

/*
 * /readyz against real servers: it fails when the log cannot be queried (not only reached) and
 * when Redis is down, naming the dependency and what is wrong, and recovers when they do. The
 * service's log role owns the log's tables (the harness runs it on the database's owner role, not
 * the superuser), so revoking its privileges as the superuser really takes them away.
 */
describe('/readyz tells the truth', () => {
  let redis: RedisServer;
  let world: World;
  let role: string;
  const logged: { level: number; msg: string }[] = [];
  beforeAll(async () => {
    redis = await startRedisServer();
    const sink = {
      write: (line: string) => {
        logged.push(JSON.parse(line));
      },
    };
    world = await createWorld({ env: { REDIS_URL: redis.url }, logger: pino({ level: 'warn' }, sink) });
    role = new URL(world.urls.log).username;
  });
  afterAll(async () => {
    await world?.close();
    await redis?.stop();
  });

  const ready = () => world.request('GET', '/readyz', undefined, { token: null });
  const until = (what: string, ok: (r: HttpAnswer) => boolean) => eventually(ready, ok, what, 20_000);
  /** Runs `sql` on the log database as the superuser (the test's oracle, not the service's role). */
  const asAdmin = (sql: string) => world.db.log.query(sql);

  function expectNotReady(r: HttpAnswer, failing: string, error: RegExp): void {
    expect(r.status, JSON.stringify(r.body)).toBe(503);
    expect(r.body.status).toBe('unavailable');
    expect(r.body.checks[failing], JSON.stringify(r.body)).toMatchObject({ ok: false, error: expect.stringMatching(error) });
    for (const [name, check] of Object.entries<{ ok: boolean }>(r.body.checks)) {
      if (name !== failing) expect(check.ok, `${name}: ${JSON.stringify(check)}`).toBe(true);
    }
  }

  it('is ready with the log and Redis both usable', async () => {
    const r = await until('ready', (x) => x.status === 200);
    expect(r.body).toEqual({ status: 'ready', checks: { log: { ok: true }, redis: { ok: true } } });
  });

  it('a log table the role may no longer read: 503 naming the log and the table; back once granted', async () => {
    await asAdmin(`REVOKE SELECT ON tpc_transactions FROM ${role}`);
    try {
      expectNotReady(await ready(), 'log', /permission denied for table tpc_transactions/);
      // It is not ready indeed: what needs the log answers 503 (an outage, not a 500), and nothing is logged at error level.
      const before = logged.length;
      const committed = await world.submit(transfer('bank_a', 'bank_b', 1));
      expect(committed.status).toBe(503);
      for (const path of ['/v1/transactions', `/v1/transactions/${committed.body.id ?? '00000000-0000-4000-8000-000000000000'}`]) {
        const read = await world.request('GET', path);
        expect(read.status, `${path}: ${JSON.stringify(read.body)}`).toBe(503);
        expect(read.body.type).toBe('urn:tpc:problem:unavailable');
      }
      expect(logged.slice(before).filter((l) => l.level >= 50)).toEqual([]);
    } finally {
      await asAdmin(`GRANT SELECT ON tpc_transactions TO ${role}`);
    }
    await until('ready again', (x) => x.status === 200);
  });

  it('a write privilege taken away: 503 saying which, though every SELECT still works', async () => {
    await asAdmin(`REVOKE INSERT ON tpc_events FROM ${role}`);
    await asAdmin(`REVOKE UPDATE ON tpc_branches FROM ${role}`);
    try {
      expectNotReady(await ready(), 'log', /lacks UPDATE on tpc_branches, INSERT on tpc_events/);
    } finally {
      await asAdmin(`GRANT INSERT ON tpc_events TO ${role}`);
      await asAdmin(`GRANT UPDATE ON tpc_branches TO ${role}`);
    }
    await until('ready again', (x) => x.status === 200);
  });

  it("a log table renamed away: 503 with Postgres' own message; back once restored", async () => {
    await asAdmin('ALTER TABLE tpc_branches RENAME TO tpc_branches_gone');
    try {
      expectNotReady(await ready(), 'log', /relation "tpc_branches" does not exist/);
    } finally {
      await asAdmin('ALTER TABLE tpc_branches_gone RENAME TO tpc_branches');
    }
    await until('ready again', (x) => x.status === 200);
    const after = await world.submit(transfer('bank_a', 'bank_b', 1));
    expect(after.status, JSON.stringify(after.body)).toBe(201);
  });

  it('Redis stopped: 503 naming redis while the log is fine; back once Redis is', async () => {
    await redis.stop();
    try {
      const down = await until('redis reported down', (x) => x.status === 503);
      expectNotReady(down, 'redis', /Redis|connect|ECONNREFUSED|closed/i);
    } finally {
      await redis.start();
    }
    const back = await until('ready again', (x) => x.status === 200);
    expect(back.body.checks).toEqual({ log: { ok: true }, redis: { ok: true } });
  });

  it("many probes at once share one query on the probe's own connection", async () => {
    const answers = await Promise.all(Array.from({ length: 20 }, () => ready()));
    expect(answers.map((a) => a.status)).toEqual(Array<number>(20).fill(200));
    const conns = await asAdmin(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = '${role}' AND query LIKE '%num_nulls%'`);
    expect(conns.rows[0].n).toBeLessThanOrEqual(1);
  });
});
