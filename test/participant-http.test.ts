import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpParticipant } from '../participant-adapter/http-participant.ts';
import { startParticipantServer, type RunningParticipantServer } from '../participant-adapter/participant-server.ts';
import { startLossyProxy, type LossyProxy } from './harness/lossy-proxy.ts';
import { eventually } from './harness/waits.ts';
import { createWorld, httpRequest, transfer, type World } from './harness/world.ts';

const PARTICIPANT_TOKEN = 'participant-token-0123456789';

/*
 * bank_c is reached only through its participant router (behind a proxy that can lose replies):
 * the coordinator has a URL and a token for it, and no credentials for its database.
 */
describe('a participant reached over HTTP', () => {
  let world: World;
  let router: RunningParticipantServer;
  let proxy: LossyProxy;
  beforeAll(async () => {
    world = await createWorld({
      env: { TPC_RETRY_BASE_MS: '100', TPC_RETRY_MAX_MS: '400', TPC_COMPLETION_WAIT_MS: '5000' },
      beforeStart: async (dbs) => {
        router = await startParticipantServer({
          databaseUrl: dbs.urls.bank_c,
          host: '127.0.0.1',
          port: 0,
          token: PARTICIPANT_TOKEN,
          namespace: dbs.namespace,
          allowStatements: true,
          name: 'bank_c',
          logger: pino({ level: 'silent' }),
        });
        proxy = await startLossyProxy(router.url);
        return { TPC_RESOURCES: JSON.stringify({ bank_a: dbs.urls.bank_a, bank_b: dbs.urls.bank_b, bank_c: { url: proxy.url, token: PARTICIPANT_TOKEN } }) };
      },
    });
  });
  afterAll(async () => {
    await world.close();
    await proxy.close();
    await router.close();
  });

  const gidOf = (id: string, index: number) => `tpc:${world.namespace}:${id}:${index}`;
  const branchCalls = (gid: string) => proxy.calls.filter((c) => c.method === 'POST' && c.path === `/2pc/branches/${encodeURIComponent(gid)}`);

  it('commits a transfer between a direct and a remote resource atomically', async () => {
    const r = await world.submit(transfer('bank_a', 'bank_c', 30, 1, 1));
    expect(r.status).toBe(201);
    expect(r.body.status).toBe('committed');
    expect(await world.balance('bank_a', 1)).toBe(970);
    expect(await world.balance('bank_c', 1)).toBe(1030);
  });

  it('applies neither side when the remote branch fails its expectation', async () => {
    const r = await world.submit(transfer('bank_c', 'bank_a', 5000, 2, 2));
    expect(r.status).toBe(409);
    expect(r.body.error).toMatchObject({ resource: 'bank_c', statement: 0, code: 'expectation_failed' });
    expect(await world.balance('bank_a', 2)).toBe(1000);
    expect(await world.balance('bank_c', 2)).toBe(1000);
  });

  it('prepares a single remote branch too (no one-phase path over HTTP) and reports its results', async () => {
    const r = await world.submit({
      branches: [
        {
          resource: 'bank_c',
          statements: [{ sql: 'UPDATE accounts SET balance = balance + 1 WHERE id = 3' }, { sql: 'SELECT balance FROM accounts WHERE id = $1', params: [3] }],
        },
      ],
    });
    expect(r.status).toBe(201);
    expect(r.body.status).toBe('committed');
    expect(r.body.branches[0].results[1].rows).toEqual([{ balance: 1001 }]);
    // The completion record follows the answer (not forced, batched): wait for it.
    const logged = await eventually(
      () => world.db.log.query('SELECT status, xid FROM tpc_branch_rows WHERE transaction_id = $1', [r.body.id]),
      (q) => q.rows[0]?.status === 'committed',
      'the branch recorded committed',
    );
    expect(logged.rows[0]).toMatchObject({ status: 'committed', xid: expect.stringMatching(/^\d+$/) });
  });

  it('ends a remote statement waiting on a lock at the deadline, naming it, and leaves nothing behind', async () => {
    const holder = await world.db.bank_c.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('UPDATE accounts SET balance = balance WHERE id = 6');
      const res = await world.submit({ ...transfer('bank_a', 'bank_c', 3, 6, 6), timeoutMs: 800 });
      expect(res.status).toBe(409);
      expect(res.body.error).toMatchObject({ resource: 'bank_c', statement: 0, code: 'deadline_exceeded' });
      // The participant ended the waiting statement itself: the lock holder sees no other session waiting.
      await eventually(
        () => world.db.bank_c.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'"),
        (r) => r.rows[0].n === 0,
        'the remote statement ended',
      );
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
    }
    expect(await world.balance('bank_a', 6)).toBe(1000);
    expect(await world.balance('bank_c', 6)).toBe(1000);
    expect(await world.preparedGids()).toEqual([]);
  });

  it('retries a PREPARE whose reply was lost and gets the same answer, without running the statements twice', async () => {
    proxy.dropReplies((m, p) => m === 'POST' && p.startsWith('/2pc/branches/'));
    const r = await world.submit(transfer('bank_a', 'bank_c', 7, 4, 4));
    expect(r.status).toBe(201);
    expect(r.body.status).toBe('committed');
    const calls = branchCalls(gidOf(r.body.id, 1));
    expect(calls.map((c) => c.dropped)).toEqual([true, false]);
    expect(await world.balance('bank_c', 4)).toBe(1007);
    expect(await world.balance('bank_a', 4)).toBe(993);
  });

  it('finishes a transaction whose COMMIT PREPARED reply was lost: the retry is harmless', async () => {
    proxy.dropReplies((m, p) => m === 'POST' && p.endsWith('/commit'));
    const r = await world.submit(transfer('bank_a', 'bank_c', 9, 5, 5));
    expect([200, 201, 202]).toContain(r.status);
    const id = r.body.id as string;
    await eventually(
      () => world.request('GET', `/v1/transactions/${id}`),
      (a) => a.body.status === 'committed',
      'the transaction completed',
    );
    const commits = proxy.calls.filter((c) => c.path === `/2pc/prepared/${encodeURIComponent(gidOf(id, 1))}/commit`);
    expect(commits[0]!.dropped).toBe(true);
    expect(commits.length).toBeGreaterThanOrEqual(2);
    expect(await world.balance('bank_c', 5)).toBe(1009);
    expect(await world.balance('bank_a', 5)).toBe(991);
  });

  it('times the calls made to each participant outside a branch, by operation and outcome', async () => {
    expect((await world.submit(transfer('bank_a', 'bank_c', 1, 8, 8))).body.status).toBe('committed');
    proxy.setDown(true);
    try {
      expect((await world.request('GET', '/v1/resources')).status).toBe(200);
    } finally {
      proxy.setDown(false);
    }
    const metrics = (await world.request('GET', '/metrics')).body as string;
    const count = (labels: string) => Number(new RegExp(`^tpc_participant_operation_seconds_count\\{${labels}\\} (\\d+)$`, 'm').exec(metrics)?.[1] ?? 0);
    expect(count('resource="bank_c",operation="commit_prepared",outcome="ok"')).toBeGreaterThanOrEqual(1);
    expect(count('resource="bank_a",operation="commit_prepared",outcome="ok"')).toBeGreaterThanOrEqual(1);
    expect(count('resource="bank_c",operation="health",outcome="error"')).toBeGreaterThanOrEqual(1);
  });

  it('shows the remote resource in the operator views like any other', async () => {
    const resources = await world.request('GET', '/v1/resources');
    expect(resources.status).toBe(200);
    const c = resources.body.items.find((x: { resource: string }) => x.resource === 'bank_c');
    expect(c).toMatchObject({ kind: 'http', reachable: true, usable: true, prepared: 0, maxPreparedTransactions: expect.any(Number) });
    expect(resources.body.items.find((x: { resource: string }) => x.resource === 'bank_a')).toMatchObject({ kind: 'postgres' });
    // A prepared branch of the namespace that the log does not know is an orphan, seen through HTTP.
    const gid = gidOf(randomUUID(), 0);
    const client = new pg.Client({ connectionString: world.urls.bank_c });
    await client.connect();
    await client.query('BEGIN');
    await client.query('UPDATE accounts SET balance = balance - 1 WHERE id = 9');
    await client.query(`PREPARE TRANSACTION '${gid}'`);
    await client.end();
    const orphans = await world.request('GET', '/v1/orphans?minAgeMs=0');
    expect(orphans.status).toBe(200);
    expect(JSON.stringify(orphans.body)).toContain(gid);
    const resolved = await world.request('POST', '/v1/orphans/resolve', { resource: 'bank_c', gid, outcome: 'abort', reason: 'test orphan' });
    expect(resolved.status, JSON.stringify(resolved.body)).toBe(200);
    expect(await world.preparedGids()).toEqual([]);
    expect(await world.balance('bank_c', 9)).toBe(1000);
  });
});

