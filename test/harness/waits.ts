import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { startPostgresCluster, type PostgresCluster } from '../../coordinator/embedded/postgres-cluster.ts';
import { ACCOUNTS_SQL, createWorld, type HttpAnswer, type World } from './world.ts';

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

/** A world with one more participant, "flaky", on a cluster of its own for the test to stop, crash and restart. */
export async function createFlakyWorld(env: Record<string, string>): Promise<{ flaky: { cluster: PostgresCluster; url: string }; world: World }> {
  const flaky = await startFlakyParticipant();
  try {
    return { flaky, world: await createWorld({ extraResources: { flaky: flaky.url }, env }) };
  } catch (err) {
    await flaky.cluster.destroy();
    throw err;
  }
}

/**
 * A transfer of `amount` on `account` from bank_a to the flaky participant, decided to commit while
 * flaky is down: its branch is prepared, then its cluster crashed before phase 2 (bank_a's branch
 * sleeps meanwhile), so the answer is 202 committing and phase 2 is left to recovery. Returns its id.
 */
export async function decidedWithFlakyDown(
  world: { submit(body: unknown): Promise<HttpAnswer> },
  flaky: { cluster: PostgresCluster; url: string },
  amount: number,
  account: number,
): Promise<string> {
  const pending = world.submit({
    branches: [
      {
        resource: 'bank_a',
        statements: [
          { sql: 'SELECT pg_sleep(1.5)', params: [] },
          { sql: 'UPDATE accounts SET balance = balance - $1 WHERE id = $2', params: [amount, account] },
        ],
      },
      { resource: 'flaky', statements: [{ sql: 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', params: [amount, account] }] },
    ],
    timeoutMs: 10_000,
  });
  await eventually(
    () => query(flaky.url, 'SELECT gid FROM pg_prepared_xacts'),
    (r) => r.length === 1,
    'the flaky branch prepared',
    10_000,
  );
  await flaky.cluster.crash();
  const answer = await pending;
  if (answer.status !== 202 || answer.body.status !== 'committing') {
    throw new Error(`expected 202 committing with the participant down, got ${answer.status} ${JSON.stringify(answer.body)}`);
  }
  return answer.body.id as string;
}
