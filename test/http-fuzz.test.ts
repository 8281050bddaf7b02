import { connect } from 'node:net';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { titleMisfit } from './harness/problem-title.ts';
import { TOKENS, createWorld, transfer, type World } from './harness/world.ts';

/*
 * Generated requests thrown at EVERY route of the app (read from the OpenAPI document, which
 * test/openapi.test.ts proves equal to the express router's routes, plus the two UI mounts):
 * spoiled paths (malformed percent-encoding, huge or odd segments), any method, odd headers
 * (content types, charsets, encodings, tokens, cookies, origins) and odd bodies. Whatever comes
 * in: never a 5xx, every refusal is problem+json, and the service logs nothing at error level
 * (its pino logger writes to an array this test reads). Requests go one at a time.
 */

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'] as const;
// Bull Board's own API under the /queues mount: reads, and the state changes the board offers.
const BOARD_ROUTES: [string, string][] = [
  ['GET', '/queues/'],
  ['GET', '/queues/api/queues'],
  ['PUT', '/queues/api/queues/pause'],
  ['PUT', '/queues/api/queues/resume'],
  ['PUT', '/queues/api/queues/{queue}/pause'],
  ['PUT', '/queues/api/queues/{queue}/clean/{status}'],
  ['GET', '/queues/api/queues/{queue}/{job}'],
  ['PUT', '/queues/api/queues/{queue}/{job}/retry/failed'],
  ['GET', '/console/'],
  ['GET', '/console/console.js'],
];

// Spoiled path segments: malformed and odd percent-encoding, traversal, NULs, very long, unicode.
const BAD_SEGMENTS = [
  '%ZZ',
  '%',
  '%%',
  '%E0%A4%A',
  '%C0%AF',
  '%FF',
  '%00',
  'a%2Fb',
  '%2e%2e',
  '..',
  '.',
  '%u0041',
  '%',
  'x'.repeat(3000),
  'ü',
  '%F0%9F%98%80',
  '\u{1F600}',
  ';',
  ',',
  '@',
  "'",
  '"',
  '<script>',
  '%3Cscript%3E',
  '__proto__',
  'constructor',
  '00000000-0000-0000-0000-00000000000g',
];
const QUERIES = [
  '',
  '?limit=%ZZ',
  '?status=%',
  '?status=active&status=aborted',
  '?__proto__[x]=1',
  '?limit=1e9',
  '?cursor=%FF%FE',
  '?a[b][c][d][e][f]=1',
  `?x=${'y'.repeat(4000)}`,
  '?&&&=&',
  '?limit=-1',
];

const printable = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 60 });
const HEADER_CHOICES: Record<string, fc.Arbitrary<string>> = {
  authorization: fc.constantFrom(
    `Bearer ${TOKENS.full}`,
    `Bearer ${TOKENS.full}`,
    `Bearer ${TOKENS.full}`,
    `Bearer ${TOKENS.reader}`,
    `Bearer ${TOKENS.limited}`,
    'Bearer',
    'Bearer %ZZ',
    'Basic x',
    `bearer  ${TOKENS.full}  `,
    `Bearer ${'a'.repeat(5000)}`,
  ),
  'content-type': fc.constantFrom(
    'application/json',
    'application/json; charset=utf-8',
    'application/json; charset=utf-16',
    'application/json; charset=bogus',
    'text/plain',
    ';;',
    'application/x-www-form-urlencoded',
    'multipart/form-data; boundary=x',
    'application/json; charset="',
    '*/*',
  ),
  'content-encoding': fc.constantFrom('gzip', 'deflate', 'br', 'x-bogus', 'identity', 'gzip, gzip', ''),
  accept: fc.constantFrom('*/*', 'text/html', 'application/xml', ';q=x', ''),
  'idempotency-key': fc.oneof(printable, fc.constant('')),
  cookie: fc.constantFrom('tpc_queues=%ZZ', 'tpc_queues=', 'tpc_queues=a.b.c', `tpc_queues=${TOKENS.full}`, 'a=b; tpc_queues=x; tpc_queues=y', '=;=;'),
  origin: fc.constantFrom('null', 'http://evil.example', '%ZZ', 'http://[::1', ''),
  'sec-fetch-site': fc.constantFrom('same-origin', 'cross-site', 'none', '%'),
  'x-forwarded-proto': fc.constantFrom('https', 'http', 'gopher', 'https, http', ''),
  'x-forwarded-host': fc.constantFrom('tpc.example.com', '', '[', 'a'.repeat(300)),
  range: fc.constantFrom('bytes=0-1', 'bytes=5-1', 'bytes=x', 'bytes=0-0,1-1,2-2'),
  'if-none-match': fc.constantFrom('*', '"x"', 'W/'),
  'x-http-method-override': fc.constantFrom('DELETE', 'PUT'),
};
const headersArb = fc.dictionary(fc.constantFrom(...Object.keys(HEADER_CHOICES)), fc.constant(null), { maxKeys: 5 }).chain((keys) => {
  const names = Object.keys(keys);
  return fc.tuple(...names.map((n) => HEADER_CHOICES[n]!)).map((values) => Object.fromEntries(names.map((n, i) => [n, values[i]!])));
});