describe('the participant router', () => {
  let world: World;
  let closed: RunningParticipantServer;
  let open: RunningParticipantServer;
  beforeAll(async () => {
    world = await createWorld();
    const common = {
      databaseUrl: world.urls.bank_c,
      host: '127.0.0.1',
      port: 0,
      token: PARTICIPANT_TOKEN,
      namespace: world.namespace,
      logger: pino({ level: 'silent' }),
    };
    closed = await startParticipantServer(common);
    open = await startParticipantServer({ ...common, allowStatements: true });
  });
  afterAll(async () => {
    await closed.close();
    await open.close();
    await world.close();
  });

  const call = (server: RunningParticipantServer, method: string, path: string, body?: unknown, token: string | null = PARTICIPANT_TOKEN) =>
    httpRequest(server.url, method, path, body, { token });
  const gid = () => `tpc:${world.namespace}:${randomUUID()}:0`;

  it('answers 401 to a missing or wrong token', async () => {
    for (const token of [null, 'wrong-token-0123456789', `${PARTICIPANT_TOKEN}x`]) {
      const r = await call(closed, 'GET', '/health', undefined, token);
      expect(r.status).toBe(401);
      expect(r.headers.get('content-type')).toContain('application/problem+json');
      expect(r.body.type).toBe('urn:tpc:problem:unauthorized');
    }
    expect((await call(closed, 'GET', '/health')).body).toMatchObject({ reachable: true, usable: true, namespace: world.namespace });
  });

  it('is reported unusable by a coordinator of another namespace', async () => {
    const p = new HttpParticipant({ name: 'bank_c', url: closed.url, token: PARTICIPANT_TOKEN, namespace: 'elsewhere' });
    const h = await p.health();
    expect(h).toMatchObject({ reachable: true, usable: false });
    expect(h.message).toContain(`serves namespace "${world.namespace}", not "elsewhere"`);
    expect(await new HttpParticipant({ name: 'bank_c', url: closed.url, token: PARTICIPANT_TOKEN, namespace: world.namespace }).health()).toMatchObject({
      usable: true,
    });
    expect(await new HttpParticipant({ name: 'bank_c', url: closed.url, token: 'wrong-token-0123456789' }).health()).toMatchObject({
      reachable: true,
      usable: false,
      message: expect.stringContaining('refused'),
    });
  });

  it('answers 400 to a gid outside the namespace, on every route that takes one', async () => {
    const outside = [`tpc:other:${randomUUID()}:0`, 'not-a-gid', `tpc:${world.namespace}:xyz:0`, "tpc:x'; DROP TABLE accounts; --"];
    for (const g of outside) {
      for (const [method, path] of [
        ['GET', `/prepared/${encodeURIComponent(g)}`],
        ['POST', `/prepared/${encodeURIComponent(g)}/commit`],
        ['POST', `/prepared/${encodeURIComponent(g)}/rollback`],
      ] as const) {
        const r = await call(closed, method, path);
        expect(r.status, `${method} ${path}`).toBe(400);
        expect(r.body.type).toBe('urn:tpc:problem:gid_outside_namespace');
      }
      const b = await call(open, 'POST', `/branches/${encodeURIComponent(g)}`, { statements: [{ sql: 'SELECT 1' }], statementTimeoutMs: 1000 });
      expect(b.status).toBe(400);
    }
    expect((await call(closed, 'GET', '/prepared?prefix=tpc:')).status).toBe(400);
  });

  it('refuses statements unless the participant enables them', async () => {
    const g = gid();
    const body = { statements: [{ sql: 'UPDATE accounts SET balance = 0 WHERE id = 6' }], statementTimeoutMs: 2000 };
    const refused = await call(closed, 'POST', `/branches/${encodeURIComponent(g)}`, body);
    expect(refused.status).toBe(403);
    expect(refused.body.type).toBe('urn:tpc:problem:statements_disabled');
    expect(await world.balance('bank_c', 6)).toBe(1000);
    const done = await call(open, 'POST', `/branches/${encodeURIComponent(g)}`, body);
    expect(done.status).toBe(200);
    expect(done.body).toMatchObject({ gid: g, prepared: true, xid: expect.stringMatching(/^\d+$/), failure: null });
    expect((await call(closed, 'POST', `/prepared/${encodeURIComponent(g)}/rollback`)).body).toEqual({ gid: g, outcome: 'rolled-back' });
    expect(await world.balance('bank_c', 6)).toBe(1000);
  });

  it('answers a repeated prepare, commit and rollback the same way', async () => {
    const g = gid();
    const body = { statements: [{ sql: 'UPDATE accounts SET balance = balance + 1 WHERE id = 7 RETURNING balance' }], statementTimeoutMs: 2000 };
    const first = await call(open, 'POST', `/branches/${encodeURIComponent(g)}`, body);
    const again = await call(open, 'POST', `/branches/${encodeURIComponent(g)}`, body);
    expect(first.status).toBe(200);
    expect(again.body).toEqual(first.body);
    expect(first.body.results[0].rows).toEqual([{ balance: 1001 }]);
    const commit = await call(closed, 'POST', `/prepared/${encodeURIComponent(g)}/commit`);
    expect(commit.body).toEqual({ gid: g, outcome: 'committed' });
    expect((await call(closed, 'POST', `/prepared/${encodeURIComponent(g)}/commit`)).body).toEqual(commit.body);
    expect(await world.balance('bank_c', 7)).toBe(1001);
    // A prepare whose statements fail is answered with the failure, also on a repeat; nothing stays prepared.
    const g2 = gid();
    const bad = { statements: [{ sql: 'UPDATE accounts SET balance = -1 WHERE id = 8' }], statementTimeoutMs: 2000 };
    const failed = await call(open, 'POST', `/branches/${encodeURIComponent(g2)}`, bad);
    expect(failed.body).toMatchObject({ prepared: false, failure: { statement: 0, code: '23514' } });
    expect((await call(open, 'POST', `/branches/${encodeURIComponent(g2)}`, bad)).body).toEqual(failed.body);
    expect((await call(closed, 'GET', `/prepared/${encodeURIComponent(g2)}`)).status).toBe(404);
  });

  it('answers a repeated prepare after a restart from the database: prepared, results unknown', async () => {
    const g = gid();
    const body = { statements: [{ sql: 'UPDATE accounts SET balance = balance + 1 WHERE id = 10' }], statementTimeoutMs: 2000 };
    expect((await call(open, 'POST', `/branches/${encodeURIComponent(g)}`, body)).body.prepared).toBe(true);
    const restarted = await startParticipantServer({
      databaseUrl: world.urls.bank_c,
      host: '127.0.0.1',
      port: 0,
      token: PARTICIPANT_TOKEN,
      namespace: world.namespace,
      allowStatements: true,
      logger: pino({ level: 'silent' }),
    });
    try {
      const replay = await call(restarted, 'POST', `/branches/${encodeURIComponent(g)}`, body);
      expect(replay.body).toMatchObject({ gid: g, prepared: true, results: null, failure: null });
      expect((await call(restarted, 'POST', `/prepared/${encodeURIComponent(g)}/rollback`)).body.outcome).toBe('rolled-back');
    } finally {
      await restarted.close();
    }
    expect(await world.balance('bank_c', 10)).toBe(1000);
  });
});

