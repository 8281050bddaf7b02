import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { startRedisServer, type RedisServer } from '../../coordinator/embedded/redis-server.ts';
import { eventually } from './waits.ts';

/**
 * A Redis primary, one replica and three Sentinels watching them, every one a throwaway server on
 * a loopback port: what a deployment that fails Redis over runs. `url` is the coordinator's
 * REDIS_URL for it. The servers keep nothing on disk: one that is restarted comes back empty, and
 * the Sentinels then make it a replica of the current primary.
 */
export interface SentinelGroup {
  readonly url: string;
  readonly master: string;
  /** The data servers (the first started as primary). */
  readonly servers: RedisServer[];
  /** The server the Sentinels name as primary now. */
  primary(): Promise<RedisServer>;
  /** Waits until the Sentinels agree on a primary other than `old`, and that server acts as one. */
  failedOver(old: RedisServer, limitMs?: number): Promise<RedisServer>;
  stop(): Promise<void>;
}

const MASTER = 'tpcmaster';

async function withClient<T>(port: number, fn: (c: Redis) => Promise<T>): Promise<T> {
  const c = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  c.on('error', () => {});
  try {
    await c.connect();
    return await fn(c);
  } finally {
    c.disconnect();
  }
}

export async function startSentinelGroup(): Promise<SentinelGroup> {
  const dir = await mkdtemp(join(tmpdir(), 'tpc-sentinel-'));
  const servers: RedisServer[] = [];
  const sentinels: RedisServer[] = [];
  try {
    // A replica's full sync goes through an RDB file in its working directory: one of ours per
    // server, so none writes into the caller's, and none loads another's file when restarted.
    const own = async (name: string) => {
      const d = join(dir, name);
      await mkdir(d);
      return d;
    };
    const first = await startRedisServer('redis-server', { args: ['--dir', await own('a')] });
    servers.push(first);
    servers.push(await startRedisServer('redis-server', { args: ['--dir', await own('b'), '--replicaof', '127.0.0.1', String(first.port)] }));
    for (let i = 0; i < 3; i++) {
      // A Sentinel rewrites its configuration file (what it learned, its epoch): one file each.
      const configFile = join(dir, `sentinel-${i}.conf`);
      // 1 s without an answer marks the primary down: failovers in the test take seconds, not the
      // 30 s default; a production deployment chooses its own.
      await writeFile(
        configFile,
        [
          `sentinel monitor ${MASTER} 127.0.0.1 ${first.port} 2`,
          `sentinel down-after-milliseconds ${MASTER} 1000`,
          `sentinel failover-timeout ${MASTER} 10000`,
          `sentinel parallel-syncs ${MASTER} 1`,
          '',
        ].join('\n'),
      );
      sentinels.push(await startRedisServer('redis-server', { configFile, args: ['--sentinel'] }));
    }
    // A failover needs the replica known to the Sentinels and the Sentinels known to each other
    // (they meet through hello messages on the primary, every 2 s).
    await eventually(
      () =>
        Promise.all(
          sentinels.map((s) =>
            withClient(s.port, async (c) => ({
              sentinels: ((await c.call('SENTINEL', 'SENTINELS', MASTER)) as unknown[]).length,
              replicas: ((await c.call('SENTINEL', 'REPLICAS', MASTER)) as string[][]).filter((r) => !String(r[r.indexOf('flags') + 1]).includes('down'))
                .length,
            })),
          ),
        ),
      (v) => v.every((x) => x.sentinels === 2 && x.replicas === 1),
      'the Sentinels to know each other and the replica',
      20_000,
    );
  } catch (err) {
    await Promise.allSettled([...sentinels, ...servers].map((s) => s.stop()));
    await rm(dir, { recursive: true, force: true });
    throw err;
  }

  const masterPort = (sentinel: RedisServer) =>
    withClient(sentinel.port, async (c) => Number(((await c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', MASTER)) as string[])[1]));
  const byPort = (port: number) => {
    const s = servers.find((x) => x.port === port);
    if (!s) throw new Error(`the Sentinels name a primary on port ${port}, which is not one of the group's servers`);
    return s;
  };
  const role = (server: RedisServer) => withClient(server.port, async (c) => ((await c.call('ROLE')) as unknown[])[0] as string);

  return {
    url: `redis+sentinel://${sentinels.map((s) => `127.0.0.1:${s.port}`).join(',')}/${MASTER}`,
    master: MASTER,
    servers,
    async primary() {
      return byPort(await masterPort(sentinels[0]!));
    },
    async failedOver(old, limitMs = 30_000) {
      const ports = await eventually(
        () => Promise.all(sentinels.map(masterPort)),
        (p) => p.every((x) => x === p[0] && x !== old.port),
        'the Sentinels to agree on a new primary',
        limitMs,
      );
      const promoted = byPort(ports[0]!);
      await eventually(
        () => role(promoted),
        (r) => r === 'master',
        'the promoted replica to act as primary',
        limitMs,
      );
      return promoted;
    },
    async stop() {
      await Promise.allSettled([...sentinels, ...servers].map((s) => s.stop()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