type Body = { kind: string; bytes?: Buffer };
const json = (kind: string, v: unknown): Body => ({ kind, bytes: Buffer.from(JSON.stringify(v)) });
const bodyArb: fc.Arbitrary<Body> = fc.oneof(
  { weight: 3, arbitrary: fc.constant({ kind: 'none' }) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => json('json value', v)) },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      json('transfer', transfer('bank_a', 'bank_b', 1, 5, 6)),
      json('interactive begin', { interactive: true, branches: [{ resource: 'bank_c' }], timeoutMs: 2000 }),
      json('join', { resource: 'bank_b' }),
      json('resolve', { outcome: 'abort', reason: 'fuzz' }),
      json('resolve forced', { outcome: 'commit', reason: 'fuzz', force: true }),
      json('orphan', { resource: 'bank_a', gid: 'tpc:x:y:0', reason: 'fuzz' }),
      json('orphan bad gid', { resource: 'bank_a', gid: "'; DROP TABLE x; --", reason: 'fuzz' }),
    ),
  },
  { weight: 2, arbitrary: fc.string({ maxLength: 200 }).map((s) => ({ kind: 'raw text', bytes: Buffer.from(s) })) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map((b) => ({ kind: 'raw bytes', bytes: Buffer.from(b) })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'gzip of json', bytes: gzipSync(JSON.stringify({ resource: 'bank_b' })) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'over the body limit', bytes: Buffer.from(`{"x":"${'y'.repeat(40_000)}"}`) }) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 2000 }).map((d) => ({ kind: `nested ${d}`, bytes: Buffer.from(`${'['.repeat(d)}${']'.repeat(d)}`) })) },
);

interface Sent {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: Body;
}

