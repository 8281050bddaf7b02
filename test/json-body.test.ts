import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import express, { type ErrorRequestHandler, type RequestHandler } from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonBody, limitBytes } from '../coordinator/api/json-body.ts';

/*
 * The lean body reader against the body-parser it stands in for: the same requests, over real
 * HTTP, to one server with each; the body each sets, or the error each raises (status, type,
 * message), must be the same, for ordinary bodies, every malformed one we could think of, and
 * random bytes.
 */
const LIMIT = '200b';

function app(parser: RequestHandler) {
  const a = express();
  a.post('/', parser, (req, res) => {
    res.json({ body: req.body === undefined ? '<undefined>' : req.body });
  });
  const errors: ErrorRequestHandler = (err, _req, res, _next) => {
    res.status(299).json({ error: { status: err.status, type: err.type, message: err.message } });
  };
  a.use(errors);
  return a;
}

interface Case {
  body?: Buffer | string;
  headers?: Record<string, string>;
  /** Sent without Content-Length (chunked). */
  chunked?: boolean;
}

async function send(port: number, c: Case): Promise<unknown> {
  const body = c.body === undefined ? undefined : Buffer.isBuffer(c.body) ? c.body : Buffer.from(c.body, 'utf8');
  const headers: Record<string, string | number> = { ...c.headers };
  if (body !== undefined && !c.chunked) headers['content-length'] = body.length;
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode, ...JSON.parse(Buffer.concat(chunks).toString('utf8')) }));
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

describe('the JSON body reader', () => {
  let ours: ReturnType<ReturnType<typeof app>['listen']>;
  let theirs: ReturnType<ReturnType<typeof app>['listen']>;
  const port = (s: typeof ours) => (s.address() as AddressInfo).port;
  beforeAll(async () => {
    ours = app(jsonBody(LIMIT)).listen(0, '127.0.0.1');
    theirs = app(express.json({ limit: LIMIT, strict: true, type: () => true })).listen(0, '127.0.0.1');
    await Promise.all([ours, theirs].map((s) => new Promise((r) => s.once('listening', r))));
  });
  afterAll(() => {
    ours.close();
    theirs.close();
  });

  const same = async (c: Case) => {
    const [a, b] = await Promise.all([send(port(ours), c), send(port(theirs), c)]);
    expect(a, JSON.stringify(c)).toEqual(b);
    return a;
  };

  it('reads TPC_BODY_LIMIT sizes as body-parser does', () => {
    expect(limitBytes('1mb')).toBe(1024 * 1024);
    expect(limitBytes('512KB')).toBe(512 * 1024);
    expect(limitBytes('100b')).toBe(100);
    expect(() => limitBytes('1gb')).toThrow();
  });

  it('parses what body-parser parses, and refuses what it refuses, alike', async () => {
    const json = { headers: { 'content-type': 'application/json' } };
    const cases: Case[] = [
      { ...json, body: '{"branches":[{"resource":"a"}],"timeoutMs":5}' },
      { ...json, body: '[1,2,3]' },
      { ...json, body: '' },
      { ...json },
      { body: '{"a":1}' },
      { headers: { 'content-type': 'text/plain' }, body: '{"a":1}' },
      { headers: { 'content-type': 'application/json; charset=utf-8' }, body: '{"a":"é"}' },
      { headers: { 'content-type': 'application/json; charset="UTF-8"' }, body: '{"a":"é"}' },
      { headers: { 'content-type': 'application/json; charset=latin1' }, body: '{"a":1}' },
      { headers: { 'content-type': 'application/json; charset=utf-16' }, body: Buffer.from('{"a":1}', 'utf16le') },
      { headers: { 'content-type': 'application/json;;charset' }, body: '{"a":1}' },
      { ...json, body: '   \n\t {"a":1}' },
      { ...json, body: '   \n\t ' },
      { ...json, body: '\ufeff{"a":1}' },
      { ...json, body: '"just a string"' },
      { ...json, body: '  42' },
      { ...json, body: 'null' },
      { ...json, body: 'true' },
      { ...json, body: '{"a":' },
      { ...json, body: '{"a":1}}' },
      { ...json, body: "{'a':1}" },
      { ...json, body: 'x'.repeat(150) },
      { ...json, body: Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]) },
      { ...json, body: `{"a":"${'x'.repeat(190)}"}` },
      { ...json, body: `{"a":"${'x'.repeat(200)}"}` },
      { headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' }, body: gzipSync('{"a":1}') },
      { headers: { 'content-type': 'application/json', 'content-encoding': 'identity' }, body: '{"a":1}' },
      { headers: { 'content-type': 'application/json', 'content-encoding': 'br' }, body: '{"a":1}' },
      { ...json, body: '{"a":1}', chunked: true },
      { ...json, body: `{"a":"${'x'.repeat(300)}"}`, chunked: true },
    ];
    for (const c of cases) await same(c);
    // What the coordinator's contract rests on, spelled out.
    expect(await same({ ...json, body: '{"a":1}' })).toMatchObject({ status: 200, body: { a: 1 } });
    expect(await same({ ...json, body: '' })).toMatchObject({ status: 200, body: {} });
    // Node's client sends a POST without a body as Content-Length: 0.
    expect(await same({ ...json })).toMatchObject({ status: 200, body: {} });
    expect(await same({ ...json, body: '"x"' })).toMatchObject({ error: { status: 400, type: 'entity.parse.failed' } });
    expect(await same({ ...json, body: `{"a":"${'x'.repeat(300)}"}` })).toMatchObject({ error: { status: 413, type: 'entity.too.large' } });
  });

  it('agrees with body-parser on random bytes and random near-JSON', async () => {
    let seed = 1234567;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const alphabet = ' \t\n\r{}[]":,0123456789.-+eEtruefalsn\\u\ufeffé';
    for (let i = 0; i < 200; i++) {
      const n = Math.floor(rand() * 60);
      const body =
        i % 2
          ? Buffer.from(Array.from({ length: n }, () => Math.floor(rand() * 256)))
          : Array.from({ length: n }, () => alphabet[Math.floor(rand() * alphabet.length)]).join('');
      await same({ headers: { 'content-type': 'application/json' }, body });
    }
  });
});
