import { Kysely, PostgresDialect } from 'kysely';
import type pg from 'pg';

/** Where a pinned Kysely sends its queries: a checked-out connection, or a wrapper that guards one. */
export interface QuerySession {
  query(text: string, values?: unknown[]): Promise<pg.QueryResult>;
}

/**
 * A Kysely bound to one open database transaction: every query goes to the same pinned connection,
 * which Kysely never returns to a pool (whoever opened the transaction releases it after PREPARE,
 * COMMIT or ROLLBACK). BEGIN … PREPARE must run in one session, which a pooled Kysely cannot promise.
 */
export function pinnedKysely<DB>(session: QuerySession): Kysely<DB> {
  const pinned = {
    query: (text: string, values?: unknown[]) => session.query(text, values),
    release() {
      /* owned by the branch, not by Kysely */
    },
  };
  const pool = {
    connect: async () => pinned,
    end: async () => {},
  };
  return new Kysely<DB>({ dialect: new PostgresDialect({ pool: pool as unknown as pg.Pool }) });
}
