import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { startRedisServer } from '../coordinator/embedded/redis-server.ts';
import { query } from './harness/waits.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const sh = promisify(execFile);

interface Started {
  child: ChildProcess;
  banner: string;
  exited: Promise<number | null>;
}

/** `npm start` as a newcomer runs it: nothing configured, so the embedded default comes up. */
async function start(dataDir: string): Promise<Started> {
  const env: Record<string, string> = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', TPC_DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'warn' };
  const child = spawn(process.execPath, ['--import', 'tsx', 'coordinator/main.ts'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + 60_000;
  while (!/then look at it/.test(out)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the embedded default did not come up: ${err}\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, banner: out, exited };
}

const line = (banner: string, re: RegExp) => re.exec(banner)?.[1]?.trim() ?? '';

async function postmasterRunning(dataDir: string): Promise<boolean> {
  try {
    const pid = Number((await readFile(join(dataDir, 'postgres', 'postmaster.pid'), 'utf8')).split('\n')[0]);
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('npm start with nothing configured', () => {
  const dirs: string[] = [];
  const children: ChildProcess[] = [];
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    for (const d of dirs) {
      // A cluster left by a failed assertion: stop it before removing its files.
      if (await postmasterRunning(d)) {
        const pid = Number((await readFile(join(d, 'postgres', 'postmaster.pid'), 'utf8')).split('\n')[0]);
        process.kill(pid, 'SIGQUIT');
        await new Promise((r) => setTimeout(r, 1000));
      }
      await rm(d, { recursive: true, force: true });
    }
  });

  it('starts its own Postgres and Redis, prints a curl that commits a transfer, keeps the data, and stops everything on Ctrl-C', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tpc-default-'));
    dirs.push(dataDir);
    const first = await start(dataDir);
    children.push(first.child);
    const curl = line(first.banner, /^\s*(curl -s -X POST .*)$/m);
    expect(curl).toContain('authorization: Bearer dev-');
    const token = line(first.banner, /dev token\s+(\S+)/);
    const logUrl = line(first.banner, /^\s*log\s+(\S+)/m);
    const answer = JSON.parse((await sh('sh', ['-c', curl])).stdout);
    expect(answer.status).toBe('committed');
    const bankA = logUrl.replace(/tpc_log$/, 'bank_a');
    expect((await query<{ balance: number }>(bankA, 'SELECT balance FROM accounts WHERE id = 1'))[0]!.balance).toBe(900);

    // A second start on the same data directory would pull the database from under the first.
    await expect(start(dataDir)).rejects.toThrow(/is in use by another start \(pid \d+\)/);
    expect(JSON.parse((await sh('sh', ['-c', curl])).stdout).status).toBe('committed');

    first.child.kill('SIGINT');
    expect(await first.exited).toBe(0);
    expect(await postmasterRunning(dataDir)).toBe(false);

    // The next start reuses the data and the token.
    const second = await start(dataDir);
    children.push(second.child);
    expect(line(second.banner, /dev token\s+(\S+)/)).toBe(token);
    const bankA2 = line(second.banner, /^\s*log\s+(\S+)/m).replace(/tpc_log$/, 'bank_a');
    expect((await query<{ balance: number }>(bankA2, 'SELECT balance FROM accounts WHERE id = 1'))[0]!.balance).toBe(800);

    // Killed outright, it leaves its Postgres running; the next start takes it over.
    second.child.kill('SIGKILL');
    await second.exited;
    expect(await postmasterRunning(dataDir)).toBe(true);
    const third = await start(dataDir);
    children.push(third.child);
    const answer3 = JSON.parse((await sh('sh', ['-c', line(third.banner, /^\s*(curl -s -X POST .*)$/m)])).stdout);
    expect(answer3.status).toBe('committed');
    third.child.kill('SIGTERM');
    expect(await third.exited).toBe(0);
    expect(await postmasterRunning(dataDir)).toBe(false);
  });

  it('says how to get Redis when there is no redis-server to start', async () => {
    await expect(startRedisServer('tpc-no-such-redis-server')).rejects.toThrow(/not on PATH \(install the Debian package "redis-server"\)/);
  });
});
