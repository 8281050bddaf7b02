import { type ChildProcess, fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Agent, createServer, type IncomingMessage, request, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import express from 'express';

/*
 * The floor of any REST coordinator on this machine: what one HTTP exchange costs in Node when the
 * server does nothing else. The (c) client's requests (keep-alive, one socket per client, a
 * transfer's body) go to a server that parses the JSON, waits as long as a transfer takes (so the
 * request rate and the syscall pattern are (c)'s, not a flood's), and answers a transaction view of
 * the coordinator's size. CPU from /proc for the server, process.cpuUsage() for the client.
 * Figures only; nothing is asserted.
 *
 *   node --import tsx bench/http-floor.ts [--clients 32] [--seconds 8] [--delay-ms 50]
 */
const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
};

const gid = (i: number) => `tpc:bench:0b7e9a52-7f4e-4a55-9d8e-3c3f0a2b1c4d:${i}`;
/** About the coordinator's answer to a committed transfer. */
const ANSWER = JSON.stringify({
  id: '0b7e9a52-7f4e-4a55-9d8e-3c3f0a2b1c4d',
  status: 'committed',
  createdAt: new Date().toISOString(),
  decidedAt: new Date().toISOString(),
  completedAt: new Date().toISOString(),
  deadline: new Date().toISOString(),
  error: null,
  inDoubt: false,
  heuristic: false,
  branches: ['bank_a', 'bank_b', 'bank_c'].map((resource, index) => ({
    index,
    resource,
    gid: gid(index),
    status: 'committed',
    readOnly: false,
    xid: String(100_000 + index),
    results: [{ rowCount: 1, rows: [] }],
    error: null,
  })),
});

function serve(kind: string): void {
  const delayMs = Number(process.env.FLOOR_DELAY_MS ?? 50);
  const answer = (res: { statusCode: number; setHeader(n: string, v: string | number): void; end(b: string): void }) => {
    res.statusCode = 201;
    res.setHeader('Content-Type', 'application/json; charset=utf-8');
    res.setHeader('Content-Length', Buffer.byteLength(ANSWER));
    res.end(ANSWER);
  };
  // The body read and parsed directly, as a server without a body parser would.
  const readAndAnswer = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { branches?: unknown };
      if (!Array.isArray(body.branches)) throw new Error('bad body');
      setTimeout(() => answer(res), delayMs);
    });
  };
  let server: ReturnType<typeof createServer>;
  if (kind === 'express') {
    const app = express();
    app.post('/v1/transactions', express.json({ limit: '1mb', strict: true, type: () => true }), (req, res) => {
      if (!Array.isArray((req.body as { branches?: unknown }).branches)) throw new Error('bad body');
      setTimeout(() => answer(res), delayMs);
    });
    server = createServer(app);
  } else if (kind === 'express, own body reader') {
    const app = express();
    app.post('/v1/transactions', (req, res) => readAndAnswer(req, res));
    server = createServer(app);
  } else {
    server = createServer(readAndAnswer);
  }
  server.listen(0, '127.0.0.1', () => process.send?.((server.address() as AddressInfo).port));
}

/** utime + stime of a process, in seconds (Linux /proc; 100 ticks per second). */
function processCpu(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function measure(kind: string, clients: number, seconds: number, delayMs: number) {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ['--serve', kind], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, FLOOR_DELAY_MS: String(delayMs) },
  });
  const port = await new Promise<number>((resolve) => child.once('message', (p) => resolve(p as number)));
  const agent = new Agent({ keepAlive: true, maxSockets: clients, maxFreeSockets: clients });
  const url = new URL('/v1/transactions', `http://127.0.0.1:${port}`);
  const body = JSON.stringify({
    branches: ['bank_a', 'bank_b', 'bank_c'].map((resource, i) => ({
      resource,
      statements: [{ sql: 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', params: [i ? 7 : -7, 4242], expect: { rowCount: 1 } }],
    })),
    timeoutMs: 10_000,
  });
  const post = () =>
    new Promise<void>((resolve, reject) => {
      const req = request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const answer = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { status?: string };
          if (res.statusCode !== 201 || answer.status !== 'committed') reject(new Error(`HTTP ${res.statusCode}`));
          else resolve();
        });
      });
      req.on('error', reject);
      req.end(body);
    });
  const loop = async (until: number, count: { n: number }) => {
    while (performance.now() < until) {
      await post();
      count.n++;
    }
  };
  // Warm-up: sockets opened, code optimized.
  await Promise.all(Array.from({ length: clients }, () => loop(performance.now() + 2000, { n: 0 })));
  const server0 = processCpu(child.pid!);
  const client0 = process.cpuUsage();
  const t0 = performance.now();
  const count = { n: 0 };
  await Promise.all(Array.from({ length: clients }, () => loop(t0 + seconds * 1000, count)));
  const elapsed = (performance.now() - t0) / 1000;
  const client = process.cpuUsage(client0);
  const server = processCpu(child.pid!) - server0;
  agent.destroy();
  child.kill();
  return {
    kind,
    rps: count.n / elapsed,
    serverMs: (server * 1000) / count.n,
    clientMs: (client.user + client.system) / 1000 / count.n,
  };
}

if (process.argv[2] === '--serve') {
  serve(process.argv[3]!);
} else {
  const clients = arg('clients', 32);
  const seconds = arg('seconds', 8);
  const delayMs = arg('delay-ms', 50);
  const rows = [];
  for (const kind of ['node:http', 'express', 'express, own body reader', 'node:http', 'express', 'express, own body reader'])
    rows.push(await measure(kind, clients, seconds, delayMs));
  console.log(`\n${clients} clients, ${seconds} s per round, the server answers ${delayMs} ms after the request\n`);
  console.log('| server | requests/s | server CPU ms/request | client CPU ms/request |');
  console.log('|---|---:|---:|---:|');
  for (const r of rows) console.log(`| ${r.kind} | ${r.rps.toFixed(0)} | ${r.serverMs.toFixed(3)} | ${r.clientMs.toFixed(3)} |`);
}
