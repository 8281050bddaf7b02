import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import { batchWrites } from '../participant-adapter/batched-writes.ts';
import { BENCH_GID_PREFIX, type Bank } from './world.ts';

/*
 * The bare protocol, by hand: what (a), (b) and (i) run in the benchmark process, and what (j)'s
 * server (bare-http-server.ts) runs behind HTTP. One copy, so that the floors compare alike.
 */

export interface Statement {
  bank: Bank;
  sql: string;
  params: number[];
}

/** The pools the bare protocol writes through: one per bank, and its log (synchronous_commit on). */
export interface BarePools {
  banks: Record<Bank, pg.Pool>;
  log: pg.Pool;
}

export function firstRejection(results: PromiseSettledResult<unknown>[]): unknown {
  return results.find((r): r is PromiseRejectedResult => r.status === 'rejected')?.reason;
}

/**
 * BEGIN; the statement; `ending` (COMMIT or PREPARE TRANSACTION) on one pinned connection, in one
 * round trip and one write, as the service sends a branch: the baselines get the same batching,
 * so that the comparison measures the protocol and the service, not the number of writes.
 */
export async function oneFlight(pool: pg.Pool, s: Statement, ending: string, endsWith: string): Promise<{ ended: boolean; error?: unknown }> {
  const client = await pool.connect();
  let broken = false;
  try {
    batchWrites(client);
    const settled = await Promise.allSettled([client.query('BEGIN'), client.query(s.sql, s.params), client.query(ending)]);
    const end = settled[2]!;
    const ended = end.status === 'fulfilled' && (end.value as pg.QueryResult).command === endsWith;
    const err = firstRejection(settled);
    if (err !== undefined) {
      broken = !(err as { code?: string }).code || end.status === 'rejected';
      return { ended, error: err };
    }
    const write = (settled[1] as PromiseFulfilledResult<pg.QueryResult>).value;
    if (write.rowCount !== 1) return { ended, error: new Error(`${s.bank}: ${write.rowCount} rows written, expected 1`) };
    if (!ended) return { ended, error: new Error(`${s.bank}: the server rolled back at ${endsWith}`) };
    return { ended };
  } finally {
    client.release(broken || undefined);
  }
}

/**
 * BEGIN and the statement in one flight, then PREPARE once the statement has answered: what any
 * caller that runs its own statements and reads their results before committing (the SDK's
 * callback, an interactive REST client) must do, a round trip more per branch than oneFlight.
 */
export async function twoFlights(pool: pg.Pool, s: Statement, gid: string): Promise<{ ended: boolean; error?: unknown }> {
  const client = await pool.connect();
  let broken = false;
  try {
    batchWrites(client);
    const settled = await Promise.allSettled([client.query('BEGIN'), client.query(s.sql, s.params)]);
    const err = firstRejection(settled);
    const write = settled[1]!.status === 'fulfilled' ? (settled[1] as PromiseFulfilledResult<pg.QueryResult>).value : null;
    if (err !== undefined || write?.rowCount !== 1) {
      broken = err !== undefined && !(err as { code?: string }).code;
      if (!broken) await client.query('ROLLBACK').catch(() => (broken = true));
      return { ended: false, error: err ?? new Error(`${s.bank}: ${write?.rowCount} rows written, expected 1`) };
    }
    const end = await client.query(`PREPARE TRANSACTION '${gid}'`).catch((e: unknown) => e as Error);
    if (end instanceof Error) {
      broken = true;
      return { ended: false, error: end };
    }
    return end.command === 'PREPARE' ? { ended: true } : { ended: false, error: new Error(`${s.bank}: the server rolled back at PREPARE`) };
  } finally {
    client.release(broken || undefined);
  }
}

/**
 * One transaction of the bare protocol: prepare every branch in parallel (one flight each, or two
 * when `interactive`), one forced log insert, COMMIT PREPARED on every branch in parallel. A failed
 * vote rolls the prepared branches back and throws; a failed insert too (presumed abort). Returns
 * the wall time of each step.
 */
export async function bareTransaction(
  pools: BarePools,
  statements: Statement[],
  txid: string,
  interactive: boolean,
): Promise<{ prepare: number; decide: number; complete: number }> {
  const gids = statements.map((_, i) => `${BENCH_GID_PREFIX}${txid}:${i}`);
  const t0 = performance.now();
  const votes = await Promise.all(
    statements.map((s, i) =>
      interactive ? twoFlights(pools.banks[s.bank], s, gids[i]!) : oneFlight(pools.banks[s.bank], s, `PREPARE TRANSACTION '${gids[i]}'`, 'PREPARE'),
    ),
  );
  const t1 = performance.now();
  const rollBack = () =>
    Promise.allSettled(statements.map((s, i) => (votes[i]!.ended ? pools.banks[s.bank].query(`ROLLBACK PREPARED '${gids[i]}'`) : Promise.resolve())));
  const no = votes.find((v) => v.error !== undefined);
  if (no) {
    await rollBack();
    throw no.error;
  }
  try {
    await pools.log.query('INSERT INTO decisions (txid) VALUES ($1)', [txid]);
  } catch (err) {
    await rollBack(); // no decision recorded: presumed abort
    throw err;
  }
  const t2 = performance.now();
  const done = await Promise.allSettled(statements.map((s, i) => pools.banks[s.bank].query(`COMMIT PREPARED '${gids[i]}'`)));
  const err = firstRejection(done);
  if (err !== undefined) throw err; // left prepared: the end-of-run sweep finds and reports it
  return { prepare: t1 - t0, decide: t2 - t1, complete: performance.now() - t2 };
}
