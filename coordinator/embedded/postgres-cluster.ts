import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { ensureLoginRole, ensureOwnedDatabase } from './database-roles.ts';
import { freeLoopbackPort, preferredLoopbackPort } from './free-port.ts';

const run = promisify(execFile);

/**
 * A throwaway PostgreSQL cluster on a loopback port, owned by this process: the test harness
 * and the embedded default both use it, so that tests can stop, crash and restart a database
 * without touching the machine's own server.
 */
export interface PostgresCluster {
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  /** The superuser's URL (over the Unix socket when the cluster has password authentication): setup and assertions only. */
  url(database?: string): string;
  /**
   * A database owned by a login role of the same name, which only that role (and superusers) may
   * connect to; returns the role's URL, what a coordinator should be given: nothing it runs
   * should connect as the superuser.
   */
  createDatabase(name: string, options?: { password?: string }): Promise<string>;
  /** Clean shutdown (`pg_ctl stop -m fast`). */
  stop(): Promise<void>;
  /** SIGKILL of the postmaster: what a power cut looks like to clients. */
  crash(): Promise<void>;
  /** `pg_ctl stop -m immediate`: no checkpoint; prepared transactions come back from WAL at the next start. */
  stopImmediately(): Promise<void>;
  start(): Promise<void>;
  /** Stops the server and removes its files (a kept cluster, with `dataDir`, is only stopped). */
  destroy(): Promise<void>;
}

export interface StartClusterOptions {
  maxPreparedTransactions?: number;
  binDir?: string;
  /**
   * Keep the cluster here and reuse it on the next start (the embedded default's `.tpc/`). Without
   * it the cluster lives in a fresh temporary directory and runs without fsync (tests, bench).
   */
  dataDir?: string;
  /** The port to listen on when it is free (the embedded default's port of its last start); otherwise a free one. */
  port?: number;
  /** Extra `-c name=value` server settings. */
  settings?: Record<string, string | number>;
  /**
   * TCP connections need a role's password (scram-sha-256), and the superuser connects only over
   * the Unix socket in the data directory. Without it (throwaway clusters) every local connection
   * is trusted, as initdb -A trust makes it.
   */
  passwordAuth?: boolean;
}

/*
 * Written at every start of a cluster with passwordAuth, so that a cluster made by an earlier
 * version (initdb -A trust: anyone on loopback could log in as any role, the superuser included)
 * is closed on its next start. The socket lives in the data directory (mode 0700), so only the OS
 * user that owns the cluster, or root, reaches the superuser through it.
 */
const PASSWORD_HBA = `# Written by tpc at every start (coordinator/embedded/postgres-cluster.ts): edits are replaced.
local   all   postgres                 trust
local   all   all                      scram-sha-256
host    all   postgres  127.0.0.1/32   reject
host    all   postgres  ::1/128        reject
host    all   all       127.0.0.1/32   scram-sha-256
host    all   all       ::1/128        scram-sha-256
`;

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** Finds initdb/pg_ctl: an explicit directory, Debian's versioned directories (newest first), then PATH. */
export function findPostgresBinDir(explicit?: string): string {
  const candidates: string[] = [];
  if (explicit) candidates.push(explicit);
  const debianRoot = '/usr/lib/postgresql';
  if (existsSync(debianRoot)) {
    const majors = readdirSync(debianRoot)
      .filter((d) => /^\d+$/.test(d))
      .sort((a, b) => Number(b) - Number(a));
    candidates.push(...majors.map((m) => join(debianRoot, m, 'bin')));
  }
  const which = spawnSync('sh', ['-c', 'command -v initdb'], { encoding: 'utf8' });
  if (which.status === 0 && which.stdout.trim()) candidates.push(join(which.stdout.trim(), '..'));
  for (const dir of candidates) {
    if (existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'pg_ctl'))) return dir;
  }
  throw new Error(
    'PostgreSQL server binaries (initdb, pg_ctl) not found: install the Debian package "postgresql" ' + 'or set TPC_PG_BINDIR to the directory holding them',
  );
}

