import pg from 'pg';
import { pino } from 'pino';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { ConfigError, loadConfig } from '../coordinator/config/load-config.ts';
import { startService, type RunningService } from '../coordinator/service.ts';
import { restartAfterCrash, startFlakyParticipant } from './harness/waits.ts';
import { adminUrl, createDatabases, createWorld, move, transfer, TOKENS, type Databases, type World } from './harness/world.ts';

/** A logger whose lines the test can read: warnings at start are part of the contract. */
function capturingLogger() {
  const lines: { level: number; msg: string; [k: string]: unknown }[] = [];
  const logger = pino(
    { level: 'warn' },
    {
      write: (line: string) => {
        lines.push(JSON.parse(line));
      },
    },
  );
  return { logger, warnings: () => lines.filter((l) => l.level >= 40).map((l) => l.msg) };
}

async function asSuperuser(cluster: { host: string; port: number }, database: string, sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl(cluster, database) });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

const roleUrl = (cluster: { host: string; port: number }, role: string, database: string) => `postgres://${role}@${cluster.host}:${cluster.port}/${database}`;

describe('a resource whose role can act beyond its database', () => {
  let dbs: Databases | undefined;
  let service: RunningService | undefined;
  afterEach(async () => {
    await service?.close();
    service = undefined;
    await dbs?.end();
    dbs = undefined;
  });

  /** Starts a coordinator on the world's databases plus `extra` resources; returns the start's outcome. */
  async function start(extra: Record<string, string>, env: Record<string, string> = {}) {
    dbs = await createDatabases({ extraResources: extra });
    const { logger, warnings } = capturingLogger();
    const config = loadConfig({ ...dbs.env, ...env });
    const started = await startService(config, { logger, queuePrefix: `q${dbs.tag}` }).then(
      (s) => ({ ok: true as const, service: s }),
      (err: unknown) => ({ ok: false as const, error: err as Error }),
    );
    if (started.ok) service = started.service;
    return { ...started, warnings };
  }

  it('is refused at start when it connects as a superuser, naming the resource, the role and the fix', async () => {
    const a = inject('clusterA');
    const r = await start({ su: adminUrl(a, 'postgres') });
    expect(r.ok).toBe(false);
    const message = r.ok ? '' : r.error.message;
    expect(message).toMatch(/resource "su" connects as role "postgres", which has SUPERUSER/);
    expect(message).toMatch(/Connect it as a role without these powers, one that owns only this database's tables \(e\.g\. CREATE ROLE app LOGIN/);
    expect(message).toMatch(/TPC_PRIVILEGED_RESOURCES=su/);
  });

  it('is refused at start when its role has CREATEROLE', async () => {
    const a = inject('clusterA');
    const role = `cr_${Math.random().toString(36).slice(2, 8)}`;
    await asSuperuser(a, 'postgres', `CREATE ROLE ${role} LOGIN CREATEROLE`);
    const r = await start({ creator: roleUrl(a, role, 'postgres') });
    expect(r.ok).toBe(false);
    expect(r.ok ? '' : r.error.message).toMatch(new RegExp(`resource "creator" connects as role "${role}", which has CREATEROLE`));
    expect(r.ok ? '' : r.error.message).toContain(`ALTER ROLE "${role}" NOCREATEROLE`);
  });

  it('is refused at start when its role is a member of pg_execute_server_program, through another role too', async () => {
    const a = inject('clusterA');
    const tag = Math.random().toString(36).slice(2, 8);
    // Indirect: the login role is granted a group that holds the power, as a careless grant would.
    await asSuperuser(
      a,
      'postgres',
      `CREATE ROLE ops_${tag} NOLOGIN; GRANT pg_execute_server_program TO ops_${tag}; CREATE ROLE app_${tag} LOGIN IN ROLE ops_${tag}`,
    );
    const r = await start({ shell: roleUrl(a, `app_${tag}`, 'postgres') });
    expect(r.ok).toBe(false);
    expect(r.ok ? '' : r.error.message).toMatch(new RegExp(`resource "shell" connects as role "app_${tag}", which has pg_execute_server_program`));
  });

  it('starts with a warning when the operator allows it by name, or allows every resource with *', async () => {
    const a = inject('clusterA');
    for (const allow of ['su', '*']) {
      const r = await start({ su: adminUrl(a, 'postgres') }, { TPC_PRIVILEGED_RESOURCES: allow });
      expect(r.ok, r.ok ? '' : r.error.message).toBe(true);
      expect(r.warnings().some((w) => /resource "su" connects as role "postgres", which has SUPERUSER: allowed by TPC_PRIVILEGED_RESOURCES/.test(w))).toBe(
        true,
      );
      const health = await service!.participants.get('su')!.health();
      expect(health.usable).toBe(true);
      await service!.close();
      service = undefined;
      await dbs!.end();
      dbs = undefined;
    }
  });

  it('does not block the start while unreachable; once it answers, it is marked unusable with the reason', async () => {
    const flaky = await startFlakyParticipant();
    try {
      await flaky.cluster.stop();
      const r = await start({ late: flaky.cluster.url('flaky') });
      expect(r.ok, r.ok ? '' : r.error.message).toBe(true);
      await restartAfterCrash(flaky.cluster);
      await service!.maintenance.checkResources();
      const refused = await fetch(`${service!.url}/v1/transactions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKENS.full}` },
        body: JSON.stringify(move('bank_a', 'late', 5, 1)),
      });
      expect(refused.status).toBe(503);
      const body = (await refused.json()) as { type: string; detail: string };
      expect(body.type).toBe('urn:tpc:problem:resource-unusable');
      expect(body.detail).toMatch(/resource "late" connects as role "postgres", which has SUPERUSER/);
      expect((await dbs!.db.bank_a.query('SELECT balance FROM accounts WHERE id = 1')).rows[0].balance).toBe(1000);
    } finally {
      await service?.close();
      service = undefined;
      await flaky.cluster.destroy();
    }
  });

  it("warns at start when a resource runs as the log's own role on the log's server", async () => {
    const a = inject('clusterA');
    const probe = await createDatabases();
    const logRole = new URL(probe.urls.log).username;
    await probe.end();
    // The log's role, allowed into another database of the same cluster, given to a resource.
    await asSuperuser(a, 'postgres', `GRANT CONNECT ON DATABASE postgres TO ${logRole}`);
    const r = await start({ alias: roleUrl(a, logRole, 'postgres') }, { DATABASE_URL: probe.urls.log });
    expect(r.ok, r.ok ? '' : r.error.message).toBe(true);
    expect(r.warnings().some((w) => w.includes(`resource "alias" connects as role "${logRole}" on the log's server, the log's own role`))).toBe(true);
  });

  it("and when the log URL lists several hosts, on any of them (a standby may become the log's server)", async () => {
    const a = inject('clusterA');
    const probe = await createDatabases();
    const log = new URL(probe.urls.log);
    await probe.end();
    await asSuperuser(a, 'postgres', `GRANT CONNECT ON DATABASE postgres TO ${log.username}`);
    // A host that refuses connections first: the log is found on the second, the resource's server.
    const multiHost = `postgres://${log.username}@127.0.0.1:1,${log.host}${log.pathname}?target_session_attrs=read-write`;
    const r = await start({ alias: roleUrl(a, log.username, 'postgres') }, { DATABASE_URL: multiHost });
    expect(r.ok, r.ok ? '' : r.error.message).toBe(true);
    expect(r.warnings().some((w) => w.includes(`resource "alias" connects as role "${log.username}" on the log's server, the log's own role`))).toBe(true);
  });
});

