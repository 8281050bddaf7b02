import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createOrdersApp } from '../examples/orders-inventory/app.ts';
import { INVENTORY_SQL, ORDERS_SQL } from '../examples/orders-inventory/schema.ts';
import { TOKENS, createDatabase, createWorld, type World } from './harness/world.ts';

describe('the orders-inventory example', () => {
  let world: World;
  let pools: { orders: pg.Pool; inventory: pg.Pool };
  let server: Server;
  let url: string;
  beforeAll(async () => {
    const tag = randomBytes(4).toString('hex');
    const orders = await createDatabase(inject('clusterA'), `ex${tag}_orders`);
    const inventory = await createDatabase(inject('clusterB'), `ex${tag}_inventory`);
    pools = { orders: new pg.Pool({ connectionString: orders }), inventory: new pg.Pool({ connectionString: inventory }) };
    await pools.orders.query(ORDERS_SQL);
    await pools.inventory.query(INVENTORY_SQL);
    world = await createWorld({ extraResources: { orders, inventory } });
    const app = createOrdersApp({ coordinator: { url: world.service.url, token: TOKENS.full }, ...pools });
    server = await new Promise((resolve) => { const s = app.listen(0, '127.0.0.1', () => resolve(s)); });
    const address = server.address();
    url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
    await Promise.all([pools.orders.end(), pools.inventory.end()]);
    await world.close();
  });

  const order = (sku: string, quantity: number) => fetch(`${url}/orders`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sku, quantity }),
  }).then(async (r) => ({ status: r.status, body: await r.json() as Record<string, unknown> }));

  it('places an order and reserves the stock in one transaction; refuses one it cannot fill, applying nothing', async () => {
    const placed = await order('pear', 2);
    expect(placed.status).toBe(201);
    expect(placed.body).toMatchObject({ orderId: 1, status: 'committed' });
    const refused = await order('pear', 2);
    expect(refused.status).toBe(409);
    expect((await pools.inventory.query('SELECT stock FROM items WHERE sku = $1', ['pear'])).rows[0].stock).toBe(1);
    expect((await pools.orders.query('SELECT count(*)::int AS n FROM orders')).rows[0].n).toBe(1);
    const tx = await world.request('GET', `/v1/transactions/${placed.body.transactionId as string}`);
    expect(tx.body.branches.map((b: { resource: string; status: string }) => `${b.resource}:${b.status}`).sort()).toEqual(['inventory:committed', 'orders:committed']);
  });
});
