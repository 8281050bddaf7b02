import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import type { Express } from 'express';
import pg from 'pg';
import { pino } from 'pino';
import { startPostgresCluster } from '../../coordinator/embedded/postgres-cluster.ts';
import { startRedisServer } from '../../coordinator/embedded/redis-server.ts';
import { createCoordinator } from 'pg-2pc-coordinator';
import { createOrdersApp } from './app.ts';
import { createInventoryApp } from './inventory-service.ts';
import { INVENTORY_SQL, ORDERS_SQL } from './schema.ts';

/*
 * One command, nothing to configure: a throwaway Postgres cluster (the coordinator's log, an orders
 * database and an inventory database), a throwaway Redis, the inventory service on port+1 (its
 * database stays with it: the coordinator reaches it through its participant router), an embedded
 * coordinator, and the order service on port 3000 (or the first argument). Ctrl-C removes everything.
 */
const port = Number(process.argv[2] ?? 3000);
const namespace = 'orders-example';
const listen = (app: Express, p: number) =>
  new Promise<Server>((resolve) => {
    const s = app.listen(p, '127.0.0.1', () => resolve(s));
  });

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

const participantToken = randomBytes(18).toString('base64url');
const inventoryServer = await listen(createInventoryApp({ pool: pools.inventory, participantToken, namespace }), port + 1);
const inventoryUrl = `http://127.0.0.1:${port + 1}`;
const coordinator = await createCoordinator(
  {
    DATABASE_URL: urls.log,
    REDIS_URL: redis.url,
    // orders: the coordinator holds a connection string. inventory: only a URL and a token.
    TPC_RESOURCES: JSON.stringify({ orders: urls.orders, inventory: { url: `${inventoryUrl}/2pc`, token: participantToken } }),
    TPC_NAMESPACE: namespace,
  },
  { logger: pino({ level: 'warn' }) },
);
const ordersServer = await listen(createOrdersApp({ coordinator: { coordinator }, orders: pools.orders, inventoryUrl }), port);
process.stdout.write(`order service on http://127.0.0.1:${port}, inventory service on ${inventoryUrl}
  curl -s -X POST http://127.0.0.1:${port}/orders -H 'content-type: application/json' -d '{"sku":"pear","quantity":2}'
  curl -s http://127.0.0.1:${port}/stock/pear
`);

const stop = async () => {
  ordersServer.close();
  await coordinator.close();
  inventoryServer.close();
  await Promise.allSettled([pools.orders.end(), pools.inventory.end()]);
  await Promise.allSettled([cluster.destroy(), redis.stop()]);
  process.exit(0);
};
process.once('SIGINT', () => void stop());
process.once('SIGTERM', () => void stop());
