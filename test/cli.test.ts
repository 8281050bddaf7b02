import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { eventually, query } from './harness/waits.ts';
import { ACCOUNTS_SQL, TOKENS, createDatabase, createWorld, move, pause, transfer, type World } from './harness/world.ts';

const BIN = fileURLToPath(new URL('../bin/tpc.js', import.meta.url));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The real binary, as an operator runs it, against this test's service. */
function tpc(world: World, args: string[], token: string = TOKENS.full): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      {
        env: { ...process.env, TPC_URL: world.service.url, TPC_TOKEN: token },
        timeout: 30_000,
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

describe('tpc, the command line', () => {
  let world: World;
  let committedId: string;
  const stuckDb = `cli${randomBytes(4).toString('hex')}_stuck`;
  let stuckUrl: string;
  const admin = () => {
    const a = inject('clusterA');
    return new pg.Client({ host: a.host, port: a.port, user: 'postgres', database: 'postgres' });
  };

  beforeAll(async () => {
    stuckUrl = await createDatabase(inject('clusterA'), stuckDb);
    await query(stuckUrl, ACCOUNTS_SQL);
    // Slow retries and reconciliation, so that the CLI, not the queues, finishes the stuck transaction;
    // the begin record written at once, since a test holds its row to stop the decision.
    world = await createWorld({
      extraResources: { stuck: stuckUrl },
      env: { TPC_RETRY_BASE_MS: '60000', TPC_RETRY_MAX_MS: '60000', TPC_RECONCILE_INTERVAL_MS: '3600000', TPC_BEGIN_DEFER_MS: '0' },
    });
    const r = await world.submit(transfer('bank_a', 'bank_b', 10));
    expect(r.status).toBe(201);
    committedId = r.body.id;
  });
  afterAll(async () => {
    const c = admin();
    await c.connect();
    await c.query(`ALTER DATABASE ${stuckDb} ALLOW_CONNECTIONS true`).finally(() => c.end());
    await world?.close();
  });

  it('lists transactions as an aligned table and as the API JSON', async () => {
    const table = await tpc(world, ['tx', 'list']);
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ID\s+STATUS\s+CREATED\s+RESOURCES\s+FLAGS\s+ATTEMPTS\s+ERROR$/);
    const row = lines.find((l) => l.startsWith(committedId))!;
    expect(row).toBeDefined();
    expect(row.indexOf('committed')).toBe(lines[0]!.indexOf('STATUS'));
    expect(row).toContain('bank_a,bank_b');

    const json = await tpc(world, ['tx', 'list', '--json', '--status', 'committed', '--limit', '5']);
    expect(json.code).toBe(0);
    const page = JSON.parse(json.stdout);
    expect(page).toMatchObject({ items: [expect.objectContaining({ id: committedId, status: 'committed' })], next: null });

    const none = await tpc(world, ['--json', 'tx', 'list', '--in-doubt', '--resource', 'bank_c']);
    expect(JSON.parse(none.stdout)).toEqual({ items: [], next: null });
    expect((await tpc(world, ['tx', 'list', '--status', 'bogus'])).code).toBe(2);
  });

  it('shows one transaction with its branches and events; an unknown id exits 1 with the 404', async () => {
    const show = await tpc(world, ['tx', 'show', committedId]);
    expect(show.code).toBe(0);
    expect(show.stdout).toMatch(/^status:\s+committed$/m);
    expect(show.stdout).toMatch(/^\s*0\s+bank_a\s+committed\s+no\s+tpc:/m);
    expect(show.stdout).toContain('events:');
    const json = JSON.parse((await tpc(world, ['tx', 'show', committedId, '--json'])).stdout);
    expect(json).toMatchObject({ id: committedId, status: 'committed', events: expect.any(Array) });

    const missing = await tpc(world, ['tx', 'show', randomUUID()]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/Not found \(404\): transaction .* not found/);
    expect(missing.stderr).toContain('urn:tpc:problem:not-found');
  });

  it('refuses bad resolutions: usage errors exit 2, API refusals exit 1 with the explanation', async () => {
    const noReason = await tpc(world, ['tx', 'resolve', committedId, '--commit']);
    expect(noReason.code).toBe(2);
    expect(noReason.stderr).toContain('--reason');
    expect((await tpc(world, ['tx', 'resolve', committedId, '--reason', 'x'])).code).toBe(2);
    expect((await tpc(world, ['tx', 'resolve', committedId, '--commit', '--abort', '--reason', 'x'])).code).toBe(2);

    const reader = await tpc(world, ['tx', 'resolve', committedId, '--commit', '--reason', 'x'], TOKENS.reader);
    expect(reader.code).toBe(1);
    expect(reader.stderr).toContain('Forbidden (403): token "reader" lacks the "operate" scope');

    const finished = await tpc(world, ['tx', 'resolve', committedId, '--abort', '--reason', 'too late']);
    expect(finished.code).toBe(1);
    expect(finished.stderr).toMatch(/Conflict \(409\): transaction .* is already committed/);
    expect(finished.stderr).toContain('urn:tpc:problem:already-finished');

    const same = await tpc(world, ['tx', 'resolve', committedId, '--commit', '--reason', 'check', '--json']);
    expect(same.code).toBe(0);
    expect(JSON.parse(same.stdout)).toMatchObject({ action: 'nothing', result: 'finished', transaction: { status: 'committed' } });
  });

  it('shows resources and orphans; an unreachable service exits 1', async () => {
    const resources = await tpc(world, ['resources']);
    expect(resources.code).toBe(0);
    expect(resources.stdout).toMatch(/^RESOURCE\s+KIND\s+REACHABLE\s+USABLE\s+VERSION\s+MAX PREPARED\s+PREPARED\s+OLDEST \(s\)/);
    expect(resources.stdout).toMatch(/^bank_a\s+postgres\s+yes\s+yes\s+.+\s+64\s+0$/m);
    const items = JSON.parse((await tpc(world, ['resources', '--json'], TOKENS.reader)).stdout).items;
    expect(items.map((r: { resource: string }) => r.resource).sort()).toEqual(['bank_a', 'bank_b', 'bank_c', 'stuck']);

    const orphans = await tpc(world, ['orphans']);
    expect(orphans.code).toBe(0);
    expect(orphans.stdout).toContain('no orphaned prepared branches');
    expect(JSON.parse((await tpc(world, ['orphans', '--json'])).stdout)).toEqual({ items: [], unreachable: [] });

    const down = await tpc(world, ['resources', '--url', 'http://127.0.0.1:59999']);
    expect(down.code).toBe(1);
    expect(down.stderr).toContain('cannot reach http://127.0.0.1:59999');
  });

  it('resolves a transaction stuck after its commit decision, refusing to go against it', async () => {
    // A commit decision whose phase 2 cannot reach "stuck": hold the decision, block the database, let it go.
    const log = new pg.Client({ connectionString: world.urls.log });
    const adm = admin();
    await Promise.all([log.connect(), adm.connect()]);
    let id: string;
    try {
      // Far off: the deadline job would otherwise drive the stuck commit itself, before the CLI does.
      const pending = world.submit(move('bank_c', 'stuck', 30, 4, { before: [pause(2)], timeoutMs: 120_000 }));
      const [row] = await eventually(
        () => log.query<{ id: string }>("SELECT id FROM tpc_transactions WHERE status = 'active'").then((r) => r.rows),
        (rows) => rows.length === 1,
        'the begin record',
      );
      id = row!.id;
      await log.query('BEGIN');
      await log.query('SELECT 1 FROM tpc_transactions WHERE id = $1 FOR UPDATE', [id]);
      await eventually(
        () => query<{ gid: string }>(stuckUrl, 'SELECT gid FROM pg_prepared_xacts'),
        (r) => r.length === 1,
        'stuck prepared',
      );
      await adm.query(`ALTER DATABASE ${stuckDb} ALLOW_CONNECTIONS false`);
      await adm.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [stuckDb]);
      await log.query('COMMIT');
      expect((await pending).status).toBe(202);
    } finally {
      await log.end();
    }

    const listed = await tpc(world, ['tx', 'list', '--status', 'committing']);
    expect(listed.stdout).toMatch(new RegExp(`^${id}\\s+committing\\s`, 'm'));
    const show = await tpc(world, ['tx', 'show', id]);
    expect(show.stdout).toMatch(/stuck\s+prepared\s.*unreachable/);

    const against = await tpc(world, ['tx', 'resolve', id, '--abort', '--reason', 'customer called']);
    expect(against.code).toBe(1);
    expect(against.stderr).toContain('Conflict (409)');
    expect(against.stderr).toMatch(/durable commit decision/);
    expect(against.stderr).toContain('urn:tpc:problem:against-decision');

    await adm.query(`ALTER DATABASE ${stuckDb} ALLOW_CONNECTIONS true`).finally(() => adm.end());
    const done = await eventually(
      () => tpc(world, ['tx', 'resolve', id, '--commit', '--reason', 'stuck is back']),
      (r) => r.code === 0 && /^result:\s+finished$/m.test(r.stdout),
      'the CLI finishing the commit',
    );
    expect(done.stdout).toMatch(/^action:\s+drove/m);
    expect(done.stdout).toMatch(/^status:\s+committed$/m);
    expect((await query<{ balance: number }>(stuckUrl, 'SELECT balance FROM accounts WHERE id = 4'))[0]!.balance).toBe(1030);
    const trail = JSON.parse((await tpc(world, ['tx', 'show', id, '--json'])).stdout);
    expect(trail.events.filter((e: { kind: string }) => e.kind === 'operator_resolve').length).toBeGreaterThanOrEqual(2);
  });
});

