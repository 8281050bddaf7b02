import express, { type Express } from 'express';
import type { Generated } from 'kysely';
import type pg from 'pg';
import { createClient, type ClientOptions } from 'pg-2pc-coordinator';
import type { InventoryDB, OrdersDB } from './schema.ts';

type OrdersTables = { orders: Omit<OrdersDB['orders'], 'id' | 'placed_at'> & { id: Generated<number>; placed_at: Generated<Date> } };

class OutOfStock extends Error {}

export interface OrdersAppOptions {
  /** The coordinator: `{ url, token }` of a running one, or `{ coordinator }` for an embedded one. */
  coordinator: Pick<ClientOptions, 'url' | 'token' | 'coordinator'>;
  orders: pg.Pool;
  inventory: pg.Pool;
}

/**
 * An order service: placing an order inserts it (orders database) and reserves the stock (inventory
 * database) atomically with the SDK: both happen, or neither.
 */
export function createOrdersApp(options: OrdersAppOptions): Express {
  const tpc = createClient({ ...options.coordinator, resources: { orders: options.orders, inventory: options.inventory } });
  const app = express();
  app.use(express.json());

  app.post('/orders', async (req, res) => {
    const { sku, quantity } = req.body as { sku?: unknown; quantity?: unknown };
    if (typeof sku !== 'string' || !Number.isInteger(quantity) || (quantity as number) <= 0) {
      res.status(400).json({ error: 'send { "sku": string, "quantity": positive integer }' });
      return;
    }
    try {
      const { result, outcome } = await tpc.transaction(async (tx) => {
        const inventory = await tx.branch<InventoryDB>('inventory');
        const orders = await tx.branch<OrdersTables>('orders');
        const reserved = await inventory.updateTable('items')
          .set((eb) => ({ stock: eb('stock', '-', quantity as number) }))
          .where('sku', '=', sku).where('stock', '>=', quantity as number)
          .executeTakeFirst();
        if (reserved.numUpdatedRows !== 1n) throw new OutOfStock(`not enough ${sku} in stock`);
        return orders.insertInto('orders').values({ sku, quantity: quantity as number }).returning('id').executeTakeFirstOrThrow();
      }, { timeoutMs: 5000 });
      res.status(201).json({ orderId: result.id, transactionId: outcome.id, status: outcome.status });
    } catch (err) {
      if (err instanceof OutOfStock) res.status(409).json({ error: err.message });
      else res.status(503).json({ error: err instanceof Error ? err.message : String(err) });
    }
  });

  app.get('/stock/:sku', async (req, res) => {
    const r = await options.inventory.query<{ stock: number }>('SELECT stock FROM items WHERE sku = $1', [req.params.sku]);
    res.json({ sku: req.params.sku, stock: r.rows[0]?.stock ?? null });
  });
  return app;
}

export type { OrdersDB };
