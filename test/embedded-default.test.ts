import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { pino } from 'pino';
import { loadConfig } from '../coordinator/config/load-config.ts';
import { startLocalEnvironment, type LocalEnvironment } from '../coordinator/embedded/local-environment.ts';
import { startPostgresCluster } from '../coordinator/embedded/postgres-cluster.ts';
import { startRedisServer } from '../coordinator/embedded/redis-server.ts';
import { migrateLog } from '../coordinator/log/log-database.ts';
import { startService } from '../coordinator/service.ts';
import { httpRequest, move, TOKENS } from './harness/world.ts';
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

/** A database's own role's URL, with the password the embedded default keeps in the data directory. */
async function roleUrl(dataDir: string, bannerLogUrl: string, database: string): Promise<string> {
  const passwords = JSON.parse(await readFile(join(dataDir, 'db-passwords'), 'utf8')) as Record<string, string>;
  const u = new URL(bannerLogUrl);
  return `postgres://${database}:${passwords[database]}@${u.hostname}:${u.port}/${database}`;
}

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
    // The banner does not print the log role's password.
    expect(new URL(logUrl)).toMatchObject({ username: 'tpc_log', password: '***' });
    const answer = JSON.parse((await sh('sh', ['-c', curl])).stdout);
    expect(answer.status).toBe('committed');
    const bankA = await roleUrl(dataDir, logUrl, 'bank_a');
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
    const bankA2 = await roleUrl(dataDir, line(second.banner, /^\s*log\s+(\S+)/m), 'bank_a');
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

describe('the embedded default, on least-privilege roles', () => {
  let dataDir: string | undefined;
  let local: LocalEnvironment | undefined;
  afterAll(async () => {
    await local?.stop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it("upgrades an earlier version's data directory in place: a role per database owning everything in it, no other role let in, no superuser over TCP", async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'tpc-upgrade-'));
    await chmod(dataDir, 0o711); // as the embedded default does, so the postgres user reaches its cluster when run as root
    // What an earlier version left: trust on loopback, every database and table owned by postgres.
    const old = await startPostgresCluster({ dataDir: join(dataDir, 'postgres') });
    try {
      for (const db of ['tpc_log', 'bank_a', 'bank_b', 'bank_c']) await query(old.url(), `CREATE DATABASE ${db}`);
      await query(
        old.url('bank_a'),
        "CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance int NOT NULL CHECK (balance >= 0)); INSERT INTO accounts SELECT g, 'customer ' || g, 1000 FROM generate_series(1, 10) g; UPDATE accounts SET balance = 777 WHERE id = 1",
      );
      await migrateLog(old.url('tpc_log'));
    } finally {
      await old.stop();
    }

    for (let start = 1; start <= 2; start++) {
      // Twice: the second start finds everything done and changes nothing.
      await local?.stop();
      local = await startLocalEnvironment({ dataDir, redisUrl: inject('redisUrl'), tokens: 'given' });
    }
    const env = local!.env;
    const resources = JSON.parse(env.TPC_RESOURCES!) as Record<string, string>;
    expect(new URL(env.DATABASE_URL!).username).toBe('tpc_log');
    expect(Object.entries(resources).map(([name, url]) => [name, new URL(url).username])).toEqual([
      ['bank_a', 'bank_a'],
      ['bank_b', 'bank_b'],
      ['bank_c', 'bank_c'],
    ]);
    const admin = local!.cluster.url();
    const roles = await query<{ rolname: string; rolsuper: boolean; rolcreaterole: boolean }>(
      admin,
      "SELECT rolname, rolsuper, rolcreaterole FROM pg_roles WHERE rolname IN ('tpc_log', 'bank_a', 'bank_b', 'bank_c') ORDER BY rolname",
    );
    expect(roles).toEqual(['bank_a', 'bank_b', 'bank_c', 'tpc_log'].map((rolname) => ({ rolname, rolsuper: false, rolcreaterole: false })));
    expect((await query<{ max: string }>(admin, "SELECT current_setting('max_prepared_transactions') AS max"))[0]!.max).toBe('200');
    expect((await stat(join(dataDir, 'db-passwords'))).mode & 0o777).toBe(0o600);

    for (const db of ['tpc_log', 'bank_a', 'bank_b', 'bank_c']) {
      // The database and everything in it (tables, sequences, the log's enums and trigger function) belong to its role.
      const [owned] = await query<{ dba: string; foreign: number }>(
        local!.cluster.url(db),
        `
        SELECT pg_get_userbyid((SELECT datdba FROM pg_database WHERE datname = current_database())) AS dba,
          (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S', 'v') AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = current_database()))
          + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public' AND t.typtype = 'e' AND t.typowner <> (SELECT oid FROM pg_roles WHERE rolname = current_database()))
          + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' AND p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = current_database())) AS foreign`,
      );
      expect(owned).toEqual({ dba: db, foreign: '0' });
    }
    expect((await query<{ balance: number }>(resources.bank_a!, 'SELECT balance FROM accounts WHERE id = 1'))[0]!.balance).toBe(777);

    // A bank's role reaches its own database only: not another bank, not the log, not postgres.
    const bankA = new URL(resources.bank_a!);
    for (const other of ['bank_b', 'tpc_log', 'postgres']) {
      const elsewhere = new URL(bankA.href);
      elsewhere.pathname = `/${other}`;
      await expect(query(elsewhere.href, 'SELECT 1')).rejects.toThrow(/permission denied for database/);
    }
    // Over TCP every role needs its password, and the superuser is not let in at all.
    const superuser = new URL(bankA.href);
    superuser.username = 'postgres';
    superuser.password = '';
    superuser.pathname = '/postgres';
    await expect(query(superuser.href, 'SELECT 1')).rejects.toThrow(/pg_hba\.conf rejects connection/);
    const noPassword = new URL(bankA.href);
    noPassword.password = '';
    await expect(query(noPassword.href, 'SELECT 1')).rejects.toThrow();

    // The coordinator runs on these roles: migrations (as the log's role, on tables it now owns) and a transfer.
    const config = loadConfig({
      ...env,
      PORT: '0',
      HOST: '127.0.0.1',
      TPC_NAMESPACE: 'upgrade',
      LOG_LEVEL: 'silent',
      TPC_API_TOKENS: JSON.stringify([{ name: 'full', token: TOKENS.full, scopes: ['submit', 'read', 'operate'], resources: ['*'] }]),
    });
    const service = await startService(config, { logger: pino({ level: 'silent' }), queuePrefix: `upgrade${Date.now()}` });
    try {
      const r = await httpRequest(service.url, 'POST', '/v1/transactions', move('bank_a', 'bank_c', 7, 1));
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      expect((await query<{ balance: number }>(resources.bank_a!, 'SELECT balance FROM accounts WHERE id = 1'))[0]!.balance).toBe(770);
    } finally {
      await service.close();
    }
  });
});