/** Postgres refuses to run as root, so as root every server command runs as the postgres user. */
async function asServerUser(bin: string, args: string[]): Promise<void> {
  const [cmd, argv] = isRoot ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args];
  try {
    await run(cmd, argv, { maxBuffer: 16 * 1024 * 1024 });
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${bin} ${args.join(' ')} failed: ${e.stderr || e.stdout || e.message}`, { cause: err });
  }
}

export async function startPostgresCluster(options: StartClusterOptions = {}): Promise<PostgresCluster> {
  const binDir = findPostgresBinDir(options.binDir);
  const persistent = options.dataDir !== undefined;
  const dataDir = persistent ? resolve(options.dataDir!) : await mkdtemp(join(tmpdir(), 'tpc-pg-'));
  const pgCtl = join(binDir, 'pg_ctl');
  if (persistent) await mkdir(dataDir, { recursive: true, mode: 0o700 });
  if (isRoot) {
    const pw = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
    const gr = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
    if (pw.status !== 0) throw new Error('running as root needs a "postgres" user to run the server as');
    await chown(dataDir, Number(pw.stdout.trim()), Number(gr.stdout.trim()));
    if (spawnSync('runuser', ['-u', 'postgres', '--', 'test', '-w', dataDir]).status !== 0) {
      throw new Error(`the postgres user cannot write to ${dataDir} (a parent directory is closed to it): choose a data directory it can reach`);
    }
  }
  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    await asServerUser(join(binDir, 'initdb'), [
      '-D',
      dataDir,
      '-A',
      'trust',
      '-U',
      'postgres',
      '-E',
      'UTF8',
      '--locale=C',
      ...(persistent ? [] : ['--no-sync']),
    ]);
  } else if (existsSync(join(dataDir, 'postmaster.pid'))) {
    // Left running by an earlier start that was killed: stop it, so that this process owns the server.
    await asServerUser(pgCtl, ['-D', dataDir, '-w', '-m', 'fast', 'stop']).catch(() => {});
  }
  const host = '127.0.0.1';
  let port = await preferredLoopbackPort(options.port);
  const settings: Record<string, string | number> = {
    max_prepared_transactions: options.maxPreparedTransactions ?? 64,
    max_connections: 200,
    // Throwaway clusters trade durability across OS crashes for speed; a process crash
    // (SIGKILL of the postmaster) still recovers from WAL, which is what the tests exercise.
    // A kept cluster holds the user's data from one start to the next: it keeps fsync on.
    ...(persistent ? {} : { fsync: 'off', full_page_writes: 'off' }),
    ...(options.passwordAuth ? { password_encryption: 'scram-sha-256' } : {}),
    ...options.settings,
  };
  const start = async () => {
    if (options.passwordAuth) await writeFile(join(dataDir, 'pg_hba.conf'), PASSWORD_HBA);
    const opts = [`-p ${port}`, `-k ${dataDir}`, `-c listen_addresses=${host}`, ...Object.entries(settings).map(([k, v]) => `-c ${k}=${v}`)].join(' ');
    await asServerUser(pgCtl, ['-D', dataDir, '-w', '-t', '60', '-l', join(dataDir, 'server.log'), '-o', opts, 'start']);
  };
  try {
    await start();
  } catch (err) {
    // Another process may have taken the port between our probe and the bind: pick again once.
    port = await freeLoopbackPort();
    await start().catch(() => {
      throw err;
    });
  }
  const url = (database = 'postgres') =>
    options.passwordAuth
      ? `postgres://postgres@localhost:${port}/${database}?host=${encodeURIComponent(dataDir)}`
      : `postgres://postgres@${host}:${port}/${database}`;
  const cluster: PostgresCluster = {
    host,
    get port() {
      return port;
    },
    dataDir,
    url,
    async createDatabase(name, o = {}) {
      if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`bad database name ${name}`);
      const client = new pg.Client({ connectionString: url() });
      await client.connect();
      try {
        await ensureLoginRole(client, name, o.password);
        await ensureOwnedDatabase(client, name, name);
      } finally {
        await client.end();
      }
      const auth = o.password === undefined ? name : `${name}:${encodeURIComponent(o.password)}`;
      return `postgres://${auth}@${host}:${port}/${name}`;
    },
    async stop() {
      await asServerUser(pgCtl, ['-D', dataDir, '-w', '-m', 'fast', 'stop']).catch(() => {});
    },
    async stopImmediately() {
      await asServerUser(pgCtl, ['-D', dataDir, '-w', '-t', '30', '-m', 'immediate', 'stop']);
    },
    async crash() {
      const pidFile = join(dataDir, 'postmaster.pid');
      if (!existsSync(pidFile)) return;
      const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        return;
      }
      // Backends notice the dead postmaster and exit; wait until the pid is gone.
      for (let i = 0; i < 200; i++) {
        try {
          process.kill(pid, 0);
          await new Promise((r) => setTimeout(r, 25));
        } catch {
          break;
        }
      }
    },
    start,
    async destroy() {
      if (persistent) {
        await cluster.stop();
        return;
      }
      await asServerUser(pgCtl, ['-D', dataDir, '-w', '-m', 'immediate', 'stop']).catch(() => {});
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  return cluster;
}
