import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { loopbackPortIsFree } from '../coordinator/embedded/free-port.ts';
import { PORTS_FILE } from '../coordinator/embedded/kept-ports.ts';
import { query } from './harness/waits.ts';

/*
 * What a newcomer meets at `npm start` with nothing configured, run as they run it: a banner whose
 * every URL works as printed (the banks' for a pg.Pool, Redis, the console, the queues, the
 * OpenAPI document), `GET /` leading to the console, and Postgres and Redis on the same ports at
 * the next start while those are free.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
// A first start runs initdb: far above what it takes on a loaded machine.
const START_LIMIT_MS = 60_000;

interface Started {
  child: ChildProcess;
  banner: string;
  stderr: () => string;
  exited: Promise<number | null>;
}

function spawnStart(dataDir: string, port = '0'): Started & { stdout: () => string } {
  const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', TPC_DATA_DIR: dataDir, PORT: port, LOG_LEVEL: 'warn' };
  const child = spawn(process.execPath, ['dist/coordinator/main.js'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, banner: '', stdout: () => out, stderr: () => err, exited };
}

async function start(dataDir: string): Promise<Started> {
  const s = spawnStart(dataDir);
  const deadline = Date.now() + START_LIMIT_MS;
  while (!/then look at it/.test(s.stdout())) {
    if (s.child.exitCode !== null || Date.now() > deadline) {
      s.child.kill('SIGKILL');
      throw new Error(`the embedded default did not come up: ${s.stderr()}\n${s.stdout()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { ...s, banner: s.stdout() };
}

async function stop(s: Started): Promise<void> {
  s.child.kill('SIGINT');
  expect(await s.exited).toBe(0);
}

const field = (banner: string, label: string) => new RegExp(`^\\s*${label}\\s+(\\S+)`, 'm').exec(banner)?.[1] ?? '';
const portOf = (url: string) => Number(new URL(url).port);

async function occupy(port: number): Promise<Server> {
  const server = createServer((socket) => socket.end());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return server;
}

async function pingRedis(url: string): Promise<string> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  try {
    await redis.connect();
    return await redis.ping();
  } finally {
    redis.disconnect();
  }
}

async function postmasterPid(dataDir: string): Promise<number | null> {
  try {
    const pid = Number((await readFile(join(dataDir, 'postgres', 'postmaster.pid'), 'utf8')).split('\n')[0]);
    process.kill(pid, 0);
    return pid;
  } catch {
    return null;
  }
}

describe('the front door of npm start', () => {
  const dirs: string[] = [];
  const children: ChildProcess[] = [];
  const holders: Server[] = [];
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await Promise.all(holders.map((h) => new Promise((r) => h.close(r))));
    for (const d of dirs) {
      // A cluster left by a failed assertion: stop it before removing its files.
      const pid = await postmasterPid(d);
      if (pid) {
        process.kill(pid, 'SIGQUIT');
        await new Promise((r) => setTimeout(r, 1000));
      }
      await rm(d, { recursive: true, force: true });
    }
  });

  it('prints a URL for every resource and page that works as printed, keeps its ports across restarts, and moves only off a taken one', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tpc-front-'));
    dirs.push(dataDir);
    const first = await start(dataDir);
    children.push(first.child);
    const coordinator = field(first.banner, 'coordinator');

    // Each bank's URL, pasted as printed, is a working connection for its own role.
    const banks = ['bank_a', 'bank_b', 'bank_c'].map((bank) => field(first.banner, bank));
    for (const [i, url] of banks.entries()) {
      expect(new URL(url).username).toBe(`bank_${'abc'[i]}`);
      expect(await query<{ n: string }>(url, 'SELECT count(*) AS n FROM accounts')).toEqual([{ n: '10' }]);
    }
    // The log's is shown without its password (see local-banner.ts), and says where it is kept.
    expect(new URL(field(first.banner, 'log')).password).toBe('***');
    expect(first.banner).toMatch(/log\s+\S+\s+\(the coordinator's own: password in .*db-passwords\)/);
    const redisUrl = field(first.banner, 'redis');
    expect(await pingRedis(redisUrl)).toBe('PONG');

    // The pages: the console (also where GET / leads), the OpenAPI document, and the queues
    // (behind the operate scope: a refusal, not a 404, without the console's session).
    expect(field(first.banner, 'console')).toBe(`${coordinator}/console/`);
    const home = await fetch(`${coordinator}/`, { redirect: 'manual' });
    expect(home.status).toBe(302);
    expect(home.headers.get('location')).toBe('/console/');
    const consolePage = await fetch(`${coordinator}/`);
    expect(consolePage.url).toBe(`${coordinator}/console/`);
    expect(await consolePage.text()).toContain('<html');
    expect(field(first.banner, 'api docs')).toBe(`${coordinator}/docs/`);
    expect((await fetch(field(first.banner, 'api docs'))).headers.get('content-type')).toMatch(/^text\/html/);
    const openApi = await fetch(field(first.banner, 'openapi'));
    expect(((await openApi.json()) as { openapi: string }).openapi).toMatch(/^3\.1/);
    const queues = field(first.banner, 'queues');
    expect(queues).toBe(`${coordinator}/queues/`);
    expect((await fetch(queues)).status).toBe(401);
    const token = field(first.banner, 'dev token');
    const session = await fetch(`${coordinator}/v1/session`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(session.status).toBe(204);
    const cookie = session.headers.get('set-cookie')!.split(';')[0]!;
    expect((await fetch(queues, { headers: { cookie } })).status).toBe(200);

    await stop(first);
    const kept = { postgres: portOf(banks[0]!), redis: portOf(redisUrl) };
    expect(JSON.parse(await readFile(join(dataDir, PORTS_FILE), 'utf8'))).toEqual(kept);

    // Restarted while both ports are free: the same ports, so the URLs saved above still work.
    const second = await start(dataDir);
    children.push(second.child);
    expect(field(second.banner, 'bank_a')).toBe(banks[0]);
    expect(field(second.banner, 'redis')).toBe(redisUrl);
    expect(await query(banks[1]!, 'SELECT 1 AS one')).toEqual([{ one: 1 }]);
    await stop(second);

    // Another program took both ports meanwhile: new ones, said on stderr, and remembered.
    for (const port of [kept.postgres, kept.redis]) holders.push(await occupy(port));
    const third = await start(dataDir);
    children.push(third.child);
    const moved = { postgres: portOf(field(third.banner, 'bank_a')), redis: portOf(field(third.banner, 'redis')) };
    expect(moved.postgres).not.toBe(kept.postgres);
    expect(moved.redis).not.toBe(kept.redis);
    expect(third.stderr()).toContain(`Postgres's port of the last start (${kept.postgres}) is taken by another program: it is on ${moved.postgres} this time`);
    expect(third.stderr()).toContain(`Redis's port of the last start (${kept.redis}) is taken by another program: it is on ${moved.redis} this time`);
    expect(await query(field(third.banner, 'bank_a'), 'SELECT 1 AS one')).toEqual([{ one: 1 }]);
    expect(await pingRedis(field(third.banner, 'redis'))).toBe('PONG');
    await stop(third);
    expect(JSON.parse(await readFile(join(dataDir, PORTS_FILE), 'utf8'))).toEqual(moved);
  });

  it('on a taken PORT, stops the Postgres and Redis it started and exits non-zero', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tpc-front-'));
    dirs.push(dataDir);
    const holder = await occupy(0);
    holders.push(holder);
    const port = (holder.address() as { port: number }).port;
    const s = spawnStart(dataDir, String(port));
    children.push(s.child);
    const code = await Promise.race([s.exited, new Promise((r) => setTimeout(() => r('still running'), START_LIMIT_MS))]);
    expect(code).toBe(1);
    expect(s.stderr()).toContain(`port ${port} is already in use`);
    expect(s.stderr()).toContain(`PORT=${port}`);
    expect(s.stdout()).not.toContain('then look at it');
    // Nothing it started outlives it: the cluster is stopped, Redis's port is free again.
    expect(await postmasterPid(dataDir)).toBeNull();
    const { redis } = JSON.parse(await readFile(join(dataDir, PORTS_FILE), 'utf8')) as { redis: number };
    expect(await loopbackPortIsFree(redis)).toBe(true);
  });
});
