import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgresCluster, type PostgresCluster } from '../coordinator/embedded/postgres-cluster.ts';
import { startRedisServer, type RedisServer } from '../coordinator/embedded/redis-server.ts';
import { bankSeed, CoordinatorFleet, forEachLimited, queryOnce, restartAfterCrash, Rng, timedRequest } from './harness/bank-harness.ts';
import { ACCOUNTS_SQL, createDatabases, type Databases } from './harness/world.ts';

/*
 * A bank test in the spirit of Jepsen's: concurrent clients move money between accounts on three
 * databases (two shared clusters and one of our own) through coordinator processes, while a
 * nemesis SIGKILLs coordinators, crashes the participant's Postgres, crashes Redis (it comes back
 * empty) and flushes it. Every request carries an Idempotency-Key; a client that got no final
 * answer (202, 503, a dropped connection) asks again later with the same key. Then everything is
 * brought up, every request is settled, and the databases are checked against what the clients
 * were told and what the log says: money is conserved, every committed transfer is applied exactly
 * once on both sides, every aborted one nowhere, the log agrees with itself, nothing stays prepared.
 *
 * The nemesis and the workload draw from a PRNG seeded by BANK_SEED (printed at the start), so a
 * failing schedule can be replayed: BANK_SEED=<seed> npx vitest run test/bank.test.ts
 * (timing still differs between runs: a replay repeats the choices, not the interleaving).
 */

const RESOURCES = ['bank_a', 'bank_c', 'flaky'] as const;
type Resource = (typeof RESOURCES)[number];
const ACCOUNTS = 10;
const INITIAL = 1000;

const CLIENTS = 6;
const COORDINATORS = 2;
const RUN_MS = Math.min(90_000, Math.max(5_000, Number(process.env.BANK_RUN_MS ?? 35_000)));
/**
 * Bound on settling every request and waiting for the log and the databases to be clean. A
 * coordinator killed inside a recovery job leaves that transaction's lease (30 s) and its BullMQ
 * job (found stalled only after 30 to 60 s) behind it, so the last kill may take a minute to heal.
 */
const SETTLE_MS = 80_000;
const HTTP_TIMEOUT_MS = 10_000;
const TX_TIMEOUT_MS = 2_000;
const MAX_OPS_PER_CLIENT = 5_000;

type Final = 'committed' | 'aborted';

interface Attempt {
  at: string;
  coordinator: string;
  answer: string;
}

interface Op {
  key: string;
  client: number;
  from: Resource;
  fromAccount: number;
  to: Resource;
  toAccount: number;
  amount: number;
  body: unknown;
  /** The transaction id, from the first answer that carried one. */
  id?: string;
  /** The first final answer (201 → committed, 409 → aborted). */
  told?: Final;
  /** A 202 said the decision was already written (committing / aborting). */
  promised?: Final;
  /** Told final during the run phase (not only in the settle phase). */
  toldDuringRun: boolean;
  abortCode?: string;
  attempts: Attempt[];
  nextTryAt: number;
}

const t0 = Date.now();
const ts = () => `+${((Date.now() - t0) / 1000).toFixed(1)}s`;
const log = (msg: string) => console.log(`[bank ${ts()}] ${msg}`);