describe('every route under generated paths, methods, headers and bodies', () => {
  const logged: { level: number; msg?: string; err?: unknown }[] = [];
  let world: World;
  let routes: [string, string][];
  const ids: string[] = [];

  beforeAll(async () => {
    const sink = {
      write: (line: string) => {
        logged.push(JSON.parse(line));
      },
    };
    world = await createWorld({ env: { TPC_BODY_LIMIT: '16kb' }, logger: pino({ level: 'debug' }, sink) });
    const doc = (await world.request('GET', '/openapi.json')).body as { paths: Record<string, Record<string, unknown>> };
    routes = [
      ...Object.entries(doc.paths).flatMap(([path, item]) =>
        Object.keys(item)
          .filter((k) => (METHODS as readonly string[]).includes(k.toUpperCase()))
          .map((m) => [m.toUpperCase(), path] as [string, string]),
      ),
      ...BOARD_ROUTES,
    ];
    // Real ids, so that the {id} routes reach past the lookup: a committed and an interactive transaction.
    ids.push((await world.submit(transfer('bank_a', 'bank_b', 1))).body.id);
    for (let i = 0; i < 3; i++) ids.push((await world.submit({ interactive: true, branches: [{ resource: 'bank_a' }], timeoutMs: 30_000 })).body.id);
  });
  afterAll(async () => {
    await world?.close();
  });

  const segmentArb = (name: string): fc.Arbitrary<string> =>
    fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom(...BAD_SEGMENTS) },
      { weight: name === 'id' ? 4 : 1, arbitrary: fc.constantFrom(...(ids.length ? ids : ['x'])) },
      { weight: 1, arbitrary: fc.uuid() },
      {
        weight: 1,
        arbitrary:
          name === 'queue'
            ? fc.constantFrom(`tpc-${world.namespace}-completion`, 'nope')
            : name === 'status'
              ? fc.constantFrom('failed', 'completed', 'x')
              : printable.map(encodeURIComponent),
      },
      { weight: 1, arbitrary: printable },
    );

  const requestArb = (): fc.Arbitrary<Sent> =>
    fc.constantFrom(...routes).chain(([method, template]) => {
      const params = [...template.matchAll(/\{(\w+)\}/g)].map((m) => m[1]!);
      return fc
        .record({
          method: fc.oneof({ weight: 4, arbitrary: fc.constant(method) }, { weight: 1, arbitrary: fc.constantFrom(...METHODS) }),
          values: fc.tuple(...params.map(segmentArb)),
          suffix: fc.constantFrom('', '', '', '/', '//', '/%ZZ', '/extra', '/..%2F..'),
          query: fc.constantFrom(...QUERIES),
          headers: headersArb,
          body: bodyArb,
        })
        .map(({ method: m, values, suffix, query, headers, body }) => {
          let i = 0;
          const path = template.replace(/\{\w+\}/g, () => values[i++]!) + suffix + query;
          return { method: m, path, headers, body: m === 'GET' || m === 'HEAD' ? { kind: 'none' } : body };
        });
    });

  const shown = (s: Sent) => `${s.method} ${s.path.slice(0, 200)} ${JSON.stringify(s.headers).slice(0, 300)} body=${s.body.kind}`;

  it('never answers 5xx, refuses with problem+json, and logs nothing at error level', async () => {
    const seen = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(
        requestArb().map((s) => Object.assign(s, { [fc.toStringMethod]: () => shown(s) })),
        async (s) => {
          const before = logged.length;
          let res: Response;
          try {
            res = await fetch(world.service.url + s.path, { method: s.method, headers: s.headers, body: s.body.bytes, redirect: 'manual' });
          } catch (err) {
            // fetch itself refuses a few header values (e.g. an empty Origin is fine, but not every byte): not a request sent.
            if (err instanceof TypeError && !(err as { cause?: unknown }).cause) return;
            throw err;
          }
          const text = await res.text();
          seen.set(res.status, (seen.get(res.status) ?? 0) + 1);
          const what = `${shown(s)} → ${res.status} ${text.slice(0, 300)}`;
          expect(res.status, what).toBeLessThan(500);
          // Past our guards, a UI mount answers in its own way (Bull Board's API: `{"error": …}`);
          // its refusals by our authentication are ours, and problem+json.
          const isUi = s.path.startsWith('/queues') || s.path.startsWith('/console');
          // Commit or abort of a transaction that ended otherwise answers 409 with its outcome and the
          // refusal (README, interactive transactions): a transaction, not a problem. Express routes a
          // trailing slash to the same handler, so `/abort/` is the same route.
          const settledOtherwise =
            res.status === 409 &&
            s.method === 'POST' &&
            /^\/v1\/transactions\/[^/?]+\/(commit|abort)\/?(\?|$)/.test(s.path) &&
            res.headers.get('content-type')?.startsWith('application/json') === true &&
            typeof JSON.parse(text).refusal === 'object';
          if (res.status >= 400 && s.method !== 'HEAD' && !settledOtherwise && (!isUi || res.status === 401 || res.status === 403)) {
            expect(res.headers.get('content-type'), what).toMatch(/^application\/problem\+json\b/);
            expect(JSON.parse(text), what).toMatchObject({ type: expect.stringMatching(/^urn:tpc:problem:/), status: res.status });
            expect(titleMisfit(JSON.parse(text)), what).toBeNull();
          }
          const errors = logged.slice(before).filter((l) => l.level >= 50 || l.msg === 'request failed');
          expect(errors, what).toEqual([]);
        },
      ),
      { numRuns: 300, interruptAfterTimeLimit: 90_000 },
    );
    // The generators reach past the guards as well as into them.
    expect(seen.get(400) ?? 0, JSON.stringify([...seen])).toBeGreaterThan(0);
    expect(
      [...seen.keys()].some((s) => s >= 200 && s < 300),
      JSON.stringify([...seen]),
    ).toBe(true);
  }, 180_000);

  it.each([
    ['GET', '/v1/transactions/%ZZ'],
    ['POST', '/v1/transactions/%ZZ/resolve'],
    ['POST', '/v1/transactions/%ZZ/commit'],
    ['POST', '/v1/transactions/%ZZ/abort'],
    ['POST', '/v1/transactions/%ZZ/branches'],
    ['GET', '/queues/api/queues/%ZZ'],
    ['GET', '/console/%ZZ'],
  ])('%s %s: 400 malformed-url before authentication, nothing logged at error level', async (method, path) => {
    const before = logged.length;
    for (const token of [TOKENS.full, null]) {
      const r = await world.request(method, path, method === 'POST' ? {} : undefined, { token });
      expect(r.status).toBe(400);
      expect(r.headers.get('content-type')).toMatch(/^application\/problem\+json\b/);
      expect(r.body).toMatchObject({ type: 'urn:tpc:problem:malformed-url', status: 400 });
    }
    expect(logged.slice(before).filter((l) => l.level >= 40)).toEqual([]);
    // The OpenAPI document says so.
    if (path.startsWith('/v1/')) {
      const doc = (await world.request('GET', '/openapi.json')).body;
      expect(Object.keys(doc.paths[path.replace('%ZZ', '{id}')][method.toLowerCase()].responses)).toContain('400');
    }
  });

  /** One raw HTTP exchange, for requests fetch would never send. */
  function raw(request: string): Promise<string> {
    const { port } = new URL(world.service.url);
    return new Promise((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1');
      let answer = '';
      socket.on('data', (d) => {
        answer += d.toString('latin1');
      });
      socket.on('end', () => resolve(answer));
      socket.on('error', reject);
      socket.write(request, 'latin1');
    });
  }

  it.each([
    ['a header with a control character', 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\u0001b\r\n\r\n'],
    ['two Content-Lengths that disagree', 'POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab'],
    ['a non-numeric Content-Length', 'POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n'],
    ['a header line without a colon', 'GET /healthz HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n'],
    ['a space in the request target', 'GET /v1/trans actions HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['headers over the limit', `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`],
    ['not HTTP at all', '\u0016\u0003\u0001\u0002\u0000\u0001\u0000\u0001\u00fc\u0003\u0003\r\n\r\n'],
  ])('%s: a 4xx problem+json from the parser, nothing logged at error level', async (_what, request) => {
    const before = logged.length;
    const answer = await raw(request);
    expect(answer).toMatch(/^HTTP\/1\.1 4\d\d /);
    expect(answer).toMatch(/\r\nContent-Type: application\/problem\+json\r\n/i);
    const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4));
    expect(body).toMatchObject({ type: expect.stringMatching(/^urn:tpc:problem:/), status: Number(answer.slice(9, 12)) });
    expect(titleMisfit(body)).toBeNull();
    expect(logged.slice(before).filter((l) => l.level >= 50)).toEqual([]);
  });

  it('an error the listening server reports (an accept failing) is logged, and the service goes on', async () => {
    const before = logged.length;
    world.service.server!.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE', syscall: 'accept' }));
    expect(logged.slice(before)).toEqual([expect.objectContaining({ level: 50, msg: 'the HTTP server reported an error' })]);
    expect((await world.request('GET', '/healthz', undefined, { token: null })).status).toBe(200);
  });

  it('the service still serves afterwards', async () => {
    expect((await world.request('GET', '/healthz', undefined, { token: null })).status).toBe(200);
    // The fuzzer may have paused the queues through the board; resume them before the world closes.
    await fetch(`${world.service.url}/queues/api/queues/resume`, { method: 'PUT', headers: { authorization: `Bearer ${TOKENS.full}` } });
    const r = await world.submit(transfer('bank_a', 'bank_c', 1, 2, 3));
    expect(r.status).toBe(201);
    for (const id of ids.slice(1)) await world.request('POST', `/v1/transactions/${id}/abort`);
    await world.service.engine.drain();
  });
});
