import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOKENS, createWorld, prepareOwnBranch, type Bank, type HttpAnswer, type World } from './harness/world.ts';

/*
 * An interactive transaction belongs to the token that began it: any other token gets exactly the
 * answer an unknown id gets (so ids leak nothing), and nothing changes in the log or the databases.
 * An operator still resolves it through /resolve, and that is recorded.
 */
const ALICE = 'alice-token-0123456789abcdef';
const BOB = 'bob-token-0123456789abcdef';
const TOKENS_JSON = JSON.stringify([
  { name: 'full', token: TOKENS.full, scopes: ['submit', 'read', 'operate'], resources: ['*'] },
  { name: 'reader', token: TOKENS.reader, scopes: ['read'], resources: ['*'] },
  { name: 'limited', token: TOKENS.limited, scopes: ['submit', 'read'], resources: ['bank_a'] },
  // Alice and Bob have the same scopes and resources: only ownership tells them apart.
  { name: 'alice', token: ALICE, scopes: ['submit', 'read'], resources: ['*'] },
  { name: 'bob', token: BOB, scopes: ['submit', 'read'], resources: ['*'] },
]);

describe('interactive transactions have an owner', () => {
  let world: World;
  beforeAll(async () => {
    world = await createWorld({ env: { TPC_API_TOKENS: TOKENS_JSON, TPC_RECONCILE_INTERVAL_MS: '60000' } });
  });
  afterAll(async () => {
    await world.close();
  });
  const prepare = (bank: Bank, gid: string, sql: string) => prepareOwnBranch(world.urls[bank], gid, sql);

  async function begin(token: string, resources: Bank[] = ['bank_a', 'bank_c']) {
    const r = await world.submit({ interactive: true, branches: resources.map((resource) => ({ resource })), timeoutMs: 20_000 }, { token });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return { id: r.body.id as string, gids: (r.body.branches as { gid: string }[]).map((b) => b.gid) };
  }

  /** The log's record of a transaction: status, branches and events, to show a refused call changed nothing. */
  async function logState(id: string) {
    const tx = await world.db.log.query('SELECT status, decided_at, branch_count FROM tpc_transactions WHERE id = $1', [id]);
    const branches = await world.db.log.query('SELECT index, resource, status FROM tpc_branch_rows WHERE transaction_id = $1 ORDER BY index', [id]);
    const events = await world.db.log.query('SELECT kind, actor FROM tpc_events WHERE transaction_id = $1 ORDER BY id', [id]);
    return { tx: tx.rows, branches: branches.rows, events: events.rows };
  }

  const act = (id: string, action: 'commit' | 'abort' | 'branches', token: string): Promise<HttpAnswer> =>
    world.request('POST', `/v1/transactions/${id}/${action}`, action === 'branches' ? { resource: 'bank_b' } : undefined, { token });

  /** The answer with the id taken out, so an answer about one id can be compared with one about another. */
  const anonymised = (r: HttpAnswer, id: string) => ({
    status: r.status,
    type: r.headers.get('content-type'),
    body: JSON.parse(JSON.stringify(r.body).replaceAll(id, '<id>')),
  });

  it('another token with the same scopes and resources gets the unknown-id 404 on commit, abort and join; nothing changes', async () => {
    const t = await begin(ALICE);
    await prepare('bank_a', t.gids[0]!, 'UPDATE accounts SET balance = balance - 7 WHERE id = 1');
    await prepare('bank_c', t.gids[1]!, 'UPDATE accounts SET balance = balance + 7 WHERE id = 1');
    const before = await logState(t.id);
    const unknown = randomUUID();
    for (const action of ['commit', 'abort', 'branches'] as const) {
      const theirs = await act(t.id, action, BOB);
      const none = await act(unknown, action, BOB);
      expect(theirs.status, `${action}: ${JSON.stringify(theirs.body)}`).toBe(404);
      expect(anonymised(theirs, t.id), action).toEqual(anonymised(none, unknown));
      expect(theirs.body).toMatchObject({ type: 'urn:tpc:problem:not-found', status: 404 });
    }
    expect(await logState(t.id)).toEqual(before);
    expect((await world.preparedGids()).sort()).toEqual([...t.gids].sort());
    expect(await world.balance('bank_a', 1)).toBe(1000);

    // The owner still commits it.
    const mine = await act(t.id, 'commit', ALICE);
    expect(mine.status, JSON.stringify(mine.body)).toBe(200);
    expect(mine.body.status).toBe('committed');
    expect(await world.balance('bank_a', 1)).toBe(993);
    expect(await world.balance('bank_c', 1)).toBe(1007);
    expect(await world.preparedGids()).toEqual([]);
  });

  it('the owner joins and aborts; a join by another token adds no branch', async () => {
    const t = await begin(ALICE, ['bank_a']);
    expect((await act(t.id, 'branches', BOB)).status).toBe(404);
    expect((await logState(t.id)).branches).toHaveLength(1);
    const joined = await act(t.id, 'branches', ALICE);
    expect(joined.status, JSON.stringify(joined.body)).toBe(201);
    expect((await logState(t.id)).branches).toHaveLength(2);
    const aborted = await act(t.id, 'abort', ALICE);
    expect(aborted.status, JSON.stringify(aborted.body)).toBe(200);
    expect(aborted.body.status).toBe('aborted');
    const events = (await logState(t.id)).events;
    expect(events.filter((e) => e.actor === 'bob')).toEqual([]);
    expect(events.find((e) => e.kind === 'decided')?.actor).toBe('alice');
  });

  it('a token whose resources do not cover the transaction gets the same 404, not a 403 that confirms the id', async () => {
    const t = await begin(TOKENS.full);
    const unknown = randomUUID();
    for (const action of ['commit', 'abort'] as const) {
      const theirs = await act(t.id, action, TOKENS.limited);
      expect(theirs.status).toBe(404);
      expect(anonymised(theirs, t.id)).toEqual(anonymised(await act(unknown, action, TOKENS.limited), unknown));
    }
    // Joining a resource it may use, to a transaction it does not own: the same 404.
    const join = await world.request('POST', `/v1/transactions/${t.id}/branches`, { resource: 'bank_a' }, { token: TOKENS.limited });
    expect(join.status).toBe(404);
    expect((await logState(t.id)).tx[0]).toMatchObject({ status: 'active', branch_count: 2 });
    expect((await act(t.id, 'abort', TOKENS.full)).status).toBe(200);
  });

  it('the owner is the token that began it, even when another token began a transaction over the same resources', async () => {
    const a = await begin(ALICE, ['bank_b']);
    const b = await begin(BOB, ['bank_b']);
    expect((await act(a.id, 'abort', BOB)).status).toBe(404);
    expect((await act(b.id, 'abort', ALICE)).status).toBe(404);
    expect((await act(a.id, 'abort', ALICE)).status).toBe(200);
    expect((await act(b.id, 'abort', BOB)).status).toBe(200);
  });

  it('reading is not acting: another token with read scope still reads it', async () => {
    const t = await begin(ALICE, ['bank_b']);
    const read = await world.request('GET', `/v1/transactions/${t.id}`, undefined, { token: BOB });
    expect(read.status).toBe(200);
    expect(read.body).toMatchObject({ id: t.id, status: 'active' });
    expect((await act(t.id, 'abort', ALICE)).status).toBe(200);
  });

  it("an operate token resolves another token's interactive transaction through /resolve, recorded with its name and reason", async () => {
    const t = await begin(ALICE);
    await prepare('bank_a', t.gids[0]!, 'UPDATE accounts SET balance = balance - 3 WHERE id = 5');
    // The operate token is not the owner: it may not use the client's routes...
    expect((await act(t.id, 'abort', TOKENS.full)).status).toBe(404);
    // ...but resolves it as an operator, with a reason.
    const r = await world.request('POST', `/v1/transactions/${t.id}/resolve`, { outcome: 'abort', reason: 'the client is gone' }, { token: TOKENS.full });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    await world.service.engine.drain();
    const after = await logState(t.id);
    expect(after.tx[0]).toMatchObject({ status: 'aborted' });
    expect(after.events).toEqual(expect.arrayContaining([{ kind: 'operator_resolve', actor: 'full' }]));
    const audit = await world.db.log.query("SELECT detail FROM tpc_events WHERE transaction_id = $1 AND kind = 'operator_resolve'", [t.id]);
    expect(audit.rows[0].detail).toMatchObject({ outcome: 'abort', reason: 'the client is gone' });
    expect(await world.preparedGids()).toEqual([]);
    expect(await world.balance('bank_a', 5)).toBe(1000);
    // A submit token without operate may not resolve it: 403 (the scope, not the id).
    const denied = await world.request('POST', `/v1/transactions/${t.id}/resolve`, { outcome: 'abort', reason: 'x' }, { token: ALICE });
    expect(denied.status).toBe(403);
  });
});
