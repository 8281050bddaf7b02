import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import type { Express } from 'express';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createOrdersApp } from '../examples/orders-inventory/app.ts';
import { createInventoryApp } from '../examples/orders-inventory/inventory-service.ts';
import { INVENTORY_SQL, ORDERS_SQL } from '../examples/orders-inventory/schema.ts';
import { TOKENS, createDatabase, createWorld, type World } from './harness/world.ts';

const PARTICIPANT_TOKEN = 'inventory-participant-token-0123';

const listen = (app: Express) =>
  new Promise<Server>((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
const urlOf = (s: Server) => `http://127.0.0.1:${(s.address() as { port: number }).port}`;

/*
 * The example as two services against a standalone coordinator: the order service (its orders
 * database is a direct resource) and the inventory service, whose database only it can open; the
 * coordinator reaches that one through the service's participant router.
 */
describe('the orders-inventory example', () => {
  let world: World;
  let pools: { orders: pg.Pool; inventory: pg.Pool };
  let inventory: Server;
  let orders: Server;
  let url: string;
  beforeAll(async () => {
    const tag = randomBytes(4).toString('hex');
    const ordersUrl = await createDatabase(inject('clusterA'), `ex${tag}_orders`);
    const inventoryUrl = await createDatabase(inject('clusterB'), `ex${tag}_inventory`);
    pools = { orders: new pg.Pool({ connectionString: ordersUrl }), inventory: new pg.Pool({ connectionString: inventoryUrl }) };
    await pools.orders.query(ORDERS_SQL);
    await pools.inventory.query(INVENTORY_SQL);
    world = await createWorld({
      beforeStart: async (dbs) => {
        inventory = await listen(createInventoryApp({ pool: pools.inventory, participantToken: PARTICIPANT_TOKEN, namespace: dbs.namespace }));
        const resources = { ...JSON.parse(dbs.env.TPC_RESOURCES!), orders: ordersUrl, inventory: { url: `${urlOf(inventory)}/2pc`, token: PARTICIPANT_TOKEN } };
        return { TPC_RESOURCES: JSON.stringify(resources) };
      },
    });
    orders = await listen(
      createOrdersApp({ coordinator: { url: world.service.url, token: TOKENS.full }, orders: pools.orders, inventoryUrl: urlOf(inventory) }),
    );
    url = urlOf(orders);
  });
  afterAll(async () => {
    await new Promise((r) => orders.close(r));
    await world.close();
    await new Promise((r) => inventory.close(r));
    await Promise.all([pools.orders.end(), pools.inventory.end()]);
  });

  const order = (sku: string, quantity: number) =>
    fetch(`${url}/orders`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sku, quantity }),
    }).then(async (r) => ({ status: r.status, body: (await r.json()) as Record<string, unknown> }));
  const stock = async (sku: string) => (await pools.inventory.query('SELECT stock FROM items WHERE sku = $1', [sku])).rows[0].stock as number;
  const orderCount = async () => (await pools.orders.query('SELECT count(*)::int AS n FROM orders')).rows[0].n as number;
  const preparedOnInventory = async () => (await pools.inventory.query('SELECT gid FROM pg_prepared_xacts WHERE database = current_database()')).rows;

  it('holds no credentials for the inventory database', () => {
    expect(world.config.resources.inventory).toEqual({ kind: 'http', url: `${urlOf(inventory)}/2pc`, token: PARTICIPANT_TOKEN });
    expect(world.config.resources.orders).toMatchObject({ kind: 'postgres' });
  });

  it('places an order and reserves the stock in one transaction; refuses one it cannot fill, applying nothing', async () => {
    const placed = await order('pear', 2);
    expect(placed.status).toBe(201);
    expect(placed.body).toMatchObject({ orderId: 1, status: 'committed' });
    const refused = await order('pear', 2);
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatch(/not enough pear/);
    expect(await stock('pear')).toBe(1);
    expect(await orderCount()).toBe(1);
    const tx = await world.request('GET', `/v1/transactions/${placed.body.transactionId as string}`);
    expect(tx.body.branches.map((b: { resource: string; status: string }) => `${b.resource}:${b.status}`).sort()).toEqual([
      'inventory:committed',
      'orders:committed',
    ]);
    expect(await fetch(`${url}/stock/pear`).then((r) => r.json())).toEqual({ sku: 'pear', stock: 1 });
  });

  it('rolls back a reservation the inventory service had already prepared when the order itself fails', async () => {
    // Six apples are in stock, so the inventory service prepares the reservation; the orders
    // database then refuses more than five per order, and the whole transaction aborts.
    const refused = await order('apple', 6);
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatch(/at_most_5_per_order/);
    expect(await stock('apple')).toBe(10);
    expect(await orderCount()).toBe(1);
    expect(await preparedOnInventory()).toEqual([]);
    const aborted = await world.request('GET', '/v1/transactions?status=aborted');
    expect(aborted.body.items.some((t: { resources: string[] }) => t.resources.includes('inventory'))).toBe(true);
  });
});
