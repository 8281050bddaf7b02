import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresCluster } from '../coordinator/embedded/postgres-cluster.ts';
import { preparedOn, withDecisionHeld } from './harness/decision-hold.ts';
import { eventually, query, restartAfterCrash, startFlakyParticipant } from './harness/waits.ts';
import { TOKENS, createWorld, move, pause, type World } from './harness/world.ts';

describe('operators', () => {
  let flaky: { cluster: PostgresCluster; url: string };
  let world: World;
  beforeAll(async () => {
    flaky = await startFlakyParticipant();
    // Slow retries, so that the test, not the completion queue, finishes the in-doubt transaction.
    // The begin record written at once (TPC_BEGIN_DEFER_MS 0): tests hold its row to stop the decision.
    world = await createWorld({
      extraResources: { flaky: flaky.url },
      env: { TPC_RETRY_BASE_MS: '60000', TPC_RETRY_MAX_MS: '60000', TPC_BEGIN_DEFER_MS: '0' },
    });
  });
  afterAll(async () => {
    await world.close();
    await flaky.cluster.destroy();
  });

  it('see every resource with its prepared branches', async () => {
    const r = await world.request('GET', '/v1/resources', undefined, { token: TOKENS.reader });
    expect(r.status).toBe(200);
    expect(r.body.items.map((x: { resource: string }) => x.resource).sort()).toEqual(['bank_a', 'bank_b', 'bank_c', 'flaky']);
    expect(r.body.items[0]).toMatchObject({ reachable: true, usable: true, maxPreparedTransactions: 64, prepared: 0, oldestPreparedSeconds: null });
    const limited = await world.request('GET', '/v1/resources', undefined, { token: TOKENS.limited });
    expect(limited.body.items.map((x: { resource: string }) => x.resource)).toEqual(['bank_a']);
  });

  it('find prepared branches of the namespace that the log does not know, and only those', async () => {
    const orphanGid = `tpc:${world.namespace}:${randomUUID()}:0`;
    const foreignGid = `someone-else:${randomUUID()}`;
    const c = new pg.Client({ connectionString: world.urls.bank_b });
    await c.connect();
    try {
      for (const [i, gid] of [orphanGid, foreignGid].entries()) {
        await c.query('BEGIN');
        await c.query('UPDATE accounts SET balance = balance WHERE id = $1', [9 + i]);
        await c.query(`PREPARE TRANSACTION '${gid}'`);
      }
      const r = await world.request('GET', '/v1/orphans', undefined, { token: TOKENS.reader });
      expect(r.status).toBe(200);
      expect(r.body.items).toEqual([expect.objectContaining({ resource: 'bank_b', gid: orphanGid, ageSeconds: expect.any(Number) })]);
      const resources = await world.request('GET', '/v1/resources');
      expect(resources.body.items.find((x: { resource: string }) => x.resource === 'bank_b')).toMatchObject({ prepared: 1 });

      // Resolving it: a reason is required, operate scope too; commit only with force; others' gids are not ours.
      const resolve = (body: Record<string, unknown>, token?: string) =>
        world.request('POST', '/v1/orphans/resolve', { resource: 'bank_b', gid: orphanGid, ...body }, token ? { token } : {});
      expect((await resolve({})).status).toBe(400);
      expect((await resolve({ reason: 'stale' }, TOKENS.reader)).status).toBe(403);
      const commit = await resolve({ outcome: 'commit', reason: 'I know better' });
      expect(commit.status).toBe(409);
      expect(commit.body.type).toBe('urn:tpc:problem:orphan-commit-refused');
      expect((await world.request('POST', '/v1/orphans/resolve', { resource: 'bank_b', gid: foreignGid, reason: 'not ours' })).status).toBe(404);
      const done = await resolve({ reason: 'left by a crashed coordinator' });
      expect(done.status).toBe(200);
      expect(done.body).toEqual({ result: 'rolled-back' });
      expect((await world.request('GET', '/v1/orphans')).body.items).toEqual([]);
      const audit = await world.db.log.query('SELECT actor, action, gid, reason, detail FROM tpc_audit ORDER BY id');
      expect(audit.rows.map((r) => r.action)).toEqual(['orphan_refused', 'orphan_refused', 'orphan_resolved']);
      expect(audit.rows[2]).toMatchObject({ actor: 'full', gid: orphanGid, reason: 'left by a crashed coordinator', detail: { result: 'rolled-back' } });
    } finally {
      for (const gid of [orphanGid, foreignGid]) await c.query(`ROLLBACK PREPARED '${gid}'`).catch(() => {});
      await c.end();
    }
  });

  it('reach the queue board with the operate scope, by header or by the console session cookie', async () => {
    const url = world.service.url;
    expect((await fetch(`${url}/queues/`)).status).toBe(401);
    expect((await fetch(`${url}/queues/`, { headers: { authorization: `Bearer ${TOKENS.reader}` } })).status).toBe(403);
    const page = await fetch(`${url}/queues/`, { headers: { authorization: `Bearer ${TOKENS.full}` } });
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/<html/i);
    const session = await fetch(`${url}/v1/session`, { method: 'POST', headers: { authorization: `Bearer ${TOKENS.full}` } });
    expect(session.status).toBe(204);
    const cookie = session.headers.get('set-cookie') ?? '';
    expect(cookie).toMatch(/tpc_queues=.*HttpOnly.*SameSite=Strict/i);
    const api = await fetch(`${url}/queues/api/queues`, { headers: { cookie: cookie.split(';')[0]! } });
    expect(api.status).toBe(200);
    const names = ((await api.json()) as { queues: { name: string }[] }).queues.map((q) => q.name);
    expect(names.some((n) => n.endsWith('-completion'))).toBe(true);
    // The cookie opens the board only, never the API.
    expect((await fetch(`${url}/v1/transactions`, { headers: { cookie: cookie.split(';')[0]! } })).status).toBe(401);
    expect((await fetch(`${url}/v1/session`, { method: 'POST' })).status).toBe(401);
  });

  it('page through transactions newest first, filtered by resource and time', async () => {
    const t0 = new Date().toISOString();
    const ids: string[] = [];
    for (const [from, to] of [
      ['bank_a', 'bank_b'],
      ['bank_b', 'bank_c'],
      ['bank_a', 'bank_c'],
    ] as const) {
      const r = await world.submit({
        branches: [
          { resource: from, statements: [{ sql: 'UPDATE accounts SET balance = balance - 1 WHERE id = 8', params: [] }] },
          { resource: to, statements: [{ sql: 'UPDATE accounts SET balance = balance + 1 WHERE id = 8', params: [] }] },
        ],
        timeoutMs: 10_000,
      });
      ids.push(r.body.id);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: { body: { items: { id: string }[]; next: string | null } } = await world.request(
        'GET',
        `/v1/transactions?since=${encodeURIComponent(t0)}&limit=2${cursor ? `&cursor=${cursor}` : ''}`,
      );
      seen.push(...page.body.items.map((t) => t.id));
      cursor = page.body.next;
    } while (cursor);
    expect(seen).toEqual([...ids].reverse());
    const onA = await world.request('GET', `/v1/transactions?since=${encodeURIComponent(t0)}&resource=bank_a`);
    expect(onA.body.items.map((t: { id: string }) => t.id)).toEqual([ids[2], ids[0]]);
    expect(
      (await world.request('GET', `/v1/transactions?before=${encodeURIComponent(t0)}&resource=bank_b&status=committed`)).body.items.every(
        (t: { id: string }) => !ids.includes(t.id),
      ),
    ).toBe(true);
    expect((await world.request('GET', '/v1/transactions?cursor=nonsense')).status).toBe(422);
    expect((await world.request('GET', '/v1/transactions?status=maybe')).status).toBe(422);
  });

  it('refuse a resolution without a reason (400), without the operate scope (403), for an unknown id (404)', async () => {
    const id = randomUUID();
    expect((await world.request('POST', `/v1/transactions/${id}/resolve`, { outcome: 'abort' })).status).toBe(400);
    expect((await world.request('POST', `/v1/transactions/${id}/resolve`, { outcome: 'abort', reason: '   ' })).status).toBe(400);
    expect((await world.request('POST', `/v1/transactions/${id}/resolve`, { outcome: 'maybe', reason: 'x' })).status).toBe(400);
    expect((await world.request('POST', `/v1/transactions/${id}/resolve`, { outcome: 'abort', reason: 'x' }, { token: TOKENS.reader })).status).toBe(403);
    const unknown = await world.request('POST', `/v1/transactions/${id}/resolve`, { outcome: 'abort', reason: 'x' });
    expect(unknown.status).toBe(404);
    expect(unknown.body.type).toBe('urn:tpc:problem:not-found');
  });

  it('refuse to act against a decision, drive it on request, and record every attempt', async () => {
    // A commit decision whose phase 2 cannot reach flaky: hold the decision, crash flaky, let it go.
    const { id, answer } = await withDecisionHeld(
      world,
      move('bank_c', 'flaky', 30, 4, { before: [pause(0.5)] }),
      async () => (await preparedOn(flaky.url, 'tpc:')).length === 1,
      () => flaky.cluster.crash(),
    );
    expect(answer.status).toBe(202);

    // The live view: prepared (with its locks) where the database answers, unreachable where it is down.
    const detail = await world.request('GET', `/v1/transactions/${id}`);
    expect(detail.body.branchDetails).toEqual([
      expect.objectContaining({
        resource: 'bank_c',
        xid: expect.stringMatching(/^\d+$/),
        live: { reachable: true, prepared: false, preparedAt: null, locks: null },
      }),
      expect.objectContaining({ resource: 'flaky', live: expect.objectContaining({ reachable: false }) }),
    ]);

    const against = await world.request('POST', `/v1/transactions/${id}/resolve`, { outcome: 'abort', reason: 'customer called' });
    expect(against.status).toBe(409);
    expect(against.body.type).toBe('urn:tpc:problem:against-decision');
    expect(against.body.detail).toMatch(/durable commit decision/);

    const early = await world.request('POST', `/v1/transactions/${id}/resolve`, { outcome: 'commit', reason: 'finish it' });
    expect(early.status).toBe(200);
    expect(early.body).toMatchObject({ action: 'drove', result: 'pending', transaction: { status: 'committing' } });

    await restartAfterCrash(flaky.cluster);
    const done = await eventually(
      () => world.request('POST', `/v1/transactions/${id}/resolve`, { outcome: 'commit', reason: 'flaky is back' }),
      (r) => r.status === 200 && r.body.result === 'finished',
      'the operator finishing the commit',
    );
    expect(done.body.transaction.status).toBe('committed');
    expect(await world.balance('bank_c', 4)).toBe(970);
    expect((await query<{ balance: number }>(flaky.url, 'SELECT balance FROM accounts WHERE id = 4'))[0]!.balance).toBe(1030);

    const again = await world.request('POST', `/v1/transactions/${id}/resolve`, { outcome: 'abort', reason: 'too late', force: true });
    expect(again.status).toBe(409);
    expect(again.body.type).toBe('urn:tpc:problem:already-finished');

    const trail = await world.request('GET', `/v1/transactions/${id}`);
    const resolutions = trail.body.events.filter((e: { kind: string }) => e.kind === 'operator_resolve');
    expect(resolutions.length).toBeGreaterThanOrEqual(4);
    expect(resolutions[0]).toMatchObject({ actor: 'full', detail: { outcome: 'abort', reason: 'customer called', action: 'refused' } });
    expect(resolutions.some((e: { detail: { action: string } }) => e.detail.action === 'drove')).toBe(true);
    expect(resolutions.at(-1)).toMatchObject({ detail: { outcome: 'abort', force: true, action: 'refused' } });
  });

  it('record a forced resolution against the decision as a heuristic outcome', async () => {
    const log = new pg.Client({ connectionString: world.urls.log });
    await log.connect();
    let id: string;
    try {
      const pending = world.submit(move('bank_a', 'flaky', 40, 5, { before: [pause(0.5)] }));
      const [row] = await eventually(
        () => log.query<{ id: string }>("SELECT id FROM tpc_transactions WHERE status = 'active'").then((r) => r.rows),
        (rows) => rows.length === 1,
        'the begin record',
      );
      id = row!.id;
      await log.query('BEGIN');
      await log.query('SELECT 1 FROM tpc_transactions WHERE id = $1 FOR UPDATE', [id]);
      await eventually(
        () => query<{ gid: string }>(flaky.url, 'SELECT gid FROM pg_prepared_xacts'),
        (r) => r.length === 1,
        'flaky prepared',
      );
      // Both branches prepared, the decision not yet written: the live view shows them holding locks.
      const live = await eventually(
        () => world.request('GET', `/v1/transactions/${id}`),
        (r) => r.body.branchDetails?.every((b: { live?: { prepared?: boolean } }) => b.live?.prepared === true),
        'both branches seen prepared',
      );
      for (const b of live.body.branchDetails)
        expect(b.live).toMatchObject({ reachable: true, prepared: true, preparedAt: expect.any(String), locks: expect.any(Number) });
      expect(live.body.branchDetails[0].live.locks).toBeGreaterThan(0);
      await flaky.cluster.crash();
      await log.query('COMMIT');
      expect((await pending).status).toBe(202);
    } finally {
      await log.end();
    }
    await restartAfterCrash(flaky.cluster);
    // bank_a committed already; the operator insists on rolling flaky's branch back.
    const forced = await eventually(
      () => world.request('POST', `/v1/transactions/${id}/resolve`, { outcome: 'abort', reason: 'refund issued by hand', force: true }),
      (r) => r.status === 200 && r.body.result === 'finished',
      'the forced resolution',
    );
    expect(forced.body).toMatchObject({ action: 'forced', transaction: { status: 'committed', heuristic: true, error: { code: 'heuristic_hazard' } } });
    expect(forced.body.transaction.branches.map((b: { status: string }) => b.status)).toEqual(['committed', 'aborted']);
    const metrics = (await world.request('GET', '/metrics')).body as string;
    expect(metrics).toMatch(/^tpc_heuristic_transactions 1$/m);
    expect(metrics).toMatch(/^tpc_in_doubt_transactions \d+$/m);
    expect(metrics).toMatch(/^tpc_prepared_branches\{resource="flaky"\} 0$/m);
    expect(metrics).toMatch(/^tpc_oldest_prepared_seconds\{resource="bank_a"\} 0$/m);
    expect(metrics).toMatch(/^tpc_orphan_branches\{resource="bank_b"\} 0$/m);
    expect(metrics).toMatch(/^tpc_resource_up\{resource="flaky"\} 1$/m);
    expect((await query<{ balance: number }>(flaky.url, 'SELECT balance FROM accounts WHERE id = 5'))[0]!.balance).toBe(1000);
    expect(await world.preparedGids()).toEqual([]);
  });
});
