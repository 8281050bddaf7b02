import { Queue } from 'bullmq';
import { pino } from 'pino';
import { inject } from 'vitest';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { issueSession, sessionKey, SESSION_TTL_SECONDS } from '../coordinator/api/queue-session.ts';
import { startService } from '../coordinator/service.ts';
import { request as httpRequest } from 'node:http';
import { TOKENS, createWorld, move, type World } from './harness/world.ts';

/*
 * The queue board (/queues) changes state only for the operate scope and, when the browser's own
 * cookie is what authenticates, only from a page of the same origin. The cookie is a signed,
 * expiring session bound to the token's name, never the token. Whether a pause happened is read
 * from Redis with BullMQ itself, not from the answer.
 */
describe('the queue board', () => {
  let world: World;
  let queues: Queue[];
  beforeAll(async () => {
    world = await createWorld();
    const prefix = `q${world.namespace.slice(1)}`; // createWorld's queue prefix for this world
    queues = ['completion', 'deadline', 'maintenance'].map(
      (kind) => new Queue(`tpc-${world.namespace}-${kind}`, { connection: { url: inject('redisUrl') }, prefix }),
    );
  });
  afterAll(async () => {
    await Promise.all((queues ?? []).map((q) => q.close()));
    await world?.close();
  });
  beforeEach(async () => {
    await Promise.all(queues.map((q) => q.resume()));
  });

  const paused = async () => (await Promise.all(queues.map((q) => q.isPaused()))).every(Boolean);
  const anyPaused = async () => (await Promise.all(queues.map((q) => q.isPaused()))).some(Boolean);

  async function session(token: string, headers: Record<string, string> = {}) {
    const res = await fetch(`${world.service.url}/v1/session`, { method: 'POST', headers: { authorization: `Bearer ${token}`, ...headers } });
    expect(res.status).toBe(204);
    const setCookie = res.headers.get('set-cookie') ?? '';
    return { setCookie, cookie: setCookie.split(';')[0]! };
  }

  const pauseAll = (headers: Record<string, string>) => fetch(`${world.service.url}/queues/api/queues/pause`, { method: 'PUT', headers });

  async function expectRefused(res: Response, status: number, type?: string) {
    expect(res.status).toBe(status);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json\b/);
    const body = (await res.json()) as { type: string; status: number };
    expect(body.status).toBe(status);
    if (type) expect(body.type).toBe(`urn:tpc:problem:${type}`);
  }

  it('POST /v1/session sets an HttpOnly, SameSite=Strict, /queues-scoped, expiring cookie that is not the token', async () => {
    const { setCookie, cookie } = await session(TOKENS.full);
    expect(setCookie).toMatch(/HttpOnly/i);
    expect(setCookie).toMatch(/SameSite=Strict/i);
    expect(setCookie).toMatch(/Path=\/queues(;|$)/);
    expect(setCookie).toMatch(new RegExp(`Max-Age=${SESSION_TTL_SECONDS}\\b`));
    expect(setCookie).not.toMatch(/Secure/i);
    expect(cookie).not.toContain(TOKENS.full);
    expect(cookie).not.toContain(encodeURIComponent(TOKENS.full));
    // Secure when the browser came over https to a proxy in front of the service.
    expect((await session(TOKENS.full, { 'x-forwarded-proto': 'https' })).setCookie).toMatch(/;\s*Secure/i);
  });

  it('a cookie-authenticated pause from another origin, or with neither Origin nor Sec-Fetch-Site, is refused and pauses nothing', async () => {
    const { cookie } = await session(TOKENS.full);
    const cases: Record<string, string>[] = [
      {},
      { origin: 'http://evil.example' },
      { origin: 'null' },
      { origin: world.service.url.replace('127.0.0.1', 'localhost') },
      { origin: world.service.url.replace('http:', 'https:') },
      { 'sec-fetch-site': 'cross-site' },
      { 'sec-fetch-site': 'same-site' },
      { 'sec-fetch-site': 'none' },
      // Sec-Fetch-Site, which no page can forge, wins over an Origin that looks right.
      { 'sec-fetch-site': 'cross-site', origin: world.service.url },
    ];
    for (const headers of cases) {
      await expectRefused(await pauseAll({ cookie, ...headers }), 403, 'cross-origin');
      expect(await anyPaused(), JSON.stringify(headers)).toBe(false);
    }
    for (const method of ['POST', 'DELETE', 'PATCH']) {
      const res = await fetch(`${world.service.url}/queues/api/queues/pause`, { method, headers: { cookie, origin: 'http://evil.example' } });
      await expectRefused(res, 403, 'cross-origin');
    }
    expect(await anyPaused()).toBe(false);
  });

  it('a cookie-authenticated pause from the same origin pauses every queue', async () => {
    const { cookie } = await session(TOKENS.full);
    const res = await pauseAll({ cookie, origin: world.service.url });
    expect(res.status).toBe(200);
    expect(await paused()).toBe(true);
    await Promise.all(queues.map((q) => q.resume()));
    const bySite = await pauseAll({ cookie, 'sec-fetch-site': 'same-origin' });
    expect(bySite.status).toBe(200);
    expect(await paused()).toBe(true);
    const resumed = await fetch(`${world.service.url}/queues/api/queues/resume`, { method: 'PUT', headers: { cookie, origin: world.service.url } });
    expect(resumed.status).toBe(200);
    expect(await anyPaused()).toBe(false);
  });

  it('behind a TLS proxy, the origin is the one the browser saw (X-Forwarded-Proto and -Host)', async () => {
    const { cookie } = await session(TOKENS.full);
    const proxied = { cookie, 'x-forwarded-proto': 'https', 'x-forwarded-host': 'tpc.example.com' };
    await expectRefused(await pauseAll({ ...proxied, origin: 'https://evil.example' }), 403, 'cross-origin');
    await expectRefused(await pauseAll({ ...proxied, origin: 'http://tpc.example.com' }), 403, 'cross-origin');
    expect(await anyPaused()).toBe(false);
    expect((await pauseAll({ ...proxied, origin: 'https://tpc.example.com' })).status).toBe(200);
    expect(await paused()).toBe(true);
  });

  it('reading the board with the cookie needs no Origin (a read changes nothing)', async () => {
    const { cookie } = await session(TOKENS.full);
    const res = await fetch(`${world.service.url}/queues/api/queues`, { headers: { cookie } });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { queues: unknown[] }).queues).toHaveLength(3);
  });

  it('the operate scope is needed, by cookie or by header: a read token pauses nothing even from the same origin', async () => {
    const { cookie } = await session(TOKENS.reader);
    await expectRefused(await pauseAll({ cookie, origin: world.service.url }), 403, 'forbidden');
    await expectRefused(await pauseAll({ authorization: `Bearer ${TOKENS.reader}` }), 403, 'forbidden');
    await expectRefused(await pauseAll({ authorization: `Bearer ${TOKENS.limited}`, origin: world.service.url }), 403, 'forbidden');
    expect(await anyPaused()).toBe(false);
  });

  it('the Authorization header needs no Origin: no other site can make a browser send it', async () => {
    const res = await pauseAll({ authorization: `Bearer ${TOKENS.full}` });
    expect(res.status).toBe(200);
    expect(await paused()).toBe(true);
  });

  it('a tampered, expired, unknown or raw-token cookie gets 401 and pauses nothing', async () => {
    const { cookie } = await session(TOKENS.full);
    const value = cookie.slice('tpc_queues='.length);
    const [name, expiry, mac] = value.split('.') as [string, string, string];
    const reader = (await session(TOKENS.reader)).cookie.slice('tpc_queues='.length).split('.');
    const forged: Record<string, string> = {
      'a flipped signature': `${name}.${expiry}.${mac.startsWith('A') ? 'B' : 'A'}${mac.slice(1)}`,
      'a later expiry': `${name}.${Number(expiry) + 3600}.${mac}`,
      "the reader's signature under the full name": `${name}.${reader[1]}.${reader[2]}`,
      expired: issueSession('full', sessionKey(TOKENS.full), Date.now() - (SESSION_TTL_SECONDS + 5) * 1000).value,
      'signed by a token not configured': issueSession('full', sessionKey('some-other-token-0123456789')).value,
      'a name not configured': issueSession('ghost', sessionKey(TOKENS.full)).value,
      'the raw token (the old cookie)': TOKENS.full,
      garbage: '%ZZ%',
      empty: '',
    };
    for (const [what, v] of Object.entries(forged)) {
      const res = await pauseAll({ cookie: `tpc_queues=${v}`, origin: world.service.url });
      expect(res.status, what).toBe(401);
      expect(res.headers.get('content-type'), what).toMatch(/^application\/problem\+json\b/);
      expect(await anyPaused(), what).toBe(false);
      expect((await fetch(`${world.service.url}/queues/api/queues`, { headers: { cookie: `tpc_queues=${v}` } })).status, what).toBe(401);
    }
  });

  it('another instance with the same tokens accepts the session; rotating or removing the token revokes it', async () => {
    const { cookie } = await session(TOKENS.full);
    const logger = pino({ level: 'silent' });
    const prefix = `q${world.namespace.slice(1)}`;
    const start = (tokens: typeof world.config.tokens) => startService({ ...world.config, tokens }, { logger, queuePrefix: prefix });
    const same = await start(world.config.tokens);
    const rotated = await start(world.config.tokens!.map((t) => (t.name === 'full' ? { ...t, token: 'rotated-full-token-0123456789' } : t)));
    const removed = await start(world.config.tokens!.filter((t) => t.name !== 'full'));
    try {
      const read = (url: string) => fetch(`${url}/queues/api/queues`, { headers: { cookie } });
      expect((await read(same.url)).status).toBe(200);
      expect((await read(rotated.url)).status).toBe(401);
      expect((await read(removed.url)).status).toBe(401);
      await expectRefused(
        await fetch(`${rotated.url}/queues/api/queues/pause`, { method: 'PUT', headers: { cookie, origin: rotated.url } }),
        401,
        'unauthorized',
      );
      expect(await anyPaused()).toBe(false);
    } finally {
      await Promise.all([same.close(), rotated.close(), removed.close()]);
    }
  });

  it('the session cookie is never accepted by the API', async () => {
    const { cookie } = await session(TOKENS.full);
    await expectRefused(await fetch(`${world.service.url}/v1/transactions`, { headers: { cookie } }), 401);
    await expectRefused(await fetch(`${world.service.url}/v1/session`, { method: 'POST', headers: { cookie } }), 401);
  });
});

