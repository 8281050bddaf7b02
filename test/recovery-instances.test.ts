import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCoordinatorProcess, type CoordinatorProcess } from './harness/coordinator-process.ts';
import { eventually } from './harness/waits.ts';
import { BANKS, createDatabases, httpRequest, type Bank, type Databases } from './harness/world.ts';

/*
 * Two coordinator processes share one log and one Redis under load; one is SIGKILLed mid-load.
 * The survivor finishes everything, no transaction is driven twice, and the log agrees with the
 * databases. Requests the dead instance never answered are retried against the survivor with
 * their Idempotency-Key, and the final answer is the one the log holds.
 */
const FAST = {
  TPC_RECONCILE_INTERVAL_MS: '300',
  TPC_RETRY_BASE_MS: '100',
  TPC_RETRY_MAX_MS: '500',
  TPC_SHUTDOWN_TIMEOUT_MS: '5000',
};
const CLIENTS = 8;
const LOAD_MS = 4_000;
const KILL_AT_MS = 1_500;

interface Transfer {
  from: Bank;
  to: Bank;
  account: number;
  amount: number;
}
interface Sent {
  key: string;
  transfer: Transfer;
  body: unknown;
  /** The last answer: 201, 409 (final) or 202 (decided, phase 2 pending). */
  answer?: { status: number; body: any };
  /** The first attempt got no answer (its instance was killed). */
  indeterminate: boolean;
  /** The instance that gave the first answer. */
  via?: 'a' | 'b';
}

function transferOf(client: number, n: number): Transfer {
  const from = BANKS[(client + n) % 3]!;
  const to = BANKS[(client + n + 1) % 3]!;
  // Every fourth one (the second of each client first) asks for more than the account holds: it aborts on its expectation.
  return { from, to, account: client + 1, amount: n % 4 === 1 ? 100_000 : 1 + (n % 7) };
}

