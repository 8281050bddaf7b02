import pg from 'pg';
import { expect } from 'vitest';
import { eventually, query } from './waits.ts';
import type { World } from './world.ts';

/**
 * Submits `body`, holds the begin record's row lock (so the decision write waits), waits until
 * `prepared()` says the branches are prepared, runs `meanwhile`, releases, and returns the answer.
 */
export async function withDecisionHeld(world: World, body: unknown, prepared: (id: string) => Promise<boolean>, meanwhile: (id: string) => Promise<void>) {
  const log = new pg.Client({ connectionString: world.urls.log });
  await log.connect();
  try {
    const pending = world.submit(body);
    const [row] = await eventually(
      () => log.query<{ id: string }>("SELECT id FROM tpc_transactions WHERE status = 'active'").then((r) => r.rows),
      (rows) => rows.length === 1,
      'the begin record',
      10_000,
    );
    const id = row!.id;
    await log.query('BEGIN');
    const locked = await log.query("SELECT 1 FROM tpc_transactions WHERE id = $1 AND status = 'active' FOR UPDATE", [id]);
    expect(locked.rowCount).toBe(1); // held before the decision
    await eventually(
      () => prepared(id),
      (ok) => ok,
      'every branch prepared',
      10_000,
    );
    await meanwhile(id);
    await log.query('COMMIT');
    return { id, answer: await pending };
  } finally {
    await log.end().catch(() => {});
  }
}

/** Gids prepared on a database that start with `prefix`. */
export const preparedOn = (url: string, prefix: string) =>
  query<{ gid: string }>(url, 'SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, $1)', [prefix]).then((r) => r.map((x) => x.gid));
