import type { TestProject } from 'vitest/node';
import { startPostgresCluster, type PostgresCluster } from '../../coordinator/embedded/postgres-cluster.ts';
import { startRedisServer, type RedisServer } from '../../coordinator/embedded/redis-server.ts';

/*
 * One run of the suite shares two throwaway Postgres clusters and one Redis; each test makes its
 * own databases, namespace and queue prefix on them (see world.ts). Tests that stop or crash a
 * server start their own with the same helpers.
 */
declare module 'vitest' {
  export interface ProvidedContext {
    clusterA: { host: string; port: number };
    clusterB: { host: string; port: number };
    redisUrl: string;
  }
}

let clusters: PostgresCluster[] = [];
let redis: RedisServer | undefined;

export async function setup(project: TestProject): Promise<void> {
  const binDir = process.env.TPC_PG_BINDIR;
  clusters = await Promise.all([startPostgresCluster({ binDir }), startPostgresCluster({ binDir })]);
  redis = await startRedisServer();
  project.provide('clusterA', { host: clusters[0]!.host, port: clusters[0]!.port });
  project.provide('clusterB', { host: clusters[1]!.host, port: clusters[1]!.port });
  project.provide('redisUrl', redis.url);
}

export async function teardown(): Promise<void> {
  await Promise.allSettled([...clusters.map((c) => c.destroy()), redis?.stop()]);
}
