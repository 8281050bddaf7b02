import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, loadLogUrl } from '../coordinator/config/load-config.ts';
import { findPostgresBinDir, startPostgresCluster, type PostgresCluster } from '../coordinator/embedded/postgres-cluster.ts';
import { logConnection, parseLogUrl } from '../coordinator/log/log-hosts.ts';
import { startService } from '../coordinator/service.ts';
import { createDatabases, createWorld, transfer, type World } from './harness/world.ts';

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;
/** Server tools refuse to run as root: as root they run as the postgres user, as the clusters do. */
const asServerUser = (bin: string, args: string[]) => (isRoot ? run('runuser', ['-u', 'postgres', '--', bin, ...args]) : run(bin, args));

describe('DATABASE_URL with several hosts: validation', () => {
  it('refuses a list it cannot use, naming DATABASE_URL; a single-host URL is left to node-postgres as before', async () => {
    const dbs = await createDatabases();
    await dbs.end();
    const env = dbs.env;
    const refused: [string, RegExp][] = [
      [
        'postgres://u@h1:5432,h2:5432/db?target_session_attrs=standby',
        /^DATABASE_URL: target_session_attrs=standby would put the log on a server that cannot take its writes/,
      ],
      ['postgres://u@h1:5432,h2:5432/db?target_session_attrs=prefer-standby', /^DATABASE_URL: target_session_attrs=prefer-standby/],
      [
        'postgres://u@h1:5432,h2:5432/db?target_session_attrs=sometimes',
        /^DATABASE_URL: target_session_attrs must be read-write, primary or any, not "sometimes"/,
      ],
      ['postgres://u@h1:5432,h2:99999/db', /^DATABASE_URL: port 99999 of "h2:99999" is not between 1 and 65535/],
      ['postgres://u@h1:5432,,h2/db', /^DATABASE_URL: "" is not a host or host:port/],
      ['postgres://u@h1:5432,h2:x/db', /^DATABASE_URL: "h2:x" is not a host or host:port/],
      ['postgres://u@/db?host=h1,h2', /^DATABASE_URL: several hosts go in the URL's authority/],
    ];
    for (const [url, message] of refused) {
      expect(() => loadConfig({ ...env, DATABASE_URL: url }), url).toThrow(ConfigError);
      expect(() => loadConfig({ ...env, DATABASE_URL: url }), url).toThrow(message);
      expect(() => loadLogUrl({ DATABASE_URL: url }), url).toThrow(message);
    }
    expect(loadConfig({ ...env, DATABASE_URL: 'postgres://u:p%40w@h1:5433,[::1]/db?target_session_attrs=read-write&sslmode=disable' }).databaseUrl).toBe(
      'postgres://u:p%40w@h1:5433,[::1]/db?target_session_attrs=read-write&sslmode=disable',
    );
    expect(parseLogUrl('postgres://u:p%40w@h1:5433,[::1]/db?target_session_attrs=read-write&sslmode=disable')).toEqual({
      hosts: [
        { host: 'h1', port: 5433 },
        { host: '::1', port: 5432 },
      ],
      targetSessionAttrs: 'read-write',
      urls: ['postgres://u:p%40w@h1:5433/db?sslmode=disable', 'postgres://u:p%40w@[::1]/db?sslmode=disable'],
    });
    for (const url of ['postgres://u@h1:5432/db', 'postgres://u@localhost/db?host=%2Ftmp%2Fx', 'postgres://u@h1/db?options=-c%20x%3Dy']) {
      expect(parseLogUrl(url), url).toBeNull();
    }
  });
});

describe('DATABASE_URL with target_session_attrs: connections', () => {
  it('a start with no host that takes writes fails naming every host and why, without the password', async () => {
    const dbs = await createDatabases();
    await dbs.end();
    const config = loadConfig({ ...dbs.env, DATABASE_URL: 'postgres://u:secret@127.0.0.1:1,127.0.0.1:2/db?target_session_attrs=read-write' });
    const failure = await startService(config).then(
      () => null,
      (err: Error) => err.message,
    );
    expect(failure).toMatch(
      /^log database \(DATABASE_URL=postgres:\/\/u:\*\*\*@127\.0\.0\.1:1,127\.0\.0\.1:2\/db\): .*no log host fits target_session_attrs=read-write \(127\.0\.0\.1:1: .*ECONNREFUSED.*; 127\.0\.0\.1:2: .*ECONNREFUSED/,
    );
    expect(failure).not.toContain('secret');
  });

  it('keep the session settings, and one that meets a read-only error (25006) leaves the pool when released', async () => {
    const dbs = await createDatabases();
    const { hostname: host, port, pathname, username } = new URL(dbs.urls.log);
    // A host that refuses connections listed first: skipped within the connect timeout.
    const dead = new pg.Pool({
      ...logConnection(`postgres://${username}@127.0.0.1:1,${host}:${port}${pathname}?target_session_attrs=read-write`, { synchronous_commit: 'off' }),
      max: 2,
      connectionTimeoutMillis: 5_000,
    });
    try {
      const client = await dead.connect();
      expect((await client.query('SHOW synchronous_commit')).rows[0].synchronous_commit).toBe('off');
      expect((await client.query('SHOW default_transaction_read_only')).rows[0].default_transaction_read_only).toBe('off');
      expect((await client.query('SELECT inet_server_port() AS p')).rows[0].p).toBe(Number(port));
      // What a session on a server turned read-only meets: the error reaches the caller as it is.
      await client.query('SET default_transaction_read_only = on');
      await expect(client.query('CREATE TABLE t (x int)')).rejects.toMatchObject({ code: '25006' });
      client.release();
      expect(dead.totalCount).toBe(0);
      const next = await dead.connect();
      expect((await next.query('SHOW default_transaction_read_only')).rows[0].default_transaction_read_only).toBe('off');
      next.release();
      expect(dead.totalCount).toBe(1);
    } finally {
      await dead.end();
      await dbs.end();
    }
  });
});

/*
 * A real replicated pair: a primary, and a standby made from it by pg_basebackup -R (streaming
 * from it). The coordinator is given the standby first: it must skip it, and after the primary
 * stops and the standby is promoted, the same running service must find it and commit again.
 */
describe('DATABASE_URL with several hosts: the log follows a failover', () => {
  let primary: PostgresCluster;
  let standby: PostgresCluster | undefined;
  let standbyDir: string;
  let world: World;
  let logUrl: string;
  let logName: string;

  beforeAll(async () => {
    const binDir = findPostgresBinDir(process.env.TPC_PG_BINDIR);
    // initdb's default pg_hba trusts local replication connections; wal_level=replica is the default.
    primary = await startPostgresCluster({ binDir, settings: { wal_level: 'replica', max_wal_senders: 4 } });
    const role = `ha${randomBytes(4).toString('hex')}_log`;
    const primaryUrl = await primary.createDatabase(role);
    standbyDir = await mkdtemp(join(tmpdir(), 'tpc-standby-'));
    if (isRoot) {
      const { stdout: uid } = await run('id', ['-u', 'postgres']);
      const { stdout: gid } = await run('id', ['-g', 'postgres']);
      await chown(standbyDir, Number(uid), Number(gid));
    }
    await asServerUser(join(binDir, 'pg_basebackup'), [
      '-h',
      primary.host,
      '-p',
      String(primary.port),
      '-U',
      'postgres',
      '-D',
      standbyDir,
      '-R',
      '-X',
      'stream',
      '--checkpoint=fast',
      '--no-sync',
    ]);
    standby = await startPostgresCluster({ binDir, dataDir: standbyDir });
    const admin = new pg.Client({ connectionString: standby.url() });
    await admin.connect();
    try {
      expect((await admin.query('SELECT pg_is_in_recovery() AS r')).rows[0].r).toBe(true);
    } finally {
      await admin.end();
    }
    const u = new URL(primaryUrl);
    logName = u.pathname.slice(1);
    logUrl = `postgres://${u.username}@${standby.host}:${standby.port},${primary.host}:${primary.port}${u.pathname}?target_session_attrs=read-write`;
    world = await createWorld({ logUrl });
  }, 60_000);

  afterAll(async () => {
    await world?.close();
    await standby?.destroy();
    await primary?.destroy();
    if (standbyDir) await rm(standbyDir, { recursive: true, force: true });
  });

  /** The log as the superuser on one server: the test's oracle. */
  async function logStatuses(cluster: PostgresCluster): Promise<Map<string, string>> {
    const c = new pg.Client({ connectionString: cluster.url(logName) });
    await c.connect();
    try {
      const r = await c.query<{ id: string; status: string }>('SELECT id::text, status FROM tpc_transactions');
      return new Map(r.rows.map((x) => [x.id, x.status]));
    } finally {
      await c.end();
    }
  }

  it('starts on the primary though the standby is listed first, and commits again after a promotion without a restart', async () => {
    const committed: string[] = [];
    // Read back through the service, which waits for the completion record its answer did not.
    const recorded = async (id: string) => {
      expect((await world.request('GET', `/v1/transactions/${id}`)).body.status).toBe('committed');
      return id;
    };
    for (let i = 0; i < 3; i++) {
      const r = await world.submit(transfer('bank_a', 'bank_c', 1));
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      committed.push(await recorded(r.body.id));
    }
    // The standby replays what the primary wrote: the decisions are in the primary's log (and are streamed).
    const before = await logStatuses(primary);
    for (const id of committed) expect(before.get(id)).toBe('committed');
    expect((await world.request('GET', '/readyz', undefined, { token: null })).status).toBe(200);

    // A clean switchover: the primary stops (its WAL reaches the standby first), the standby is promoted.
    await primary.stop();
    await asServerUser(join(findPostgresBinDir(process.env.TPC_PG_BINDIR), 'pg_ctl'), ['-D', standbyDir, '-w', '-t', '60', 'promote']);
    const promotedAt = Date.now();

    // The client retries (a 503 while the log is being found is expected); the same service commits again.
    const answers: number[] = [];
    let again: { status: number; body: any } | undefined;
    for (let attempt = 0; attempt < 100; attempt++) {
      const r = await world.submit(transfer('bank_a', 'bank_c', 1), { headers: { 'idempotency-key': `after-failover-${world.namespace}` } });
      answers.push(r.status);
      if (r.status === 201) {
        again = r;
        break;
      }
      expect([503, 409], JSON.stringify(r.body)).toContain(r.status);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const serving = Date.now() - promotedAt;
    console.info(`multi-host log: committing again ${serving} ms after the promotion; answers before: ${JSON.stringify(answers.slice(0, -1))}`);
    expect(again, `answers: ${answers.join(',')}`).toBeDefined();
    committed.push(await recorded(again!.body.id));
    for (let i = 0; i < 2; i++) {
      const r = await world.submit(transfer('bank_a', 'bank_c', 1));
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      committed.push(await recorded(r.body.id));
    }
    const ready = await world.request('GET', '/readyz', undefined, { token: null });
    expect(ready.status, JSON.stringify(ready.body)).toBe(200);

    // Every commit is in the promoted server's log, and the money moved exactly once for each.
    const after = await logStatuses(standby!);
    for (const id of committed) expect(after.get(id)).toBe('committed');
    const aborted = [...after.values()].filter((s) => s !== 'committed');
    expect(aborted.every((s) => s === 'aborted')).toBe(true);
    expect(await world.balance('bank_a', 1)).toBe(1000 - committed.length);
    expect(await world.balance('bank_c', 2)).toBe(1000 + committed.length);
  }, 90_000);
});