describe('a participant service with two replicas behind one URL', () => {
  let world: World;
  let replicas: RunningParticipantServer[];
  let proxy: LossyProxy;
  beforeAll(async () => {
    world = await createWorld({
      beforeStart: async (dbs) => {
        const common = {
          databaseUrl: dbs.urls.bank_c,
          host: '127.0.0.1',
          port: 0,
          token: PARTICIPANT_TOKEN,
          namespace: dbs.namespace,
          allowStatements: true,
          logger: pino({ level: 'silent' }),
        };
        replicas = [await startParticipantServer(common), await startParticipantServer(common)];
        // Only the branch requests alternate, so that a background call cannot come between a
        // lost reply and its retry and send the retry back to the same replica.
        proxy = await startLossyProxy(
          replicas.map((r) => r.url),
          (m, p) => m === 'POST' && p.startsWith('/2pc/branches/'),
        );
        return { TPC_RESOURCES: JSON.stringify({ bank_a: dbs.urls.bank_a, bank_b: dbs.urls.bank_b, bank_c: { url: proxy.url, token: PARTICIPANT_TOKEN } }) };
      },
    });
  });
  afterAll(async () => {
    await world.close();
    await proxy.close();
    for (const r of replicas) await r.close();
  });

  it('commits through either replica, and a PREPARE retried on the other one aborts without running twice', async () => {
    const ok = await world.submit(transfer('bank_a', 'bank_c', 11, 1, 1));
    expect(ok.body.status).toBe('committed');
    // The first replica prepares and its reply is lost; the retry reaches the second replica,
    // which knows only what pg_prepared_xacts says: prepared, results unknown.
    proxy.dropReplies((m, p) => m === 'POST' && p.startsWith('/2pc/branches/'));
    const retried = await world.submit(transfer('bank_a', 'bank_c', 13, 2, 2));
    expect(retried.status).toBe(409);
    expect(retried.body.error).toMatchObject({ resource: 'bank_c', code: 'results_lost' });
    expect(await world.balance('bank_c', 2)).toBe(1000);
    expect(await world.balance('bank_a', 2)).toBe(1000);
    expect(await world.preparedGids()).toEqual([]);
    const calls = proxy.calls.filter((c) => c.path === `/2pc/branches/${encodeURIComponent(`tpc:${world.namespace}:${retried.body.id}:1`)}`);
    expect(calls.map((c) => c.dropped)).toEqual([true, false]);
  });
});
