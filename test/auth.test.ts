import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../coordinator/config/load-config.ts';
import { BANKS, createWorld, TOKENS, transfer, type HttpAnswer, type World } from './harness/world.ts';

function expectProblem(res: HttpAnswer, status: number): void {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json\b/);
  expect(res.body).toMatchObject({ type: expect.stringMatching(/^urn:tpc:problem:/), title: expect.any(String), status });
}

/** Every bank's balances and the log's row count: what "nothing applied" compares. */
async function stateOf(world: World): Promise<{ balances: number[][]; logRows: number }> {
  await world.service.engine.drain();
  const balances: number[][] = [];
  for (const bank of BANKS) {
    const r = await world.db[bank].query<{ balance: number }>('SELECT balance FROM accounts ORDER BY id');
    balances.push(r.rows.map((x) => x.balance));
  }
  const log = await world.db.log.query<{ n: number }>('SELECT count(*)::int AS n FROM tpc_transactions');
  return { balances, logRows: log.rows[0]!.n };
}

const bankAOnly = {
  branches: [{ resource: 'bank_a', statements: [{ sql: 'UPDATE accounts SET balance = balance - 5 WHERE id = 3', expect: { rowCount: 1 } }] }],
  timeoutMs: 5000,
};

describe('authentication and authorization', () => {
  // One world for all: "nothing applied" is judged against the state each case began with.
  let world: World;
  let before: Awaited<ReturnType<typeof stateOf>>;
  const expectNothingApplied = async (w: World) => expect(await stateOf(w)).toEqual(before);
  beforeAll(async () => {
    world = await createWorld();
  });
  afterAll(async () => {
    await world?.close();
  });
  beforeEach(async () => {
    before = await stateOf(world);
  });

  it('no Authorization header: 401 with WWW-Authenticate, nothing applied', async () => {
    const res = await world.submit(transfer('bank_a', 'bank_b', 100), { token: null as unknown as string });
    expectProblem(res, 401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer\b/);
    await expectNothingApplied(world);
  });

  it.each([
    ['an unknown token', { authorization: 'Bearer wrong-token-0123456789abcdef' }],
    ['a token with a suffix', { authorization: `Bearer ${TOKENS.full}x` }],
    ['a prefix of a token', { authorization: `Bearer ${TOKENS.full.slice(0, -1)}` }],
    ['another scheme', { authorization: `Basic ${TOKENS.full}` }],
    ['a bare token', { authorization: TOKENS.full }],
    ['an empty bearer', { authorization: 'Bearer ' }],
  ])('%s: 401, nothing applied', async (_, headers) => {
    const res = await world.request('POST', '/v1/transactions', transfer('bank_a', 'bank_b', 100), { token: null, headers });
    expectProblem(res, 401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer\b/);
    await expectNothingApplied(world);
  });

  it('no token and a malformed body: 401 (authentication comes before reading the body)', async () => {
    const res = await world.request('POST', '/v1/transactions', undefined, { token: null, raw: '{"branches": [' });
    expectProblem(res, 401);
    await expectNothingApplied(world);
  });

  it('GET without a token: 401', async () => {
    const post = await world.submit(transfer('bank_a', 'bank_b', 1));
    expectProblem(await world.request('GET', `/v1/transactions/${post.body.id}`, undefined, { token: null }), 401);
    expectProblem(await world.request('GET', `/v1/transactions/${post.body.id}`, undefined, { token: 'wrong-token-0123456789abcdef' }), 401);
  });

  it('the reader token may not submit: 403, nothing applied', async () => {
    expectProblem(await world.submit(transfer('bank_a', 'bank_b', 100), { token: TOKENS.reader }), 403);
    await expectNothingApplied(world);
  });

  it('the limited token may not touch bank_b: 403, nothing applied', async () => {
    expectProblem(await world.submit(transfer('bank_a', 'bank_b', 100), { token: TOKENS.limited }), 403);
    expectProblem(await world.submit(transfer('bank_b', 'bank_a', 100), { token: TOKENS.limited }), 403);
    await expectNothingApplied(world);
  });

  it('the limited token on bank_a only: 201', async () => {
    const res = await world.submit(bankAOnly, { token: TOKENS.limited });
    expect(res.status).toBe(201);
    expect(res.body.status).toBe('committed');
    expect(await world.balance('bank_a', 3)).toBe(995);
    const get = await world.request('GET', `/v1/transactions/${res.body.id}`, undefined, { token: TOKENS.limited });
    expect(get.status).toBe(200);
  });

  it('the limited token may not read a transaction that touched bank_b: 404, as for an unknown id; the reader may: 200', async () => {
    const post = await world.submit(transfer('bank_a', 'bank_b', 10));
    expect(post.status).toBe(201);
    expectProblem(await world.request('GET', `/v1/transactions/${post.body.id}`, undefined, { token: TOKENS.limited }), 404);
    const read = await world.request('GET', `/v1/transactions/${post.body.id}`, undefined, { token: TOKENS.reader });
    expect(read.status).toBe(200);
    expect(read.body).toMatchObject({ id: post.body.id, status: 'committed' });
  });

  it('/healthz needs no token: 200', async () => {
    const res = await world.request('GET', '/healthz', undefined, { token: null });
    expect(res.status).toBe(200);
  });

  it('/readyz: 200 with the log and redis checks ok', async () => {
    // Readiness may lag the start by the moment Redis takes to connect; it must come within 2 s.
    let res = await world.request('GET', '/readyz', undefined, { token: null });
    for (let i = 0; res.status !== 200 && i < 40; i++) {
      await sleep(50);
      res = await world.request('GET', '/readyz', undefined, { token: null });
    }
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.checks).toMatchObject({ log: { ok: true }, redis: { ok: true } });
  });

  it('/metrics: 200 text with tpc_transactions_total', async () => {
    await world.submit(transfer('bank_a', 'bank_b', 1));
    const res = await world.request('GET', '/metrics', undefined, { token: null });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(typeof res.body).toBe('string');
    expect(res.body).toContain('tpc_transactions_total');
    // The submission answered without express's router (direct-route.ts) is counted under its route.
    expect(res.body).toMatch(/tpc_http_requests_total\{route="POST \/v1\/transactions",status="201"\} [1-9]/);
  });
});

