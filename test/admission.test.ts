import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startPostgresCluster, type PostgresCluster } from '../coordinator/embedded/postgres-cluster.ts';
import { ACCOUNTS_SQL, createWorld, move, pause, type HttpAnswer, type World } from './harness/world.ts';
import { eventually, query } from './harness/waits.ts';

/*
 * Admission control against a real cluster with max_prepared_transactions = 4, on which two
 * resources (small_a, small_b) live: a transfer between them takes two of the cluster's four
 * prepared slots, so two transfers fit at once. More submissions than that must never meet 53200
 * as a 409: the excess waits briefly, then is refused 503 with Retry-After, having changed nothing.
 */

const ROLE = 'tpc_small';
let cluster: PostgresCluster;

beforeAll(async () => {
  cluster = await startPostgresCluster({ binDir: process.env.TPC_PG_BINDIR, maxPreparedTransactions: 4 });
  // An ordinary role owns the resources: admission reads pg_prepared_xacts without any privilege.
  await query(cluster.url(), `CREATE ROLE ${ROLE} LOGIN`);
});
afterAll(async () => {
  await cluster?.destroy();
});

/** Two databases on the small cluster, owned by the ordinary role, each with the accounts table. */
async function smallResources(): Promise<{ small_a: string; small_b: string }> {
  const tag = randomBytes(4).toString('hex');
  const urls = { small_a: '', small_b: '' };
  for (const name of ['small_a', 'small_b'] as const) {
    const db = `s${tag}_${name}`;
    await query(cluster.url(), `CREATE DATABASE ${db} OWNER ${ROLE}`);
    urls[name] = `postgres://${ROLE}@${cluster.host}:${cluster.port}/${db}`;
    await query(urls[name], ACCOUNTS_SQL);
    // Accounts 11..40 too, so that concurrent transfers can each have their own row.
    await query(urls[name], 'INSERT INTO accounts SELECT g, 1000 FROM generate_series(11, 40) g');
  }
  return urls;
}

const balance = async (url: string, id: number) => (await query<{ balance: number }>(url, 'SELECT balance FROM accounts WHERE id = $1', [id]))[0]!.balance;
const preparedOnCluster = async () => (await query<{ gid: string }>(cluster.url(), 'SELECT gid FROM pg_prepared_xacts')).map((r) => r.gid);
const loggedTransactions = async (world: World) => Number((await world.db.log.query('SELECT count(*) AS n FROM tpc_transactions')).rows[0].n);

/** One value of a metric from GET /metrics, e.g. metric(world, 'tpc_admission_waiting'). */
async function metric(world: World, name: string, labels = ''): Promise<number> {
  const res = await world.request('GET', '/metrics', undefined, { token: null });
  const line = String(res.body)
    .split('\n')
    .find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  return line ? Number(line.split(' ').pop()) : Number.NaN;
}

function expectOverloaded(res: HttpAnswer, reason: string): void {
  expect(res.status, JSON.stringify(res.body)).toBe(503);
  expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  expect(res.headers.get('retry-after')).toBe('1');
  expect(res.body).toMatchObject({ type: 'urn:tpc:problem:overloaded', status: 503, reason });
  expect(['small_a', 'small_b']).toContain(res.body.resource);
}