describe('TPC_PRIVILEGED_RESOURCES', () => {
  const env = {
    DATABASE_URL: 'postgres://tpc_log@127.0.0.1:5432/log',
    REDIS_URL: 'redis://127.0.0.1:6379',
    TPC_RESOURCES: JSON.stringify({ bank_a: 'postgres://bank_a@127.0.0.1:5432/a', bank_b: 'postgres://bank_b@127.0.0.1:5432/b' }),
  };

  it('names resources that exist: an unknown name is a ConfigError naming the variable', () => {
    expect(() => loadConfig({ ...env, TPC_PRIVILEGED_RESOURCES: 'bank_a, bank_z' })).toThrow(ConfigError);
    expect(() => loadConfig({ ...env, TPC_PRIVILEGED_RESOURCES: 'bank_a, bank_z' })).toThrow(/^TPC_PRIVILEGED_RESOURCES: no resource named "bank_z"/);
    expect(() => loadConfig({ ...env, TPC_PRIVILEGED_RESOURCES: '*,bank_a' })).toThrow(/^TPC_PRIVILEGED_RESOURCES: "\*" stands alone/);
  });

  it('is none by default, a list of names, or *', () => {
    expect(loadConfig(env).privilegedResources).toEqual([]);
    expect(loadConfig({ ...env, TPC_PRIVILEGED_RESOURCES: ' bank_b ,bank_a' }).privilegedResources).toEqual(['bank_b', 'bank_a']);
    expect(loadConfig({ ...env, TPC_PRIVILEGED_RESOURCES: '*' }).privilegedResources).toBe('*');
  });
});

