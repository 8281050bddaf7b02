import express, { type Express } from 'express';
import type { Generated } from 'kysely';
import type pg from 'pg';
import { createClient, type ClientOptions } from 'pg-2pc-client';
import type { OrdersDB } from './schema.ts';

type OrdersTables = { orders: Omit<OrdersDB['orders'], 'id' | 'placed_at'> & { id: Generated<number>; placed_at: Generated<Date> } };

class Refused extends Error {}

export interface OrdersAppOptions {
  /** The coordinator: `{ url, token }` of a running one, or `{ coordinator }` for an embedded one. */
  coordinator: Pick<ClientOptions, 'url' | 'token' | 'coordinator'>;
  /** The orders database, this service's own. */
  orders: pg.Pool;
  /** The inventory service's base URL: its database is not this service's to open. */
  inventoryUrl: string;
}

/**
 * The order service: placing an order reserves the stock (the inventory service, on its own
 * database) and inserts the order (orders database) as one global transaction: both, or neither.
 */
export function createOrdersApp(options: OrdersAppOptions): Express {
  const tpc = createClient({ ...options.coordinator, resources: { orders: options.orders } });
  const app = express();
  app.use(express.json());

  app.post('/orders', async (req, res) => {
    const { sku, quantity } = req.body as { sku?: unknown; quantity?: unknown };
    if (typeof sku !== 'string' || !Number.isInteger(quantity) || (quantity as number) <= 0) {
      res.status(400).json({ error: 'send { "sku": string, "quantity": positive integer }' });
      return;
    }
    try {
      const { result, outcome } = await tpc.transaction(
        async (tx) => {
          // The inventory service prepares its part under a gid of this transaction.
          const inventory = await tx.join('inventory');
          const reserved = await fetch(`${options.inventoryUrl}/reservations`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ gid: inventory.gid, deadline: inventory.deadline, sku, quantity }),
          });
          if (reserved.status === 409) throw new Refused(((await reserved.json()) as { error: string }).error);
          if (!reserved.ok) throw new Error(`the inventory service answered ${reserved.status}`);
          const orders = await tx.branch<OrdersTables>('orders');
          return orders
            .insertInto('orders')
            .values({ sku, quantity: quantity as number })
            .returning('id')
            .executeTakeFirstOrThrow();
        },
        { timeoutMs: 5000 },
      );
      res.status(201).json({ orderId: result.id, transactionId: outcome.id, status: outcome.status });
    } catch (err) {
      // 23514: an order the orders database refuses (more than 5 at once), after the stock was reserved.
      if (err instanceof Refused || (err as { code?: string }).code === '23514') res.status(409).json({ error: (err as Error).message });
      else res.status(503).json({ error: err instanceof Error ? err.message : String(err) });
    }
  });

  app.get('/stock/:sku', async (req, res) => {
    const r = await fetch(`${options.inventoryUrl}/stock/${encodeURIComponent(req.params.sku)}`);
    res.status(r.status).json(await r.json());
  });
  return app;
}

export type { OrdersDB };
