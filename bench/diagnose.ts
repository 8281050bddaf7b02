import pg from 'pg';
import { markdown } from './stats.ts';

/**
 * Optional diagnosis (--pg-stat-statements): every cluster loads pg_stat_statements with planning
 * tracked, and the end of the run lists, per database, the statements that cost the server the
 * most time. It adds a little overhead to every variant alike; the default run does without it.
 */
export const STAT_STATEMENTS_SETTINGS: Record<string, string> = {
  shared_preload_libraries: 'pg_stat_statements',
  'pg_stat_statements.track_planning': 'on',
  // PREPARE / COMMIT PREPARED carry a literal gid: each would be an entry of its own.
  'pg_stat_statements.track_utility': 'off',
  'pg_stat_statements.max': '1000',
};

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export async function enableStatStatements(urls: string[]): Promise<void> {
  await Promise.all(urls.map((u) => withClient(u, (c) => c.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements'))));
}

export async function resetStatStatements(urls: string[]): Promise<void> {
  await Promise.all(urls.map((u) => withClient(u, (c) => c.query('SELECT pg_stat_statements_reset()'))));
}

interface Row {
  query: string;
  calls: string;
  plans: string;
  total_plan_time: number;
  total_exec_time: number;
  wal_bytes: string;
}

/** The top statements of each database by server time (planning + execution), as Markdown tables. */
export async function statStatementsReport(dbs: Record<string, string | undefined>, limit = 8): Promise<string> {
  const parts: string[] = [];
  for (const [name, url] of Object.entries(dbs)) {
    if (!url) continue;
    const rows = await withClient(
      url,
      async (c) =>
        (
          await c.query<Row>(
            `
      SELECT query, calls::text, plans::text, total_plan_time, total_exec_time, wal_bytes::text
      FROM pg_stat_statements
      WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND calls > 0
      ORDER BY total_plan_time + total_exec_time DESC
      LIMIT $1`,
            [limit],
          )
        ).rows,
    );
    const table = rows.map((r) => {
      const calls = Number(r.calls);
      return [
        r.query.replace(/\s+/g, ' ').slice(0, 90),
        r.calls,
        r.plans,
        // Per call, not per plan: a named statement whose plan is kept plans rarely, and that is the point.
        ((r.total_plan_time / calls) * 1000).toFixed(0),
        ((r.total_exec_time / calls) * 1000).toFixed(0),
        ((r.total_plan_time + r.total_exec_time) / 1000).toFixed(2),
        (Number(r.wal_bytes) / calls).toFixed(0),
      ];
    });
    parts.push(
      `${name}:\n\n${markdown(['statement', 'calls', 'plans', 'plan µs/call', 'exec µs/call', 'total s', 'WAL bytes/call'], table, [
        false,
        true,
        true,
        true,
        true,
        true,
        true,
      ])}`,
    );
  }
  return parts.join('\n\n');
}
