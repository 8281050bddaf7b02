import { pino } from 'pino';
import { loadConfig, loadEmbeddedSettings } from './config/load-config.ts';
import { startPostgresCluster } from './embedded/postgres-cluster.ts';
import { startRedisServer } from './embedded/redis-server.ts';
import { startService } from './service.ts';

/*
 * `npm run dev`: the coordinator with nothing configured. Starts a throwaway Postgres cluster
 * (the log and two demo databases, bank_a and bank_b, each with an accounts table) and a
 * throwaway Redis, on free loopback ports, then the service on PORT (default 8080). Everything
 * is removed on Ctrl-C.
 */
const DEMO_SQL = `
  CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance int NOT NULL CHECK (balance >= 0));
  INSERT INTO accounts SELECT g, 'customer ' || g, 1000 FROM generate_series(1, 10) g;
`;

async function main(): Promise<void> {
  const logger = pino({ level: 'info' });
  logger.info('starting an embedded Postgres cluster and Redis for development');
  const cluster = await startPostgresCluster({ binDir: loadEmbeddedSettings(process.env).pgBinDir });
  const redis = await startRedisServer();
  const cleanup = async () => {
    await Promise.allSettled([cluster.destroy(), redis.stop()]);
  };
  try {
    const logUrl = await cluster.createDatabase('tpc_log');
    const banks: Record<string, string> = {};
    for (const name of ['bank_a', 'bank_b']) {
      banks[name] = await cluster.createDatabase(name);
      const { default: pg } = await import('pg');
      const c = new pg.Client({ connectionString: banks[name] });
      await c.connect();
      await c.query(DEMO_SQL);
      await c.end();
    }
    const config = loadConfig({
      ...process.env,
      DATABASE_URL: logUrl,
      REDIS_URL: redis.url,
      TPC_RESOURCES: JSON.stringify(banks),
      TPC_RESOURCES_FILE: undefined,
    });
    const service = await startService(config, { logger });
    process.stdout.write(`
  coordinator: ${service.url}
  resources:   bank_a, bank_b (accounts 1..10, balance 1000 each)
  log:         ${logUrl}

  try a transfer:
    curl -s -X POST ${service.url}/v1/transactions -H 'content-type: application/json' -d '{
      "branches": [
        { "resource": "bank_a", "statements": [ { "sql": "UPDATE accounts SET balance = balance - $1 WHERE id = $2 AND balance >= $1", "params": [100, 1], "expect": { "rowCount": 1 } } ] },
        { "resource": "bank_b", "statements": [ { "sql": "UPDATE accounts SET balance = balance + $1 WHERE id = $2", "params": [100, 7] } ] }
      ] }'

`);
    const stop = async () => {
      await service.close();
      await cleanup();
      process.exit(0);
    };
    process.once('SIGINT', () => void stop());
    process.once('SIGTERM', () => void stop());
  } catch (err) {
    await cleanup();
    throw err;
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`dev coordinator failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
