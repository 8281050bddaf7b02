import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import type { Server } from 'node:http';
import { gzipSync } from 'node:zlib';
import express, { type ErrorRequestHandler, type RequestHandler } from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { arrivedJsonBody, bodyLimitBytes } from '../coordinator/api/arrived-json-body.ts';

/*
 * The submission's body reader against a real HTTP server: the usual body (fetch sends it after
 * the head, Node's http client with it) is read and parsed here, and every other one reaches express.json (the fallback) untouched, so that
 * what body-parser accepts or refuses there is unchanged. The answer says which of the two read it.
 */
let server: Server;
let port: number;

beforeAll(async () => {
  const app = express();
  const parser = express.json({ limit: '1kb', strict: true, type: () => true });
  const fallback: RequestHandler = (req, res, next) => {
    res.locals.fellBack = true;
    parser(req, res, next);
  };
  app.post('/', arrivedJsonBody(bodyLimitBytes('1kb'), fallback), (req, res) => {
    res.json({ body: req.body, fellBack: res.locals.fellBack === true });
  });
  app.use(((err, _req, res, _next) => {
    res.status(err.status ?? 500).json({ status: err.status, type: err.type, fellBack: res.locals.fellBack === true });
  }) as ErrorRequestHandler);
  server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise((resolve) => server.close(resolve)));

async function post(body: Buffer | string, headers: Record<string, string> = {}): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${port}/`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/** A request written by hand: its head first, then (after `pauseMs`) the body in `parts`. */
async function raw(head: string, parts: string[], pauseMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let answer = '';
    socket.on('data', (d) => {
      answer += d.toString();
    });
    socket.on('end', () => resolve(answer));
    socket.on('error', reject);
    socket.write(head);
    void (async () => {
      for (const p of parts) {
        await new Promise((r) => setTimeout(r, pauseMs));
        socket.write(p);
      }
    })();
  });
}

describe('arrivedJsonBody', () => {
  it('reads a whole JSON body from the buffer, in plain JSON or with charset utf-8', async () => {
    const body = { branches: [{ resource: 'a', statements: [{ sql: 'SELECT 1', params: [1, 'é'] }] }] };
    expect(await post(JSON.stringify(body))).toEqual({ status: 200, json: { body, fellBack: false } });
    expect(await post(JSON.stringify([1, 2]), { 'content-type': 'application/json; charset=UTF-8' })).toEqual({
      status: 200,
      json: { body: [1, 2], fellBack: false },
    });
    expect((await post(`  \n${JSON.stringify(body)}`)).json).toEqual({ body, fellBack: false });
  });

  it('refuses malformed JSON and bare values as body-parser does (400, entity.parse.failed)', async () => {
    for (const bad of ['{"branches": [', '123', '"text"', 'null', '{"a":1}x']) {
      expect(await post(bad)).toEqual({ status: 400, json: { status: 400, type: 'entity.parse.failed', fellBack: false } });
    }
  });

  it('hands every other body to the fallback untouched', async () => {
    const json = JSON.stringify({ resource: 'bank_b' });
    // Compressed: body-parser inflates it.
    expect(await post(gzipSync(json), { 'content-encoding': 'gzip' })).toEqual({ status: 200, json: { body: { resource: 'bank_b' }, fellBack: true } });
    // Another charset: body-parser decodes it.
    const utf16 = await post(Buffer.from(json, 'utf16le'), { 'content-type': 'application/json; charset=utf-16le' });
    expect(utf16.json.fellBack).toBe(true);
    // Any other content type is still read as JSON, by the fallback.
    expect(await post(json, { 'content-type': 'text/plain' })).toEqual({ status: 200, json: { body: { resource: 'bank_b' }, fellBack: true } });
    // Over the limit: the fallback's 413.
    expect(await post(JSON.stringify({ x: 'y'.repeat(2000) }))).toEqual({ status: 413, json: { status: 413, type: 'entity.too.large', fellBack: true } });
  });

  it('reads a body sent with the head or still arriving; hands a chunked one to the fallback', async () => {
    const json = JSON.stringify({ resource: 'bank_c' });
    const late = await raw(
      `POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${json.length}\r\nConnection: close\r\n\r\n`,
      [json.slice(0, 5), json.slice(5)],
      50,
    );
    expect(late).toMatch(/^HTTP\/1.1 200/);
    expect(late).toContain('"fellBack":false');
    expect(late).toContain('"resource":"bank_c"');
    const withHead = await raw(
      `POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${json.length}\r\nConnection: close\r\n\r\n${json}`,
      [],
      0,
    );
    expect(withHead).toMatch(/^HTTP\/1.1 200/);
    expect(withHead).toContain('"fellBack":false');
    const chunked = await raw(
      'POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n',
      [`${json.length.toString(16)}\r\n${json}\r\n0\r\n\r\n`],
      20,
    );
    expect(chunked).toMatch(/^HTTP\/1.1 200/);
    expect(chunked).toContain('"fellBack":true');
  });

  it('survives a client that leaves mid-body, and serves the next', async () => {
    const socket = connect(port, '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    socket.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"resource":');
    await new Promise((r) => setTimeout(r, 50));
    socket.destroy();
    await new Promise((r) => setTimeout(r, 50));
    expect(await post('{"ok":true}')).toEqual({ status: 200, json: { body: { ok: true }, fellBack: false } });
  });

  it('reads the limit as body-parser does', () => {
    expect(bodyLimitBytes('1mb')).toBe(1024 * 1024);
    expect(bodyLimitBytes('512KB')).toBe(512 * 1024);
    expect(bodyLimitBytes('100b')).toBe(100);
    expect(() => bodyLimitBytes('1gb')).toThrow(RangeError);
  });
});