function transferBody(op: Pick<Op, 'from' | 'fromAccount' | 'to' | 'toAccount' | 'amount'>) {
  return {
    branches: [
      {
        resource: op.from,
        statements: [
          { sql: 'UPDATE accounts SET balance = balance - $1 WHERE id = $2 AND balance >= $1', params: [op.amount, op.fromAccount], expect: { rowCount: 1 } },
        ],
      },
      { resource: op.to, statements: [{ sql: 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', params: [op.amount, op.toAccount] }] },
    ],
    timeoutMs: TX_TIMEOUT_MS,
  };
}

describe('bank: transfers across three databases under a nemesis', () => {
  const seed = bankSeed();
  let flakyCluster: PostgresCluster | undefined;
  let flaky: { cluster: PostgresCluster; url: string } | undefined;
  let redis: RedisServer | undefined;
  let dbs: Databases | undefined;
  let fleet: CoordinatorFleet | undefined;
  /** Set to stop the clients and the nemesis (also from afterAll when the test failed midway). */
  let stopping = false;
  const background: Promise<unknown>[] = [];

  beforeAll(async () => {
    console.log(`[bank] seed ${seed} (replay: BANK_SEED=${seed} npx vitest run test/bank.test.ts), run ${RUN_MS} ms`);
    const cluster = await startPostgresCluster();
    flakyCluster = cluster;
    flaky = { cluster, url: await cluster.createDatabase('flaky') };
    await queryOnce(flaky.url, ACCOUNTS_SQL);
    redis = await startRedisServer();
    dbs = await createDatabases({ extraResources: { flaky: flaky.url } });
    fleet = new CoordinatorFleet(
      {
        ...dbs.env,
        REDIS_URL: redis.url,
        LOG_LEVEL: 'info',
        TPC_RECONCILE_INTERVAL_MS: '300',
        TPC_RETRY_BASE_MS: '100',
        TPC_RETRY_MAX_MS: '1000',
        TPC_IN_DOUBT_AFTER_ATTEMPTS: '3',
        TPC_COMPLETION_WAIT_MS: '1000',
        TPC_SHUTDOWN_TIMEOUT_MS: '3000',
        TPC_RESOURCE_POOL_SIZE: '10',
        TPC_LOG_POOL_SIZE: '8',
      },
      COORDINATORS,
      log,
    );
    await fleet.allUp(60_000);
  }, 120_000);

  afterAll(async () => {
    stopping = true;
    await Promise.race([Promise.allSettled(background), sleep(20_000)]);
    await fleet?.close().catch((err: unknown) => log(`closing coordinators: ${String(err)}`));
    await redis?.stop().catch(() => {});
    await flakyCluster?.destroy().catch(() => {});
    await dbs?.end();
  }, 60_000);

  it('conserves money, applies exactly what the clients were told, and leaves nothing prepared', async () => {
    const world = { flaky: flaky!, redis: redis!, dbs: dbs!, fleet: fleet! };
    const ops: Op[] = [];
    const statusCounts = new Map<string, number>();
    const count = (k: string) => statusCounts.set(k, (statusCounts.get(k) ?? 0) + 1);
    /** Answers that break the REST contract (5xx other than 503, unexpected codes or bodies). */
    const contract: string[] = [];
    /** Answers that contradict each other or the log (two outcomes for one key, …). */
    const contradictions: string[] = [];
    const nemesisErrors: string[] = [];
    const runEnd = Date.now() + RUN_MS;

    const pickUrl = (rng: Rng): string | undefined => {
      const urls = world.fleet.live();
      return urls.length ? rng.pick(urls) : undefined;
    };

    const told = (op: Op, final: Final, during: 'run' | 'settle') => {
      if (op.told === undefined) {
        op.told = final;
        op.toldDuringRun = during === 'run';
      } else if (op.told !== final) {
        contradictions.push(`key ${op.key} (${op.id}): told ${op.told}, later ${final}`);
      }
      if (op.promised !== undefined && op.promised !== final) {
        contradictions.push(`key ${op.key} (${op.id}): a 202 said ${op.promised === 'committed' ? 'committing' : 'aborting'}, then told ${final}`);
      }
    };

    /** One POST of the op with its key; records what the client was told. */
    const attempt = async (op: Op, url: string, during: 'run' | 'settle'): Promise<void> => {
      const at = ts();
      let answer: string;
      try {
        const r = await timedRequest(url, 'POST', '/v1/transactions', { body: op.body, headers: { 'Idempotency-Key': op.key }, timeoutMs: HTTP_TIMEOUT_MS });
        const b = r.body as { id?: unknown; status?: unknown; error?: { code?: unknown } | null } | string;
        const status = typeof b === 'object' && b !== null ? b.status : undefined;
        answer = `${r.status}${typeof status === 'string' ? ` ${status}` : ''}`;
        count(String(r.status));
        if (r.status === 201 || r.status === 202 || r.status === 409) {
          const id = typeof b === 'object' && b !== null ? b.id : undefined;
          if (typeof id !== 'string') contract.push(`key ${op.key}: ${r.status} without a transaction id: ${JSON.stringify(b).slice(0, 300)}`);
          else if (op.id !== undefined && op.id !== id)
            contradictions.push(`key ${op.key}: answered with two transaction ids, ${op.id} and ${id} (executed twice?)`);
          else op.id = id;
        }
        if (r.status === 201) {
          if (status !== 'committed') contract.push(`key ${op.key}: 201 with status ${String(status)}`);
          told(op, 'committed', during);
        } else if (r.status === 409) {
          if (status === 'aborted') {
            told(op, 'aborted', during);
            const code = typeof b === 'object' && b !== null ? b.error?.code : undefined;
            op.abortCode ??= typeof code === 'string' ? code : 'none';
          } else {
            contract.push(`key ${op.key}: 409 that is not an aborted transaction: ${JSON.stringify(b).slice(0, 300)}`);
          }
        } else if (r.status === 202) {
          const promised: Final | undefined = status === 'committing' ? 'committed' : status === 'aborting' ? 'aborted' : undefined;
          if (promised !== undefined) {
            if (op.promised !== undefined && op.promised !== promised) contradictions.push(`key ${op.key}: 202 said ${op.promised}, later ${promised}`);
            if (op.told !== undefined && op.told !== promised) contradictions.push(`key ${op.key}: told ${op.told}, later a 202 ${String(status)}`);
            op.promised ??= promised;
          }
        } else if (r.status >= 500 && r.status !== 503) {
          contract.push(`key ${op.key} at ${at} on ${url}: ${r.status} ${JSON.stringify(b).slice(0, 300)}`);
        } else if (r.status !== 503) {
          contract.push(`key ${op.key} at ${at} on ${url}: unexpected ${r.status} ${JSON.stringify(b).slice(0, 300)}`);
        }
      } catch (err) {
        const e = err as Error & { cause?: { code?: string } };
        answer = `error ${e.name}${e.cause?.code ? ` ${e.cause.code}` : ''}`;
        count(e.name === 'TimeoutError' ? 'timeout' : 'network error');
      }
      op.attempts.push({ at, coordinator: url, answer });
    };

    // ---- clients -------------------------------------------------------------------------
    const client = async (c: number): Promise<void> => {
      const rng = new Rng(seed, `client-${c}`);
      const retries: Op[] = [];
      for (let n = 0; !stopping && Date.now() < runEnd && n < MAX_OPS_PER_CLIENT; ) {
        const url = pickUrl(rng);
        if (!url) {
          await sleep(50);
          continue;
        }
        const due = retries.findIndex((op) => op.nextTryAt <= Date.now());
        if (due >= 0) {
          const op = retries[due]!;
          await attempt(op, url, 'run');
          if (op.told !== undefined) retries.splice(due, 1);
          else op.nextTryAt = Date.now() + rng.int(200, 1500);
          continue;
        }
        const from = rng.pick(RESOURCES);
        const to = rng.pick(RESOURCES.filter((r) => r !== from));
        const shape = { from, fromAccount: rng.int(1, ACCOUNTS), to, toAccount: rng.int(1, ACCOUNTS), amount: rng.int(1, 500) };
        const op: Op = {
          key: `bank-${seed}-${c}-${n++}`,
          client: c,
          ...shape,
          body: transferBody(shape),
          toldDuringRun: false,
          attempts: [],
          nextTryAt: 0,
        };
        ops.push(op);
        await attempt(op, url, 'run');
        if (op.told === undefined) {
          op.nextTryAt = Date.now() + rng.int(200, 1500);
          retries.push(op);
        }
        await sleep(rng.int(0, 20));
      }
    };

    // ---- nemesis -------------------------------------------------------------------------
    type Action = 'kill-coordinator' | 'kill-all-coordinators' | 'crash-participant' | 'crash-redis' | 'flush-redis';
    let participantDown = false;
    let redisDown = false;
    const faults = new Set<Promise<void>>();
    const inBackground = (what: string, p: Promise<void>) => {
      const tracked = p
        .catch((err: unknown) => {
          nemesisErrors.push(`${what}: ${String(err)}`);
          log(`nemesis: ${what} failed: ${String(err)}`);
        })
        .finally(() => faults.delete(tracked));
      faults.add(tracked);
    };

    const nemesis = async (): Promise<void> => {
      const rng = new Rng(seed, 'nemesis');
      // Each kind of fault at least once (in a seeded order), then random ones.
      const required: Action[] = rng.shuffle(['kill-coordinator', 'crash-participant', 'crash-redis', 'flush-redis'] as Action[]);
      const random: Action[] = ['kill-coordinator', 'kill-coordinator', 'kill-all-coordinators', 'crash-participant', 'crash-participant', 'crash-redis'];
      let first = true;
      while (!stopping) {
        const wait = first ? rng.int(1_000, 2_500) : rng.int(1_500, 4_000);
        first = false;
        if (Date.now() + wait > runEnd - 1_000) break;
        await sleep(wait);
        if (stopping) break;
        let action = required.shift() ?? rng.pick(random);
        const pause = rng.int(200, 2_500);
        const slotDraw = rng.next();
        const upSlots = Array.from({ length: world.fleet.size }, (_, i) => i).filter((i) => world.fleet.isUp(i));
        const slot = upSlots[Math.floor(slotDraw * upSlots.length)];
        if ((action === 'crash-participant' && participantDown) || ((action === 'crash-redis' || action === 'flush-redis') && redisDown)) {
          if (action === 'flush-redis') required.push(action);
          action = 'kill-coordinator';
        }
        switch (action) {
          case 'kill-coordinator': {
            if (slot === undefined) {
              log('nemesis: kill coordinator skipped: none is up yet');
              break;
            }
            log(`nemesis: kill coordinator in slot ${slot}, replacement in ${pause % 1000} ms`);
            await world.fleet.kill(slot);
            inBackground(
              'restart coordinator',
              sleep(pause % 1000).then(() => world.fleet.start(slot)),
            );
            break;
          }
          case 'kill-all-coordinators': {
            log(`nemesis: kill every coordinator, replacements in ${pause} ms`);
            await Promise.all(Array.from({ length: world.fleet.size }, (_, i) => world.fleet.kill(i)));
            inBackground(
              'restart coordinators',
              sleep(pause).then(() => world.fleet.allUp(60_000)),
            );
            break;
          }
          case 'crash-participant': {
            participantDown = true;
            log(`nemesis: crash the participant cluster (flaky) for ${pause} ms`);
            inBackground(
              'crash participant',
              (async () => {
                try {
                  await world.flaky.cluster.crash();
                  await sleep(pause);
                  await restartAfterCrash(world.flaky.cluster);
                  log('nemesis: participant cluster (flaky) is back');
                } finally {
                  participantDown = false;
                }
              })(),
            );
            break;
          }
          case 'crash-redis': {
            redisDown = true;
            log(`nemesis: crash Redis for ${pause} ms (it comes back empty)`);
            inBackground(
              'crash redis',
              (async () => {
                try {
                  await world.redis.crash();
                  await sleep(pause);
                  await world.redis.start();
                  log('nemesis: Redis is back, empty');
                } finally {
                  redisDown = false;
                }
              })(),
            );
            break;
          }
          case 'flush-redis': {
            log('nemesis: FLUSHALL on Redis');
            const r = new Redis(world.redis.url, { maxRetriesPerRequest: 1, connectTimeout: 2_000, lazyConnect: true });
            r.on('error', () => {});
            try {
              await r.connect();
              await r.flushall();
            } catch (err) {
              nemesisErrors.push(`flushall: ${String(err)}`);
            } finally {
              r.disconnect();
            }
            break;
          }
        }
      }
      // Heal: every fault ends, every coordinator slot is up.
      await Promise.race([Promise.allSettled([...faults]), sleep(30_000)]);
      log('nemesis: stopped; healing');
    };

    log(`run: ${CLIENTS} clients, ${COORDINATORS} coordinators, resources ${RESOURCES.join(', ')}`);
    const clientsDone = Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));
    const nemesisDone = nemesis();
    background.push(clientsDone, nemesisDone);
    await clientsDone;
    await nemesisDone;
    const runOps = ops.length;
    const toldInRun = ops.filter((o) => o.told !== undefined).length;
    log(
      `run over: ${runOps} transfers submitted, ${toldInRun} final answers, ${runOps - toldInRun} indeterminate; answers ${JSON.stringify(Object.fromEntries(statusCounts))}`,
    );

    // ---- settle ------------------------------------------------------------------------------
    const settleEnd = Date.now() + SETTLE_MS;
    await world.fleet.allUp(30_000);
    await queryOnce(world.flaky.url, 'SELECT 1').catch(async () => {
      log('participant cluster not answering: starting it');
      await restartAfterCrash(world.flaky.cluster);
    });
    const probe = new Redis(world.redis.url, { maxRetriesPerRequest: 1, connectTimeout: 2_000, lazyConnect: true });
    probe.on('error', () => {});
    await probe
      .connect()
      .then(() => probe.ping())
      .catch(async () => {
        log('Redis not answering: starting it');
        await world.redis.start();
      })
      .finally(() => probe.disconnect());

    /** What the log says of an op's transaction, for the report of a slow or failed settle. */
    const explain = async (op: Op): Promise<string> => {
      const head = `key ${op.key} ${op.from}:${op.fromAccount} -> ${op.to}:${op.toAccount} amount ${op.amount}; last attempts ${JSON.stringify(op.attempts.slice(-3))}`;
      if (!op.id) return `${head}; no transaction id known`;
      const tx = (
        await world.dbs.db.log.query(
          `SELECT status, driver, lease_until, deadline, attempts, in_doubt, last_error, created_at, decided_at FROM tpc_transactions WHERE id = $1`,
          [op.id],
        )
      ).rows[0] as unknown;
      const branches = (
        await world.dbs.db.log.query('SELECT index, resource, status, xid, gid FROM tpc_branch_rows WHERE transaction_id = $1 ORDER BY index', [op.id])
      ).rows;
      const events = (await world.dbs.db.log.query('SELECT at, kind, actor, detail FROM tpc_events WHERE transaction_id = $1 ORDER BY id', [op.id])).rows;
      return `${head}; now ${new Date().toISOString()}; log ${JSON.stringify(tx)}; branches ${JSON.stringify(branches)}; events ${JSON.stringify(events)}`;
    };

    // Every indeterminate request, asked again with its key until the answer is final.
    const settleRng = new Rng(seed, 'settle');
    const settleStart = Date.now();
    let diagnosed = false;
    for (let round = 0; Date.now() < settleEnd; round++) {
      const open = ops.filter((o) => o.told === undefined);
      if (open.length === 0) break;
      if (round % 10 === 0) log(`settle: ${open.length} requests without a final answer (round ${round})`);
      if (!diagnosed && Date.now() - settleStart > 10_000) {
        diagnosed = true;
        for (const op of open) log(`settle: still open after 10 s: ${await explain(op)}`);
      }
      await forEachLimited(open, CLIENTS, async (op) => {
        const url = pickUrl(settleRng);
        if (url && Date.now() < settleEnd) await attempt(op, url, 'settle');
      });
      if (ops.some((o) => o.told === undefined)) await sleep(300);
    }
    const unresolved = ops.filter((o) => o.told === undefined);

    // A few final answers asked again: an idempotent replay must repeat them.
    const replayed = settleRng.shuffle(ops.filter((o) => o.told !== undefined)).slice(0, 40);
    await forEachLimited(replayed, CLIENTS, async (op) => {
      const url = pickUrl(settleRng);
      if (url) await attempt(op, url, 'settle');
    });

    // The log has nothing unfinished and no participant holds a prepared branch of the namespace.
    const prefix = `tpc:${world.dbs.namespace}:`;
    const preparedEverywhere = async (): Promise<string[]> => {
      const [shared, own] = await Promise.all([
        world.dbs.preparedGids(),
        queryOnce<{ gid: string }>(world.flaky.url, 'SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, $1)', [prefix]),
      ]);
      return [...shared, ...own.map((r) => `flaky:${r.gid}`)];
    };
    let unfinished = -1;
    let prepared: string[] = ['(not checked)'];
    while (Date.now() < settleEnd) {
      const r = await world.dbs.db.log.query<{ n: number }>("SELECT count(*)::int AS n FROM tpc_transactions WHERE status NOT IN ('committed','aborted')");
      unfinished = r.rows[0]!.n;
      prepared = await preparedEverywhere().catch((err: unknown) => [`(cannot list: ${String(err)})`]);
      if (unfinished === 0 && prepared.length === 0) break;
      await sleep(250);
    }
    log(
      `settled in ${((Date.now() - settleStart) / 1000).toFixed(1)} s: ${unresolved.length} unresolved requests, ${unfinished} unfinished in the log, ${prepared.length} prepared branches left`,
    );
    if (unfinished !== 0 || prepared.length !== 0) {
      const stuck = (await world.dbs.db.log.query<{ id: string }>("SELECT id FROM tpc_transactions WHERE status NOT IN ('committed','aborted') LIMIT 5")).rows;
      for (const row of stuck) {
        const op = ops.find((o) => o.id === row.id);
        log(`still unfinished: ${op ? await explain(op) : row.id}`);
      }
    }

    // ---- checks ------------------------------------------------------------------------------
    // The final outcome of every request, from the log through the API; it must agree with what
    // the client was told.
    const outcome = new Map<string, string>();
    const withId = ops.filter((o) => o.id !== undefined);
    await forEachLimited(withId, 16, async (op) => {
      for (let i = 0; i < 5; i++) {
        const url = pickUrl(settleRng);
        if (!url) {
          await sleep(200);
          continue;
        }
        try {
          const r = await timedRequest(url, 'GET', `/v1/transactions/${op.id}`, { timeoutMs: HTTP_TIMEOUT_MS });
          if (r.status !== 200) {
            contract.push(`GET ${op.id}: ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
            return;
          }
          const b = r.body as { status: string; heuristic?: boolean };
          outcome.set(op.id!, b.status);
          if (b.heuristic) contradictions.push(`transaction ${op.id} (key ${op.key}) is flagged heuristic`);
          return;
        } catch {
          await sleep(200);
        }
      }
      contract.push(`GET ${op.id}: no answer`);
    });
    const expected = new Map<string, number>();
    for (const r of RESOURCES) for (let a = 1; a <= ACCOUNTS; a++) expected.set(`${r}:${a}`, INITIAL);
    let committed = 0;
    let aborted = 0;
    for (const op of ops) {
      const final = op.id === undefined ? undefined : outcome.get(op.id);
      if (op.told !== undefined && final !== op.told) {
        contradictions.push(
          `key ${op.key} (${op.id}): client told ${op.told}${op.toldDuringRun ? '' : ' (in settle)'}, log says ${String(final)}; attempts ${JSON.stringify(op.attempts)}`,
        );
      }
      if (op.promised !== undefined && final !== op.promised) {
        contradictions.push(`key ${op.key} (${op.id}): a 202 promised ${op.promised}, log says ${String(final)}`);
      }
      if (final === 'committed') {
        committed++;
        expected.set(`${op.from}:${op.fromAccount}`, expected.get(`${op.from}:${op.fromAccount}`)! - op.amount);
        expected.set(`${op.to}:${op.toAccount}`, expected.get(`${op.to}:${op.toAccount}`)! + op.amount);
      } else if (final === 'aborted') {
        aborted++;
      }
    }

    // The balances themselves.
    const actual = new Map<string, number>();
    const readAccounts = async (resource: Resource) =>
      resource === 'flaky'
        ? queryOnce<{ id: number; balance: number }>(world.flaky.url, 'SELECT id, balance FROM accounts ORDER BY id')
        : (await world.dbs.db[resource].query<{ id: number; balance: number }>('SELECT id, balance FROM accounts ORDER BY id')).rows;
    for (const r of RESOURCES) for (const row of await readAccounts(r)) actual.set(`${r}:${row.id}`, row.balance);
    const untouched = (await world.dbs.db.bank_b.query<{ total: number }>('SELECT sum(balance)::int AS total FROM accounts')).rows[0]!.total;
    const total = [...actual.values()].reduce((s, v) => s + v, 0);
    const balanceDiffs = [...expected].flatMap(([k, want]) => (actual.get(k) === want ? [] : [`${k}: expected ${want}, found ${String(actual.get(k))}`]));
    // For a wrong balance, the transfers that could explain it (same account, amount = the difference).
    for (const [k, want] of expected) {
      const found = actual.get(k);
      if (found === undefined || found === want) continue;
      const diff = Math.abs(found - want);
      const suspects = ops.filter((o) => o.amount === diff && (`${o.from}:${o.fromAccount}` === k || `${o.to}:${o.toAccount}` === k));
      for (const op of suspects.slice(0, 10)) {
        log(
          `balance of ${k} off by ${found - want}: candidate ${op.key}, log outcome ${op.id ? String(outcome.get(op.id)) : 'none'}, told ${String(op.told)} (abort code ${String(op.abortCode)}): ${await explain(op)}`,
        );
      }
    }

    // The log agrees with itself: every transaction final, its branches all ending its way,
    // no heuristic outcome, and exactly one transaction per key the clients used.
    const logRows = (
      await world.dbs.db.log.query<{ id: string; status: string; heuristic: boolean; branches: string[] }>(
        `
      SELECT t.id, t.status, t.heuristic, array_agg(b.status::text ORDER BY b.index) AS branches
      FROM tpc_transactions t JOIN tpc_branch_rows b ON b.transaction_id = t.id
      WHERE t.namespace = $1 GROUP BY t.id`,
        [world.dbs.namespace],
      )
    ).rows;
    const logProblems: string[] = [];
    for (const row of logRows) {
      const want = row.status === 'committed' ? 'committed' : row.status === 'aborted' ? 'aborted' : undefined;
      if (!want) logProblems.push(`${row.id}: status ${row.status}`);
      else if (row.branches.some((b) => b !== want)) logProblems.push(`${row.id}: ${row.status} with branches ${row.branches.join(',')}`);
      if (row.heuristic) logProblems.push(`${row.id}: heuristic`);
    }
    const opIds = new Set(withId.map((o) => o.id!));
    for (const row of logRows) if (!opIds.has(row.id)) logProblems.push(`${row.id}: in the log (${row.status}) but no client was ever answered with it`);
    const keys = (await world.dbs.db.log.query<{ n: number }>('SELECT count(*)::int AS n FROM tpc_idempotency_keys')).rows[0]!.n;
    if (keys !== logRows.length) logProblems.push(`${keys} idempotency keys for ${logRows.length} transactions`);

    // What the coordinators themselves reported.
    const errorLogs = world.fleet.all.flatMap((p) => p.logs.filter((l) => typeof l.level === 'number' && l.level >= 50));
    const hazardLogs = errorLogs.filter((l) => String(l.msg).includes('heuristic'));
    const errorKinds = new Map<string, number>();
    for (const l of errorLogs) errorKinds.set(String(l.msg), (errorKinds.get(String(l.msg)) ?? 0) + 1);

    const abortCodes = new Map<string, number>();
    for (const op of ops) if (op.abortCode) abortCodes.set(op.abortCode, (abortCodes.get(op.abortCode) ?? 0) + 1);
    log(
      `summary (seed ${seed}): ${ops.length} transfers, ${committed} committed, ${aborted} aborted; ` +
        `${ops.length - toldInRun} indeterminate at the end of the run, ${unresolved.length} never resolved; ` +
        `abort codes ${JSON.stringify(Object.fromEntries(abortCodes))}; answers ${JSON.stringify(Object.fromEntries(statusCounts))}; ` +
        `total ${total} (want ${RESOURCES.length * ACCOUNTS * INITIAL}); coordinator error logs ${JSON.stringify(Object.fromEntries(errorKinds))}; ` +
        `coordinators started ${world.fleet.all.length}`,
    );
    for (const [name, list] of Object.entries({
      contract,
      contradictions,
      balanceDiffs,
      logProblems,
      nemesisErrors,
      unexpectedExits: world.fleet.unexpectedExits,
    })) {
      if (list.length) log(`${name} (${list.length}):\n  ${list.slice(0, 20).join('\n  ')}`);
    }

    expect(ops.length).toBeGreaterThan(0);
    expect(nemesisErrors).toEqual([]);
    expect(unresolved.map((o) => `${o.key}: ${JSON.stringify(o.attempts.slice(-3))}`)).toEqual([]);
    expect(unfinished).toBe(0);
    // (4) nothing of the namespace left prepared anywhere.
    expect(prepared).toEqual([]);
    // (5) no 5xx other than 503, and every answer in the contract's shape.
    expect(contract).toEqual([]);
    // (2) every final answer agrees with the log, and the log never changed a decision.
    expect(contradictions).toEqual([]);
    // (1) money conserved, and (2) exactly the committed transfers applied on every account.
    expect(total).toBe(RESOURCES.length * ACCOUNTS * INITIAL);
    expect(untouched).toBe(ACCOUNTS * INITIAL);
    expect(balanceDiffs).toEqual([]);
    // (3) the log agrees with itself and with the clients' keys.
    expect(logProblems).toEqual([]);
    expect(hazardLogs).toEqual([]);
    // The coordinator never died on its own.
    expect(world.fleet.unexpectedExits).toEqual([]);
  }, 170_000);
});