function bodyOf(t: Transfer) {
  return {
    branches: [
      {
        resource: t.from,
        statements: [
          { sql: 'UPDATE accounts SET balance = balance - $1 WHERE id = $2 AND balance >= $1', params: [t.amount, t.account], expect: { rowCount: 1 } },
        ],
      },
      { resource: t.to, statements: [{ sql: 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', params: [t.amount, t.account] }] },
    ],
    timeoutMs: 3_000,
  };
}

/** Retries with the same key until the answer is final (201 or 409); bounded. */
async function settle(url: string, s: Sent): Promise<void> {
  const until = Date.now() + 30_000;
  for (;;) {
    const r = await httpRequest(url, 'POST', '/v1/transactions', s.body, { headers: { 'Idempotency-Key': s.key } }).catch(() => undefined);
    if (r) s.answer = r;
    if (r && (r.status === 201 || r.status === 409)) return;
    if (Date.now() > until) throw new Error(`no final answer for ${s.key}: ${JSON.stringify(r?.body)}`);
    await sleep(200);
  }
}

describe('two coordinators on one log and one Redis, one killed mid-load', () => {
  let dbs: Databases;
  let a: CoordinatorProcess | undefined;
  let b: CoordinatorProcess | undefined;
  beforeAll(async () => {
    dbs = await createDatabases();
    [a, b] = await Promise.all([
      startCoordinatorProcess({ ...dbs.env, ...FAST, LOG_LEVEL: 'info', TPC_INSTANCE_ID: 'instance-a' }),
      startCoordinatorProcess({ ...dbs.env, ...FAST, LOG_LEVEL: 'info', TPC_INSTANCE_ID: 'instance-b' }),
    ]);
  });
  afterAll(async () => {
    await Promise.allSettled([a?.kill('SIGKILL'), b?.kill('SIGTERM')]);
    await dbs?.end();
  });

  it('the survivor finishes everything, exactly once, and the log agrees with the databases', async () => {
    const A = a!;
    const B = b!;
    const sent: Sent[] = [];
    const started = Date.now();
    let aDead = false;
    let inFlightToA = 0;
    const client = async (c: number) => {
      // Until the kill too: the killer's row locks can meet a transfer of client 0 that already
      // holds account 1 on one bank and waits for it on another. Neither side sees a deadlock (two
      // databases), so the holders get their locks only when that transfer's deadline aborts it,
      // which can be after LOAD_MS; client 0 must still be sending to A then.
      for (let n = 0; Date.now() - started < LOAD_MS || !aDead; n++) {
        const transfer = transferOf(c, n);
        const s: Sent = { key: `load-${c}-${n}`, transfer, body: bodyOf(transfer), indeterminate: false };
        sent.push(s);
        const toA = c < CLIENTS / 2 && !aDead;
        if (toA) inFlightToA++;
        const r = await httpRequest(toA ? A.url : B.url, 'POST', '/v1/transactions', s.body, { headers: { 'Idempotency-Key': s.key } })
          .catch(() => undefined)
          .finally(() => {
            if (toA) inFlightToA--;
          });
        if (r) {
          s.answer = r;
          s.via = toA ? 'a' : 'b';
        } else s.indeterminate = true;
        // Indeterminate (the instance died), or decided with phase 2 pending: ask the survivor
        // before moving on, so a client never has two transactions on its account at once.
        if (!r || r.status === 202 || r.status >= 500) await settle(B.url, s);
      }
    };
    const killer = (async () => {
      await sleep(KILL_AT_MS);
      // Kill while A surely holds a request it has not answered. Counting requests in flight on the
      // client's side was not enough: an answer A had already written still arrived after the kill,
      // and with a fast log every one of them could. Client 0 (one of A's) finds its account locked
      // on every bank, so its next request waits inside A, on the database, until A is killed.
      const holders = await Promise.all(
        BANKS.map(async (bank) => {
          const holder = await dbs.db[bank].connect();
          await holder.query('BEGIN');
          await holder.query('SELECT 1 FROM accounts WHERE id = 1 FOR UPDATE');
          return holder;
        }),
      );
      try {
        // Asked from other connections: a transaction keeps the list of backends it first saw.
        const waiting = () =>
          Promise.all(
            BANKS.map((bank) =>
              dbs.db[bank]
                .query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
                .then((r) => r.rows[0]!.n),
            ),
          ).then((ns) => ns.reduce((x, y) => x + y, 0));
        await eventually(waiting, (n) => n > 0 && inFlightToA > 0, "a request to A waiting on client 0's locked account", 10_000);
        aDead = true;
        expect(await A.kill('SIGKILL')).toBeNull();
      } finally {
        // Also when the wait failed: the clients load until then.
        aDead = true;
        await Promise.all(
          holders.map(async (holder) => {
            await holder.query('ROLLBACK').catch(() => {});
            holder.release();
          }),
        );
      }
    })();
    await Promise.all([killer, ...Array.from({ length: CLIENTS }, (_, c) => client(c))]);

    // Load was split between both instances, and the kill left requests in flight unanswered.
    const log = dbs.db.log;
    expect(sent.filter((s) => s.via === 'a').length).toBeGreaterThan(0);
    expect(sent.filter((s) => s.via === 'b').length).toBeGreaterThan(0);
    const indeterminate = sent.filter((s) => s.indeterminate);
    expect(indeterminate.length).toBeGreaterThan(0);

    // Everything ends committed or aborted (the survivor recovers what the dead instance held).
    await (async () => {
      const until = Date.now() + 30_000;
      for (;;) {
        const r = await log.query<{ n: number }>("SELECT count(*)::int AS n FROM tpc_transactions WHERE status NOT IN ('committed', 'aborted')");
        if (r.rows[0]!.n === 0) return;
        if (Date.now() > until) throw new Error(`${r.rows[0]!.n} transactions still unfinished`);
        await sleep(200);
      }
    })();
    expect(await dbs.preparedGids()).toEqual([]);

    // Each transaction was decided at most once and completed at most once, by whichever instance.
    const twice = await log.query(`
      SELECT transaction_id,
        count(*) FILTER (WHERE kind = 'decided')::int AS decided,
        count(*) FILTER (WHERE kind = 'completed')::int AS completed,
        count(*) FILTER (WHERE kind IN ('completed', 'aborted'))::int AS finished
      FROM tpc_events GROUP BY transaction_id
      HAVING count(*) FILTER (WHERE kind = 'decided') > 1
          OR count(*) FILTER (WHERE kind = 'completed') > 1
          OR count(*) FILTER (WHERE kind IN ('completed', 'aborted')) > 1`);
    expect(twice.rows).toEqual([]);
    // A lean row writes no happy-path event; its version counts its status changes instead (the
    // begin writes 1, and no path from active to a final state takes more than two moves).
    const moved = await log.query('SELECT id, version FROM tpc_transactions WHERE branches IS NOT NULL AND version > 3');
    expect(moved.rows).toEqual([]);

    // Every request left without a final answer gets one from the survivor, with its key.
    for (const s of sent) if (!s.answer || (s.answer.status !== 201 && s.answer.status !== 409)) await settle(B.url, s);

    // The log by key: one transaction per request, and every final answer matches it.
    const byKey = new Map(
      (
        await log.query<{ key: string; id: string; status: string }>(
          'SELECT k.key, t.id, t.status::text FROM tpc_idempotency_keys k JOIN tpc_transactions t ON t.id = k.transaction_id',
        )
      ).rows.map((r) => [r.key, r]),
    );
    const txCount = (await log.query<{ n: number }>('SELECT count(*)::int AS n FROM tpc_transactions')).rows[0]!.n;
    expect(txCount).toBe(byKey.size); // no transaction without its request's key
    const mismatches: string[] = [];
    for (const s of sent) {
      const row = byKey.get(s.key);
      const want = s.answer?.status === 201 ? 'committed' : s.answer?.status === 409 ? 'aborted' : '?';
      if (!row) mismatches.push(`${s.key}: answered ${s.answer?.status} but not in the log`);
      else if (row.status !== want || row.id !== s.answer?.body.id || s.answer.body.status !== row.status) {
        mismatches.push(`${s.key}: answered ${s.answer?.status} ${s.answer?.body.status} (${s.answer?.body.id}), log ${row.status} (${row.id})`);
      }
    }
    expect(mismatches).toEqual([]);
    for (const s of indeterminate) expect([201, 409]).toContain(s.answer!.status);

    // The databases hold exactly what the committed transactions of the log say.
    const expected = new Map<string, number>();
    const bump = (bank: Bank, account: number, delta: number) => {
      const k = `${bank}/${account}`;
      expected.set(k, (expected.get(k) ?? 1000) + delta);
    };
    for (const s of sent) {
      if (byKey.get(s.key)?.status !== 'committed') continue;
      bump(s.transfer.from, s.transfer.account, -s.transfer.amount);
      bump(s.transfer.to, s.transfer.account, s.transfer.amount);
    }
    const wrong: string[] = [];
    for (const bank of BANKS) {
      const rows = await dbs.db[bank].query<{ id: number; balance: number }>('SELECT id, balance FROM accounts ORDER BY id');
      for (const r of rows.rows) {
        const want = expected.get(`${bank}/${r.id}`) ?? 1000;
        if (r.balance !== want) wrong.push(`${bank}/${r.id}: ${r.balance}, the log says ${want}`);
      }
    }
    expect(wrong).toEqual([]);
    const committed = [...byKey.values()].filter((r) => r.status === 'committed').length;
    expect(committed).toBeGreaterThan(0);
    expect([...byKey.values()].some((r) => r.status === 'aborted')).toBe(true);
    console.info(`requests ${sent.length}, committed ${committed}, indeterminate ${indeterminate.length}`);
  });
});