describe('configuration', () => {
  const base: Record<string, string> = {
    DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/log',
    REDIS_URL: 'redis://127.0.0.1:6379',
    TPC_RESOURCES: JSON.stringify({ bank_a: 'postgres://postgres@127.0.0.1:5432/a' }),
    TPC_API_TOKENS: JSON.stringify([{ name: 'full', token: TOKENS.full, scopes: ['submit', 'read'], resources: ['*'] }]),
  };
  const env = (over: Record<string, string | undefined>) => ({ ...base, ...over });

  function configError(e: Record<string, string | undefined>): ConfigError {
    try {
      loadConfig(e);
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return err as ConfigError;
    }
    throw new Error('loadConfig accepted the environment');
  }

  it('a valid environment loads', () => {
    const c = loadConfig(env({ HOST: '0.0.0.0', PORT: '9000' }));
    expect(c).toMatchObject({ port: 9000, host: '0.0.0.0', resources: { bank_a: { kind: 'postgres', url: expect.any(String) } } });
    expect(loadConfig(env({ TPC_API_TOKENS: undefined })).tokens).toBeNull();
  });

  it.each([undefined, '', '   '])('no tokens (%j) and HOST=0.0.0.0: the error names TPC_API_TOKENS', (tokens) => {
    expect(configError(env({ TPC_API_TOKENS: tokens, HOST: '0.0.0.0' })).message).toContain('TPC_API_TOKENS');
  });

  it('missing DATABASE_URL: the error names DATABASE_URL', () => {
    expect(configError(env({ DATABASE_URL: undefined })).message).toContain('DATABASE_URL');
    expect(configError(env({ DATABASE_URL: 'mysql://x' })).message).toContain('DATABASE_URL');
  });

  it.each(['{not json', '[]', '{}', JSON.stringify({ bank_a: 'not-a-url' }), JSON.stringify({ '1bad': 'postgres://x/y' })])(
    'bad TPC_RESOURCES (%s): the error names TPC_RESOURCES',
    (resources) => {
      expect(configError(env({ TPC_RESOURCES: resources })).message).toContain('TPC_RESOURCES');
    },
  );

  it.each([
    JSON.stringify({ bank_a: { url: 'ftp://x/2pc', token: 'participant-token-0123' } }),
    JSON.stringify({ bank_a: { url: 'http://x/2pc', token: 'short' } }),
    JSON.stringify({ bank_a: { url: 'http://x/2pc' } }),
    JSON.stringify({ bank_a: { url: 'http://x/2pc', token: 'participant-token-0123', extra: 1 } }),
  ])('a bad HTTP resource (%s): the error names TPC_RESOURCES and the resource', (resources) => {
    expect(configError(env({ TPC_RESOURCES: resources })).message).toMatch(/^TPC_RESOURCES: bank_a/);
  });

  it('an HTTP resource loads beside a direct one', () => {
    const c = loadConfig(
      env({ TPC_RESOURCES: JSON.stringify({ a: 'postgres://h/a', b: { url: 'https://stock.internal/2pc', token: 'participant-token-0123' } }) }),
    );
    expect(c.resources).toEqual({
      a: { kind: 'postgres', url: 'postgres://h/a' },
      b: { kind: 'http', url: 'https://stock.internal/2pc', token: 'participant-token-0123' },
    });
  });

  it('TPC_QUEUE_PREFIX: a Redis Cluster hash tag is accepted, anything else odd is named', () => {
    expect(loadConfig(env({ TPC_QUEUE_PREFIX: '{tpc}' })).queuePrefix).toBe('{tpc}');
    expect(loadConfig(env({})).queuePrefix).toBe('bull');
    expect(configError(env({ TPC_QUEUE_PREFIX: 'has space' })).message).toContain('TPC_QUEUE_PREFIX');
  });

  it.each(['abc', '-1', '70000', '80.5'])('bad PORT (%s): the error names PORT', (port) => {
    expect(configError(env({ PORT: port })).message).toMatch(/\bPORT\b/);
  });

  it('two tokens of one name: refused, since a name is who owns a transaction and holds a session', () => {
    const twice = JSON.stringify([
      { name: 'x', token: TOKENS.full, scopes: ['submit'], resources: ['*'] },
      { name: 'x', token: TOKENS.reader, scopes: ['read'], resources: ['*'] },
    ]);
    expect(configError(env({ TPC_API_TOKENS: twice })).message).toMatch(/^TPC_API_TOKENS: the name "x" is used by two tokens/);
  });

  it.each(['embedded', 'anonymous'])('a token named "%s": refused, since the coordinator acts under that name without a token', (name) => {
    const reserved = JSON.stringify([{ name, token: TOKENS.full, scopes: ['submit'], resources: ['*'] }]);
    expect(configError(env({ TPC_API_TOKENS: reserved })).message).toMatch(new RegExp(`^TPC_API_TOKENS: the name "${name}" is reserved`));
  });

  it('bad TPC_API_TOKENS: the error names TPC_API_TOKENS', () => {
    expect(configError(env({ TPC_API_TOKENS: '[{"name":"x"' })).message).toContain('TPC_API_TOKENS');
    expect(configError(env({ TPC_API_TOKENS: JSON.stringify([{ name: 'x', token: 'short', scopes: ['read'], resources: ['*'] }]) })).message).toContain(
      'TPC_API_TOKENS',
    );
  });
});