describe('the queue board with no tokens configured (loopback only)', () => {
  let world: World;
  let queues: Queue[];
  beforeAll(async () => {
    world = await createWorld({ env: { TPC_API_TOKENS: '' } });
    const prefix = `q${world.namespace.slice(1)}`;
    queues = ['completion', 'deadline', 'maintenance'].map(
      (kind) => new Queue(`tpc-${world.namespace}-${kind}`, { connection: { url: inject('redisUrl') }, prefix }),
    );
  });
  afterAll(async () => {
    await Promise.all((queues ?? []).map((q) => q.close()));
    await world?.close();
  });

  it('a page of another site still cannot pause the queues: every request is let in, so a change needs the same origin', async () => {
    const pause = (headers: Record<string, string>) => fetch(`${world.service.url}/queues/api/queues/pause`, { method: 'PUT', headers });
    for (const headers of [{}, { origin: 'http://evil.example' }, { 'sec-fetch-site': 'cross-site' }] as Record<string, string>[]) {
      const res = await pause(headers);
      expect(res.status, JSON.stringify(headers)).toBe(403);
      expect(((await res.json()) as { type: string }).type).toBe('urn:tpc:problem:cross-origin');
    }
    expect((await Promise.all(queues.map((q) => q.isPaused()))).some(Boolean)).toBe(false);
    expect((await pause({ origin: world.service.url })).status).toBe(200);
    expect((await Promise.all(queues.map((q) => q.isPaused()))).every(Boolean)).toBe(true);
    await Promise.all(queues.map((q) => q.resume()));
    // No tokens, no session: nothing to put in a cookie.
    const session = await fetch(`${world.service.url}/v1/session`, { method: 'POST' });
    expect(session.status).toBe(204);
    expect(session.headers.get('set-cookie')).toBeNull();
  });

  it('the API too: a page of another origin cannot submit, and a rebound domain gets no answer', async () => {
    const submit = (headers: Record<string, string>) =>
      fetch(`${world.service.url}/v1/transactions`, {
        method: 'POST',
        headers: { 'content-type': 'text/plain', ...headers },
        body: JSON.stringify(move('bank_a', 'bank_b', 5)),
      });
    for (const headers of [{ origin: 'http://evil.example' }, { 'sec-fetch-site': 'cross-site' }, { 'sec-fetch-site': 'same-site' }] as Record<
      string,
      string
    >[]) {
      const res = await submit(headers);
      expect(res.status, JSON.stringify(headers)).toBe(403);
      expect(((await res.json()) as { type: string }).type).toBe('urn:tpc:problem:cross-origin');
    }
    expect(await world.balance('bank_a', 1)).toBe(1000);
    // A client that is not a browser (no Origin, no Sec-Fetch-Site), or the service's own page, may.
    expect((await submit({})).status).toBe(201);
    expect((await submit({ origin: world.service.url })).status).toBe(201);
    expect(await world.balance('bank_a', 1)).toBe(990);

    // DNS rebinding: the page's own domain, pointed at 127.0.0.1, arrives in Host.
    const { port } = new URL(world.service.url);
    const withHost = (host: string) =>
      new Promise<number>((resolve, reject) => {
        const req = httpRequest({ host: '127.0.0.1', port, path: '/v1/transactions', headers: { host } }, (res) => {
          res.resume();
          resolve(res.statusCode!);
        });
        req.on('error', reject);
        req.end();
      });
    expect(await withHost(`evil.example:${port}`)).toBe(403);
    expect(await withHost(`localhost:${port}`)).toBe(200);
    expect(await withHost(`127.0.0.1:${port}`)).toBe(200);
  });
});