describe('admission control', () => {
  let world: World | undefined;
  let urls: { small_a: string; small_b: string };
  afterEach(async () => {
    await world?.close();
    world = undefined;
    expect(await preparedOnCluster()).toEqual([]);
  });

  async function start(env: Record<string, string>): Promise<World> {
    urls = await smallResources();
    // The harness's banks may connect as the superuser (tolerated by name); the small resources do not.
    world = await createWorld({ extraResources: urls, env: { TPC_PRIVILEGED_RESOURCES: 'bank_a,bank_b,bank_c', ...env } });
    return world;
  }

  it('sheds what exceeds the slots with 503 and Retry-After: no 409, nothing applied for the refused, money conserved', async () => {
    const w = await start({ TPC_ADMISSION_WAIT_MS: '50', TPC_ADMISSION_QUEUE: '4' });
    const logged = await loggedTransactions(w);
    // Each admitted transfer holds its two slots while its debit sleeps, so most of the 40 find none.
    // Each moves money on an account of its own: no two wait on each other's rows.
    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => w.submit(move('small_a', 'small_b', 1, i + 1, { before: [pause(0.3)] }))));

    const committed = answers.filter((r) => r.status === 201);
    const refused = answers.filter((r) => r.status === 503);
    expect(answers.map((r) => r.status).filter((s) => s !== 201 && s !== 503)).toEqual([]);
    expect(committed.length).toBeGreaterThanOrEqual(2);
    expect(refused.length).toBeGreaterThan(0);
    for (const r of refused) {
      expect(['queue_full', 'wait_timeout']).toContain(r.body.reason);
      expectOverloaded(r, r.body.reason);
      expect(r.body.transactionId).toBeUndefined();
    }
    expect(answers.filter((r) => r.body?.error?.code === '53200')).toEqual([]);

    // The databases: exactly the committed transfers moved money, and a refusal wrote nothing to the log.
    const moved = await Promise.all(answers.map(async (_, i) => [await balance(urls.small_a, i + 1), await balance(urls.small_b, i + 1)]));
    expect(moved).toEqual(answers.map((r) => (r.status === 201 ? [999, 1001] : [1000, 1000])));
    expect(await loggedTransactions(w)).toBe(logged + committed.length);
    expect(await metric(w, 'tpc_admission_slots_in_use', 'resource="small_a"')).toBe(0);
    expect(await metric(w, 'tpc_admission_slots_capacity', 'resource="small_a"')).toBe(4);
  });

  it('refuses at once when the wait queue is full, while the waiter ahead is still waiting', async () => {
    // A long wait (capped at half of the 30 s timeout), so only a full queue can explain a quick refusal.
    const w = await start({ TPC_ADMISSION_WAIT_MS: '60000', TPC_ADMISSION_QUEUE: '1' });
    const locker = new pg.Client({ connectionString: urls.small_a });
    await locker.connect();
    try {
      // The two admitted transfers block on rows the test holds: their slots stay taken until it lets go.
      await locker.query('BEGIN');
      await locker.query('SELECT * FROM accounts WHERE id IN (1, 2) FOR UPDATE');
      const admitted = [1, 2].map((id) => w.submit(move('small_a', 'small_b', 5, id, { timeoutMs: 30_000 })));
      await eventually(
        () => metric(w, 'tpc_admission_slots_in_use', 'resource="small_a"'),
        (n) => n === 2,
        'two transfers admitted',
      );

      let waiterAnswered = false;
      const waiter = w.submit(move('small_a', 'small_b', 5, 3, { timeoutMs: 30_000 })).finally(() => {
        waiterAnswered = true;
      });
      await eventually(
        () => metric(w, 'tpc_admission_waiting'),
        (n) => n === 1,
        'one transfer waiting',
      );

      const refused = await w.submit(move('small_a', 'small_b', 5, 4, { timeoutMs: 30_000 }));
      expectOverloaded(refused, 'queue_full');
      expect(waiterAnswered).toBe(false);
      expect(await metric(w, 'tpc_admission_refusals_total', 'resource="small_a",reason="queue_full"')).toBe(1);

      await locker.query('COMMIT');
      const done = await Promise.all([...admitted, waiter]);
      expect(done.map((r) => r.status)).toEqual([201, 201, 201]);
      expect(await Promise.all([1, 2, 3, 4].map((id) => balance(urls.small_a, id)))).toEqual([995, 995, 995, 1000]);
      expect(await Promise.all([1, 2, 3, 4].map((id) => balance(urls.small_b, id)))).toEqual([1005, 1005, 1005, 1000]);
    } finally {
      await locker.end();
    }
  });

  it('refuses before reading the body when the queue is full and every resource is taken', async () => {
    // One slot per resource and no queue: a transaction over all five takes everything there is.
    const w = await start({ TPC_RESOURCE_POOL_SIZE: '1', TPC_ADMISSION_QUEUE: '0' });
    const locker = new pg.Client({ connectionString: urls.small_a });
    await locker.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('SELECT * FROM accounts WHERE id = 1 FOR UPDATE');
      const add = (resource: string) => ({ resource, statements: [{ sql: 'UPDATE accounts SET balance = balance + 1 WHERE id = 1', params: [] }] });
      const everything = w.submit({ branches: ['small_a', 'small_b', 'bank_a', 'bank_b', 'bank_c'].map(add), timeoutMs: 30_000 });
      await eventually(
        () => metric(w, 'tpc_admission_slots_in_use', 'resource="small_a"'),
        (n) => n === 1,
        'the transaction admitted',
      );

      // Not even parsed: an invalid body gets the overload answer, not 422.
      const shed = await w.submit({ not: 'a transaction' });
      expect(shed.status).toBe(503);
      expect(shed.headers.get('retry-after')).toBe('1');
      expect(shed.body).toMatchObject({ type: 'urn:tpc:problem:overloaded', reason: 'queue_full' });

      await locker.query('COMMIT');
      expect((await everything).status).toBe(201);
      // With slots free again, the same body is read and refused for what it is.
      expect((await w.submit({ not: 'a transaction' })).status).toBe(422);
    } finally {
      await locker.end();
    }
  });

  it('answers 503 with Retry-After when someone else holds the prepared slots (53200), also on replay, and recovers when they let go', async () => {
    const w = await start({ TPC_ADMISSION_WAIT_MS: '50' });
    // Another owner fills all four slots of the cluster behind the coordinator's back.
    const others = Array.from({ length: 4 }, (_, i) => `other:${randomBytes(3).toString('hex')}:${i}`);
    const holder = new pg.Client({ connectionString: cluster.url() });
    await holder.connect();
    try {
      for (const gid of others) await holder.query(`BEGIN; SELECT 1; PREPARE TRANSACTION '${gid}'`);

      const key = { 'Idempotency-Key': `full-${randomBytes(4).toString('hex')}` };
      const first = await w.submit(move('small_a', 'small_b', 7), { headers: key });
      expectOverloaded(first, 'prepare_refused');
      expect(first.body.transactionId).toMatch(/^[0-9a-f-]{36}$/);
      // Aborted with its reason recorded; nothing applied.
      const detail = await w.request('GET', `/v1/transactions/${first.body.transactionId}`);
      expect(detail.body).toMatchObject({ status: 'aborted', error: { code: '53200' } });
      expect([await balance(urls.small_a, 1), await balance(urls.small_b, 1)]).toEqual([1000, 1000]);

      const replay = await w.submit(move('small_a', 'small_b', 7), { headers: key });
      expectOverloaded(replay, 'prepare_refused');
      expect(replay.body.transactionId).toBe(first.body.transactionId);

      // The 53200 had the cluster read again: no slot left, so the next one is refused before it begins.
      await eventually(
        () => metric(w, 'tpc_admission_slots_capacity', 'resource="small_a"'),
        (n) => n === 0,
        'capacity read as 0',
      );
      const logged = await loggedTransactions(w);
      const refused = await w.submit(move('small_a', 'small_b', 7));
      expectOverloaded(refused, 'no_capacity');
      expect(await loggedTransactions(w)).toBe(logged);

      for (const gid of others) await holder.query(`ROLLBACK PREPARED '${gid}'`);
      // Refusals while others held slots have the cluster read again: capacity comes back on its own.
      const ok = await eventually(
        () => w.submit(move('small_a', 'small_b', 7)),
        (r) => r.status === 201,
        'a transfer admitted again',
      );
      expect(ok.body.status).toBe('committed');
      expect([await balance(urls.small_a, 1), await balance(urls.small_b, 1)]).toEqual([993, 1007]);
    } finally {
      for (const gid of others) await holder.query(`ROLLBACK PREPARED '${gid}'`).catch(() => {});
      await holder.end();
    }
  });
});
