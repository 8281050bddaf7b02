import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { startPostgresCluster, type PostgresCluster } from '../../coordinator/embedded/postgres-cluster.ts';
import { ACCOUNTS_SQL } from './world.ts';

/** One query on a fresh connection (no pool to leak or to hold a dead socket). */
export async function query<T extends pg.QueryResultRow>(url: string, text: string, values: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  c.on('error', () => {});
  await c.connect();
  try {
    return (await c.query<T>(text, values)).rows;
  } finally {
    await c.end();
  }
}

/** Polls `probe` until `ok`, at most `limitMs`; the error says what was awaited and what was last seen. */
export async function eventually<T>(probe: () => Promise<T>, ok: (v: T) => boolean, what: string, limitMs = 30_000): Promise<T> {
  const until = Date.now() + limitMs;
  let last: T | undefined;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) last = v;
    if (v !== undefined && ok(v)) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}; last seen: ${JSON.stringify(last)?.slice(0, 2000)}`);
    await sleep(100);
  }
}

/** Starts a cluster again after a crash; backends of a killed postmaster may take a moment to free shared memory. */
export async function restartAfterCrash(cluster: PostgresCluster): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await cluster.start();
      return;
    } catch (err) {
      if (attempt >= 20) throw err;
      await sleep(250);
    }
  }
}

/** A participant on a cluster of its own (so a test can stop or crash it), with the accounts table. */
export async function startFlakyParticipant(): Promise<{ cluster: PostgresCluster; url: string }> {
  const cluster = await startPostgresCluster({ binDir: process.env.TPC_PG_BINDIR });
  const url = await cluster.createDatabase('flaky');
  await query(url, ACCOUNTS_SQL);
  return { cluster, url };
}