describe('tpc, the local commands', () => {
  it('migrate applies the log schema, then finds it up to date; serve runs the coordinator until SIGTERM', async () => {
    const { createDatabases } = await import('./harness/world.ts');
    const dbs = await createDatabases();
    try {
      const run = (args: string[], env: Record<string, string>) =>
        new Promise<Run>((resolve) => {
          execFile(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 30_000 }, (err, stdout, stderr) => {
            resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
          });
        });
      const first = await run(['migrate'], { DATABASE_URL: dbs.urls.log });
      expect(first.code).toBe(0);
      expect(first.stdout).toMatch(/applied: 0001_log_schema/);
      expect((await run(['migrate'], { DATABASE_URL: dbs.urls.log })).stdout).toMatch(/up to date/);
      expect((await run(['migrate'], {})).code).toBe(2);

      // serve is npm start under another name: same entry point, same environment, same signals.
      const served = await new Promise<Run>((resolve) => {
        const child = execFile(
          process.execPath,
          [BIN, 'serve'],
          { env: { PATH: process.env.PATH ?? '', ...dbs.env, LOG_LEVEL: 'info' }, timeout: 30_000 },
          (err, stdout, stderr) => {
            resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
          },
        );
        let out = '';
        let signalled = false;
        child.stdout?.on('data', (d: Buffer) => {
          out += d.toString();
          if (!signalled && out.includes('coordinator listening')) {
            signalled = true; // once: a second SIGTERM means "exit now"
            child.kill('SIGTERM');
          }
        });
      });
      expect(served.stdout).toMatch(/coordinator listening/);
      expect(served.stdout).toMatch(/coordinator stopped/);
      expect(served.code).toBe(0);
    } finally {
      await dbs.end();
    }
  });
});
