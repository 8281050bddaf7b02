import { type CompiledQuery, type DatabaseConnection, Kysely, PostgresDialect, type QueryResult } from 'kysely';
import type pg from 'pg';

/** Where a pinned Kysely sends its queries: a checked-out connection, or a wrapper that guards one. */
export interface QuerySession {
  query(text: string, values?: unknown[]): Promise<pg.QueryResult>;
}

/*
 * Kysely made the ordinary way builds a driver, a connection provider, an executor and a query
 * compiler whose constructor binds a visitor per node type: about half of the CPU of a branch's
 * one-statement Kysely call, paid by every branch of every SDK transaction. These are made once;
 * a pinned Kysely is the shared executor with a connection provider of its own, as Kysely's own
 * transactions are. The compiler can be shared: compiling is synchronous.
 */
const dialect = new PostgresDialect({
  pool: async () => {
    throw new Error('a pinned Kysely has no pool: its queries go to the connection it was made with');
  },
});
const driver = dialect.createDriver();
const template = new Kysely<unknown>({ dialect });
const config = { dialect };

const WRITES = new Set(['INSERT', 'UPDATE', 'DELETE', 'MERGE']);

/** The connection as Kysely's Postgres driver presents a pg client, over the session. */
function pinnedConnection(session: QuerySession): DatabaseConnection {
  return {
    async executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
      const { command, rowCount, rows } = await session.query(compiled.sql, [...compiled.parameters]);
      return { numAffectedRows: WRITES.has(command) ? BigInt(rowCount ?? 0) : undefined, rows: (rows ?? []) as R[] };
    },
    // biome-ignore lint/correctness/useYield: refused before the first row, as Kysely's driver refuses without a cursor
    async *streamQuery(): AsyncIterableIterator<QueryResult<never>> {
      throw new Error('streaming is not available on a branch: run the query and read its rows');
    },
  };
}

/**
 * A Kysely bound to one open database transaction: every query goes to the same pinned connection,
 * which Kysely never returns to a pool (whoever opened the transaction releases it after PREPARE,
 * COMMIT or ROLLBACK). BEGIN … PREPARE must run in one session, which a pooled Kysely cannot promise.
 */
export function pinnedKysely<DB>(session: QuerySession): Kysely<DB> {
  const connection = pinnedConnection(session);
  // No mutex (Kysely's SingleConnectionProvider has one): queries issued together go out together,
  // in pipeline mode in one write, and pg answers them in order.
  const executor = template.getExecutor().withConnectionProvider({ provideConnection: (consume) => consume(connection) });
  return new Kysely<DB>({ config, executor, driver, dialect });
}
