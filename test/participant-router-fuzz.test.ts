import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startParticipantServer, type RunningParticipantServer } from '../participant-adapter/participant-server.ts';
import { createWorld, type World } from './harness/world.ts';

const TOKEN = 'participant-token-0123456789';

/*
 * Generated requests thrown at a participant router that runs statements: arbitrary paths under
 * its routes, gids in and out of the namespace, arbitrary and spoiled bodies, raw non-JSON text.
 * Whatever comes in, the answer is never a 5xx, is problem+json when refused, and nothing is
 * left prepared on the database (each accepted prepare is rolled back at once).
 */
describe('the participant router under generated input', () => {
  let world: World;
  let server: RunningParticipantServer;
  beforeAll(async () => {
    world = await createWorld();
    server = await startParticipantServer({
      databaseUrl: world.urls.bank_c,
      host: '127.0.0.1',
      port: 0,
      token: TOKEN,
      namespace: world.namespace,
      allowStatements: true,
      logger: pino({ level: 'silent' }),
    });
  });
  afterAll(async () => {
    await server.close();
    await world.close();
  });

  it('never answers 5xx, and leaves nothing prepared', async () => {
    const goodGid = () => `tpc:${world.namespace}:${randomUUID()}:0`;
    const gid = fc.oneof(
      { arbitrary: fc.constant(null).map(() => goodGid()), weight: 4 },
      fc.constantFrom(
        `tpc:${world.namespace}:x:0`,
        'tpc:other:00000000-0000-0000-0000-000000000000:0',
        "'; DROP TABLE accounts; --",
        '',
        '%00',
        '..',
        'a'.repeat(500),
      ),
      fc.string({ maxLength: 40 }),
    );
    const statement = fc.oneof(
      {
        weight: 6,
        arbitrary: fc.record({
          sql: fc.constantFrom('SELECT 1', 'UPDATE accounts SET balance = balance WHERE id = 1', 'SELECT $1::int', 'SELEC broken', 'COMMIT', 'SELECT 1/0', ''),
          params: fc.array(fc.jsonValue({ maxDepth: 1 }), { maxLength: 2 }),
        }),
      },
      fc.jsonValue({ maxDepth: 2 }),
    );
    const body = fc.oneof(
      {
        arbitrary: fc.record({
          statements: fc.array(statement, { minLength: 1, maxLength: 3 }),
          statementTimeoutMs: fc.oneof({ arbitrary: fc.constant(2000), weight: 4 }, fc.integer(), fc.double()),
        }),
        weight: 4,
      },
      fc.jsonValue({ maxDepth: 3 }),
    );
    const request = fc.record({
      route: fc.constantFrom('branches', 'branches', 'branches', 'prepared', 'commit', 'rollback', 'inspect', 'xacts', 'list', 'health', 'other'),
      gid,
      body: fc.option(body, { freq: 6 }),
      raw: fc.oneof({ arbitrary: fc.constant(null), weight: 8 }, fc.string({ maxLength: 30 })),
      xid: fc.oneof(fc.constant('123'), fc.string({ maxLength: 25 })),
    });
    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        const g = encodeURIComponent(r.gid);
        const [method, path] = {
          branches: ['POST', `/branches/${g}`],
          prepared: ['GET', `/prepared?prefix=${encodeURIComponent(r.gid)}`],
          commit: ['POST', `/prepared/${g}/commit`],
          rollback: ['POST', `/prepared/${g}/rollback`],
          inspect: ['GET', `/prepared/${g}`],
          xacts: ['GET', `/xacts/${encodeURIComponent(r.xid)}`],
          list: ['GET', '/prepared'],
          health: ['GET', '/health'],
          other: ['DELETE', `/prepared/${g}`],
        }[r.route] as [string, string];
        const send = method === 'POST' && (r.body !== null || r.raw !== null);
        const res = await fetch(`${server.url}${path}`, {
          method,
          headers: { authorization: `Bearer ${TOKEN}`, ...(send ? { 'content-type': 'application/json' } : {}) },
          body: send ? (r.raw ?? JSON.stringify(r.body)) : undefined,
        });
        const text = await res.text();
        expect(res.status, `${method} ${path} → ${text.slice(0, 200)}`).toBeLessThan(500);
        if (res.status >= 400) expect(res.headers.get('content-type')).toContain('application/problem+json');
        const answer = JSON.parse(text) as { prepared?: boolean; gid?: string };
        // Roll back whatever an accepted prepare left, so that runs stay independent.
        if (r.route === 'branches' && answer.prepared && answer.gid) {
          await fetch(`${server.url}/prepared/${encodeURIComponent(answer.gid)}/rollback`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } });
        }
      }),
      { numRuns: 200 },
    );
    expect(await world.preparedGids()).toEqual([]);
    expect(await world.balance('bank_c', 1)).toBe(1000);
  });
});
