import { Kysely, PostgresDialect } from 'kysely';
import type pg from 'pg';

/**
 * A Kysely bound to one open database transaction: every query goes to the same pinned connection,
 * which Kysely never returns to a pool (the SDK releases it after PREPARE or COMMIT).
 */
export function pinnedKysely<DB>(client: pg.PoolClient): Kysely<DB> {
  const pinned = {
    query: client.query.bind(client),
    release() { /* owned by the SDK's branch, not by Kysely */ },
  };
  const pool = {
    connect: async () => pinned,
    end: async () => {},
  };
  return new Kysely<DB>({ dialect: new PostgresDialect({ pool: pool as unknown as pg.Pool }) });
}
