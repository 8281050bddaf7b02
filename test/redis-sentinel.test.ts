import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../coordinator/config/load-config.ts';
import type { PostgresCluster } from '../coordinator/embedded/postgres-cluster.ts';
import { parseRedisUrl } from '../coordinator/jobs/redis-target.ts';
import { startSentinelGroup, type SentinelGroup } from './harness/redis-sentinel.ts';
import { decidedWithFlakyDown, eventually, query, restartAfterCrash, startFlakyParticipant } from './harness/waits.ts';
import { createDatabases, createWorld, transfer, type HttpAnswer, type World } from './harness/world.ts';

describe('REDIS_URL naming a Sentinel group: validation', () => {
  it('reads hosts, default port, master group, database, passwords; refuses what it cannot use, naming REDIS_URL', async () => {
    expect(parseRedisUrl('redis+sentinel://s1,s2:26380,[::1]:26381/mymaster')).toEqual({
      kind: 'sentinel',
      connectWith: {
        sentinels: [
          { host: 's1', port: 26379 },
          { host: 's2', port: 26380 },
          { host: '::1', port: 26381 },
        ],
        name: 'mymaster',
      },
      redacted: 'redis+sentinel://s1,s2:26380,[::1]:26381/mymaster',
    });
    expect(parseRedisUrl('redis+sentinel://app:p%40ss@s1:26379/mymaster/3?sentinelPassword=s%26cret&sentinelUsername=watch')).toEqual({
      kind: 'sentinel',
      connectWith: {
        sentinels: [{ host: 's1', port: 26379 }],
        name: 'mymaster',
        db: 3,
        username: 'app',
        password: 'p@ss',
        sentinelPassword: 's&cret',
        sentinelUsername: 'watch',
      },
      redacted: 'redis+sentinel://app:***@s1:26379/mymaster/3?sentinelPassword=***&sentinelUsername=watch',
    });
    expect(parseRedisUrl('redis+sentinel://:only-pw@s1/m')).toMatchObject({ connectWith: { password: 'only-pw' }, redacted: 'redis+sentinel://:***@s1/m' });
    expect(parseRedisUrl('redis://:pw@h:6379/2')).toEqual({ kind: 'server', connectWith: 'redis://:pw@h:6379/2', redacted: 'redis://:***@h:6379/2' });

    const dbs = await createDatabases();
    await dbs.end();
    const refused: [string, RegExp][] = [
      ['http://h:6379', /^REDIS_URL: must be a redis:\/\/ or rediss:\/\/ URL, or redis\+sentinel:\/\//],
      ['redis+sentinel://s1:26379', /^REDIS_URL: the path names the Sentinel master group/],
      ['redis+sentinel://s1:26379/', /^REDIS_URL: the path names the Sentinel master group/],
      ['redis+sentinel://s1:26379/m/x', /^REDIS_URL: after the master group's name the path may hold only a database number, not "x"/],
      ['redis+sentinel://s1:99999/m', /^REDIS_URL: port 99999 of "s1:99999" is not between 1 and 65535/],
      ['redis+sentinel://s1,,s2/m', /^REDIS_URL: "" is not a Sentinel host or host:port/],
      ['redis+sentinel://user@s1/m', /^REDIS_URL: a user without a password/],
      ['redis+sentinel://s1/m?password=x', /^REDIS_URL: unknown parameter "password"/],
    ];
    for (const [url, message] of refused) {
      expect(() => loadConfig({ ...dbs.env, REDIS_URL: url }), url).toThrow(ConfigError);
      expect(() => loadConfig({ ...dbs.env, REDIS_URL: url }), url).toThrow(message);
    }
    // A password never reaches the error.
    expect(() => loadConfig({ ...dbs.env, REDIS_URL: 'redis+sentinel://u:topsecret@s1/m/x' })).not.toThrow(/topsecret/);
  });
});

/*
 * A Redis primary with a replica and three Sentinels; the primary is SIGKILLed while clients
 * submit. Redis is off the commit path, so every submission still commits; what the failover
 * must not break is the recovery work Redis carries: the producer and every BullMQ worker follow
 * the Sentinels to the promoted replica without a restart. Reconciliation is slowed to ten minutes
 * here, so only the jobs themselves can finish the decided transactions below.
 */
describe('Redis fails over through Sentinel under load', () => {
  let group: SentinelGroup;
  let flaky: { cluster: PostgresCluster; url: string };
  let world: World;
  beforeAll(async () => {
    group = await startSentinelGroup();
    flaky = await startFlakyParticipant();
    world = await createWorld({
      extraResources: { flaky: flaky.url },
      env: { REDIS_URL: group.url, TPC_RECONCILE_INTERVAL_MS: '600000', TPC_RETRY_BASE_MS: '100', TPC_RETRY_MAX_MS: '500' },
    });
  }, 60_000);
  afterAll(async () => {
    try {
      await world?.close();
    } finally {
      await Promise.allSettled([group?.stop(), flaky?.cluster.destroy()]);
    }
  });

  const decided = (amount: number, account: number) => decidedWithFlakyDown(world, flaky, amount, account);

  const logStatus = async (id: string) =>
    (await world.db.log.query<{ status: string }>('SELECT status::text FROM tpc_transactions WHERE id = $1', [id])).rows[0]?.status;

  /** Brings flaky back and waits for the completion job (not reconciliation) to commit `id`. */
  async function completedByItsJob(id: string): Promise<void> {
    await restartAfterCrash(flaky.cluster);
    await eventually(
      () => logStatus(id),
      (s) => s === 'committed',
      `transaction ${id} committed by its completion job`,
      30_000,
    );
  }

  it('submissions commit throughout; the jobs queued before and after the failover finish their transactions', async () => {
    // A completion job queued on the primary, and replicated, before the failover.
    const before = await decided(5, 8);
    const replica = new Redis({ port: group.servers[1]!.port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
    replica.on('error', () => {});
    try {
      await eventually(
        () => replica.keys(`*:complete-${before}`),
        (k) => k.length > 0,
        'the completion job on the replica',
        10_000,
      );
    } finally {
      replica.disconnect();
    }

    // Six clients submit until told to stop, each on accounts of its own (clients sharing rows
    // across two databases can deadlock, which only the deadline breaks); each answer is kept.
    const answers: (HttpAnswer & { ms: number })[] = [];
    const sent = [0, 0, 0, 0, 0, 0];
    let stop = false;
    const clients = sent.map(async (_, c) => {
      while (!stop) {
        const t0 = Date.now();
        const r = await world.submit(transfer('bank_a', c % 2 ? 'bank_b' : 'bank_c', 1, c + 1, c + 1));
        answers.push({ ...r, ms: Date.now() - t0 });
        sent[c]!++;
      }
    });
    await sleep(1_000);
    const old = await group.primary();
    expect(old).toBe(group.servers[0]);
    const killedAt = Date.now();
    await old.crash();
    const promoted = await group.failedOver(old);
    const promotedAfter = Date.now() - killedAt;
    await eventually(
      () => world.request('GET', '/readyz', undefined, { token: null }),
      (r) => r.status === 200,
      '/readyz after the failover',
      30_000,
    );
    const readyAfter = Date.now() - killedAt;
    await sleep(1_000);
    stop = true;
    await Promise.all(clients);

    const bad = answers.filter((a) => a.status !== 201 || a.body.status !== 'committed');
    expect(
      bad.map((a) => [a.status, a.body]),
      'every submission commits while Redis fails over',
    ).toEqual([]);
    console.info(
      `Redis Sentinel failover: primary killed; new primary named after ${promotedAfter} ms, /readyz ready after ${readyAfter} ms; ` +
        `${answers.length} submissions meanwhile, all 201, slowest ${Math.max(...answers.map((a) => a.ms))} ms`,
    );

    // The job queued before the failover survived it, and a worker on the new primary runs it.
    await completedByItsJob(before);
    // A job queued after the failover: the producer follows the Sentinels too.
    const after = await decided(7, 9);
    await completedByItsJob(after);
    expect(await group.primary()).toBe(promoted);

    // The old primary comes back (empty): the Sentinels make it a replica; nothing writes to it.
    await old.start();
    await eventually(
      async () => {
        const c = new Redis({ port: old.port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
        c.on('error', () => {});
        try {
          return ((await c.call('ROLE')) as unknown[])[0];
        } finally {
          c.disconnect();
        }
      },
      (role) => role === 'slave',
      'the old primary turned replica',
      30_000,
    );
    const third = await decided(3, 10);
    await completedByItsJob(third);

    // Each of the client's submissions moved 1 from its account on bank_a to the same account on bank_b or bank_c.
    for (const [c, n] of sent.entries()) {
      expect(await world.balance('bank_a', c + 1)).toBe(1000 - n);
      expect(await world.balance(c % 2 ? 'bank_b' : 'bank_c', c + 1)).toBe(1000 + n);
    }
    for (const [account, amount] of [
      [8, 5],
      [9, 7],
      [10, 3],
    ] as const) {
      expect(await world.balance('bank_a', account)).toBe(1000 - amount);
      expect((await query<{ balance: number }>(flaky.url, 'SELECT balance FROM accounts WHERE id = $1', [account]))[0]!.balance).toBe(1000 + amount);
    }
    expect(await world.preparedGids()).toEqual([]);
    expect(await query(flaky.url, 'SELECT gid FROM pg_prepared_xacts')).toEqual([]);
  }, 180_000);
});