describe("role defaults changed behind the coordinator's back", () => {
  let world: World | undefined;
  afterEach(async () => {
    await world?.close();
    world = undefined;
  });

  it('do not break submissions, listings or readiness: every connection sets what it relies on', async () => {
    const hostile = (role: string) =>
      [
        `ALTER ROLE ${role} SET search_path = pwned`,
        `ALTER ROLE ${role} SET statement_timeout = 1`,
        `ALTER ROLE ${role} SET lock_timeout = 1`,
        `ALTER ROLE ${role} SET idle_in_transaction_session_timeout = 1`,
        `ALTER ROLE ${role} SET default_transaction_read_only = on`,
        `ALTER ROLE ${role} SET default_transaction_isolation = serializable`,
        `ALTER ROLE ${role} SET DateStyle = 'SQL, DMY'`,
      ].join('; ');
    world = await createWorld({
      // Set before the coordinator starts, so that every connection it ever opens (the migration's,
      // the log's, each resource's) starts from them, as new connections after such a change would.
      beforeStart: async (dbs) => {
        for (const k of ['log', 'bank_a', 'bank_c'] as const) {
          const role = new URL(dbs.urls[k]).username;
          await dbs.db[k].query(hostile(role));
        }
        return {};
      },
    });
    // The settings really are in force for a plain connection of those roles.
    const plain = new pg.Client({ connectionString: world.urls.bank_a });
    // Its statement_timeout of 1 ms may cancel the SHOW on a loaded machine; a late cancellation
    // must fail this check, not surface as an uncaught error event.
    plain.on('error', () => {});
    await plain.connect();
    try {
      expect((await plain.query('SHOW default_transaction_read_only')).rows[0].default_transaction_read_only).toBe('on');
    } finally {
      await plain.end();
    }

    for (let i = 0; i < 3; i++) {
      const r = await world.submit(transfer('bank_a', 'bank_c', 10, 1, 2));
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      expect(r.body.status).toBe('committed');
    }
    expect(await world.balance('bank_a', 1)).toBe(970);
    expect(await world.balance('bank_c', 2)).toBe(1030);
    const list = await world.request('GET', '/v1/transactions?limit=5', undefined, { token: TOKENS.reader });
    expect(list.status).toBe(200);
    expect(list.body.items).toHaveLength(3);
    expect(Date.parse(list.body.items[0].createdAt)).not.toBeNaN();
    const ready = await world.request('GET', '/readyz', undefined, { token: null });
    expect(ready.status).toBe(200);
  });

  it("leave a search_path given in the resource URL's options in force for the user's statements", async () => {
    world = await createWorld({
      beforeStart: async (dbs) => {
        const role = new URL(dbs.urls.bank_b).username;
        await dbs.db.bank_b.query(
          `CREATE SCHEMA ledger AUTHORIZATION ${role}; CREATE TABLE ledger.entries (id int PRIMARY KEY); ALTER TABLE ledger.entries OWNER TO ${role}`,
        );
        const url = new URL(dbs.urls.bank_b);
        url.searchParams.set('options', '-c search_path=ledger,public');
        return { TPC_RESOURCES: JSON.stringify({ bank_a: dbs.urls.bank_a, bank_b: url.href, bank_c: dbs.urls.bank_c }) };
      },
    });
    const r = await world.submit({
      branches: [
        { resource: 'bank_a', statements: [{ sql: 'UPDATE accounts SET balance = balance - 1 WHERE id = 3', params: [] }] },
        {
          resource: 'bank_b',
          statements: [
            { sql: 'INSERT INTO entries VALUES (1)', params: [] },
            { sql: 'UPDATE accounts SET balance = balance + 1 WHERE id = 3', params: [] },
          ],
        },
      ],
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect((await world.db.bank_b.query('SELECT count(*)::int AS n FROM ledger.entries')).rows[0].n).toBe(1);
    expect(await world.balance('bank_b', 3)).toBe(1001);
  });
});
