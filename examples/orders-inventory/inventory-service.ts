import express, { type Express } from 'express';
import type pg from 'pg';
import { prepareBranch, participantRouter } from 'pg-2pc-coordinator/participant-adapter';
import type { InventoryDB } from './schema.ts';

export class OutOfStock extends Error {}

export interface InventoryAppOptions {
  /** The inventory database: only this service holds its credentials. */
  pool: pg.Pool;
  /** The token the coordinator sends to this service's participant router (its TPC_RESOURCES entry). */
  participantToken: string;
  /** The coordinator's TPC_NAMESPACE. */
  namespace: string;
}

/**
 * The inventory service owns its database. It takes part in global transactions in two ways: it
 * prepares a reservation under the gid an order service hands it (POST /reservations), and it
 * mounts the participant router so that the coordinator can check, commit or roll back that
 * branch, and recover it, without ever connecting to the database itself.
 */
export function createInventoryApp(options: InventoryAppOptions): Express {
  const app = express();
  app.use('/2pc', participantRouter({ pool: options.pool, token: options.participantToken, namespace: options.namespace, name: 'inventory' }));
  app.use(express.json());

  app.post('/reservations', async (req, res) => {
    const { gid, deadline, sku, quantity } = req.body as { gid?: unknown; deadline?: unknown; sku?: unknown; quantity?: unknown };
    if (typeof gid !== 'string' || typeof deadline !== 'string' || typeof sku !== 'string' || !Number.isInteger(quantity) || (quantity as number) <= 0) {
      res.status(400).json({ error: 'send { "gid", "deadline", "sku", "quantity" }' });
      return;
    }
    try {
      // The reservation stays prepared until the coordinator commits or rolls it back.
      await prepareBranch<InventoryDB, void>(
        options.pool,
        gid,
        async (db) => {
          const r = await db
            .updateTable('items')
            .set((eb) => ({ stock: eb('stock', '-', quantity as number) }))
            .where('sku', '=', sku)
            .where('stock', '>=', quantity as number)
            .executeTakeFirst();
          if (r.numUpdatedRows !== 1n) throw new OutOfStock(`not enough ${sku} in stock`);
        },
        { timeoutMs: Date.parse(deadline) - Date.now() },
      );
      res.status(201).json({ reserved: quantity, sku });
    } catch (err) {
      if (err instanceof OutOfStock) res.status(409).json({ error: err.message });
      else res.status(503).json({ error: err instanceof Error ? err.message : String(err) });
    }
  });

  app.get('/stock/:sku', async (req, res) => {
    const r = await options.pool.query<{ stock: number }>('SELECT stock FROM items WHERE sku = $1', [req.params.sku]);
    res.json({ sku: req.params.sku, stock: r.rows[0]?.stock ?? null });
  });
  return app;
}
