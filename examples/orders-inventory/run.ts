import pg from 'pg';
import { pino } from 'pino';
import { startPostgresCluster } from '../../coordinator/embedded/postgres-cluster.ts';
import { startRedisServer } from '../../coordinator/embedded/redis-server.ts';
import { createCoordinator } from 'pg-2pc-coordinator';
import { createOrdersApp } from './app.ts';
import { INVENTORY_SQL, ORDERS_SQL } from './schema.ts';

/*
 * One command, nothing to configure: a throwaway Postgres cluster (the coordinator's log, an orders
 * database and an inventory database), a throwaway Redis, an embedded coordinator, and the order
 * service on port 3000 (PORT to change it). Ctrl-C removes everything.
 */
const cluster = await startPostgresCluster();
const redis = await startRedisServer();
const urls = {
  log: await cluster.createDatabase('tpc_log'),
  orders: await cluster.createDatabase('orders'),
  inventory: await cluster.createDatabase('inventory'),
};
const pools = { orders: new pg.Pool({ connectionString: urls.orders }), inventory: new pg.Pool({ connectionString: urls.inventory }) };
await pools.orders.query(ORDERS_SQL);
await pools.inventory.query(INVENTORY_SQL);
const coordinator = await createCoordinator({
  DATABASE_URL: urls.log,
  REDIS_URL: redis.url,
  TPC_RESOURCES: JSON.stringify({ orders: urls.orders, inventory: urls.inventory }),
  TPC_NAMESPACE: 'orders-example',
}, { logger: pino({ level: 'warn' }) });
const app = createOrdersApp({ coordinator: { coordinator }, ...pools });
const port = Number(process.argv[2] ?? 3000);
const server = app.listen(port, '127.0.0.1', () => {
  process.stdout.write(`order service on http://127.0.0.1:${port}
  curl -s -X POST http://127.0.0.1:${port}/orders -H 'content-type: application/json' -d '{"sku":"pear","quantity":2}'
  curl -s http://127.0.0.1:${port}/stock/pear
`);
});
const stop = async () => {
  server.close();
  await coordinator.close();
  await Promise.allSettled([pools.orders.end(), pools.inventory.end()]);
  await Promise.allSettled([cluster.destroy(), redis.stop()]);
  process.exit(0);
};
process.once('SIGINT', () => void stop());
process.once('SIGTERM', () => void stop());
