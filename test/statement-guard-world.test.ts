import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../coordinator/config/load-config.ts';
import { BANKS, createWorld, TOKENS, transfer, type World } from './harness/world.ts';

/*
 * Issue 11, as a hostile client with a token limited to bank_a and bank_b would try it: every
 * statement of the issue (and of the categories it stands for) answers 422 statement_not_allowed,
 * and NOTHING happens — no balance moves on either branch, no row in the log, no prepared
 * transaction, no file on the host, no role setting, no extension. Asserted on the databases.
 * Then statement templates (TPC_STATEMENTS_FILE) and a token that may use only those.
 */

const PAIR = 'pair-token-0123456789abcdef';
const TEMPLATED = 'templated-token-0123456789abcdef';
const TOKENS_JSON = JSON.stringify([
  { name: 'full', token: TOKENS.full, scopes: ['submit', 'read', 'operate'], resources: ['*'] },
  { name: 'pair', token: PAIR, scopes: ['submit', 'read'], resources: ['bank_a', 'bank_b'] },
  { name: 'templated', token: TEMPLATED, scopes: ['submit', 'read'], resources: ['bank_a', 'bank_b'], sql: false },
]);
const TEMPLATES = {
  debit: 'UPDATE accounts SET balance = balance - $1 WHERE id = $2 AND balance >= $1',
  credit: { sql: 'UPDATE accounts SET balance = balance + $1 WHERE id = $2' },
  'read-balance': 'SELECT balance FROM accounts WHERE id = $1',
};

const dir = mkdtempSync(join(tmpdir(), 'tpc-guard-'));
const templatesFile = join(dir, 'statements.json');
writeFileSync(templatesFile, JSON.stringify(TEMPLATES));
// Where the shell commands below would write, were they ever run.
const marker = join(tmpdir(), `tpc-pwned-${randomBytes(6).toString('hex')}`);

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(marker, { force: true });
});

const HOSTILE: [string, string, RegExp][] = [
  [
    'a shell through DO … EXECUTE COPY … TO PROGRAM',
    `DO $$ BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''id > ${marker}'''; END $$`,
    /^DO blocks are not allowed/,
  ],
  ['COPY … TO PROGRAM', `COPY (SELECT 1) TO PROGRAM 'id > ${marker}'`, /^COPY is not allowed/],
  ['COPY … FROM a server file', "COPY accounts FROM '/etc/passwd'", /^COPY is not allowed/],
  ['CREATE EXTENSION dblink', 'CREATE EXTENSION dblink', /^CREATE EXTENSION is not allowed/],
  [
    'an autonomous write through dblink_exec',
    "SELECT dblink_exec('dbname=bank_a', 'UPDATE accounts SET balance = balance - 500 WHERE id = 1')",
    /^function dblink_exec acts outside the transaction/,
  ],
  ['ALTER ROLE CURRENT_USER SET', 'ALTER ROLE CURRENT_USER SET search_path = pwned', /^ALTER ROLE … SET is not allowed/],
  [
    "pg_terminate_backend of the log's connections",
    'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()',
    /^function pg_terminate_backend/,
  ],
  ['a session-wide set_config', "SELECT set_config('search_path', 'x', false)", /^function set_config is allowed only with the literal true/],
  ['a session advisory lock', 'SELECT pg_advisory_lock(1)', /^function pg_advisory_lock/],
  ['a COMMIT hidden after a comment', '-- x\rCOMMIT', /^transaction control/],
  ['a COMMIT after a block comment', '/* a /* nested */ comment */ COMMIT', /^transaction control/],
  ['a server file read', "SELECT pg_read_file('/etc/passwd')", /^function pg_read_file/],
  ['GRANT', 'GRANT ALL ON accounts TO PUBLIC', /^GRANT and REVOKE/],
  ['two statements in one string', 'SELECT 1; UPDATE accounts SET balance = 0', /^only one statement/],
  ['a statement that does not parse', 'UPDAT accounts SET balance = 0', /^the statement does not parse: syntax error/],
];

async function snapshot(world: World) {
  const q = async (pool: World['db']['log'], sql: string) => (await pool.query(sql)).rows;
  return {
    balances: Object.fromEntries(
      await Promise.all(BANKS.map(async (b) => [b, (await q(world.db[b], 'SELECT id, balance FROM accounts ORDER BY id')).map((r) => r.balance)])),
    ),
    log: await q(world.db.log, 'SELECT count(*)::int AS n FROM tpc_transactions'),
    prepared: await world.preparedGids(),
    roleSettings: await q(world.db.bank_a, 'SELECT setdatabase, setrole, setconfig FROM pg_db_role_setting ORDER BY 1, 2'),
    extensions: await q(world.db.bank_a, 'SELECT extname FROM pg_extension ORDER BY 1'),
  };
}

describe('hostile statements from a token limited to bank_a and bank_b', () => {
  let world: World;
  beforeAll(async () => {
    world = await createWorld({ env: { TPC_API_TOKENS: TOKENS_JSON, TPC_STATEMENTS_FILE: templatesFile } });
  });
  afterAll(async () => {
    await world?.close();
  });

  it.each(HOSTILE)('%s: 422 statement_not_allowed, nothing applied on either branch', async (_, sql, why) => {
    const before = await snapshot(world);
    const body = transfer('bank_a', 'bank_b', 100);
    body.branches[0]!.statements.push({ sql } as never);
    const res = await world.submit(body, { token: PAIR });
    await world.service.engine.drain();
    expect(res.status, JSON.stringify(res.body)).toBe(422);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(res.body).toMatchObject({
      type: 'urn:tpc:problem:statement_not_allowed',
      status: 422,
      branch: 0,
      resource: 'bank_a',
      statement: 1,
      reason: expect.stringMatching(why),
      errors: [{ path: 'branches.0.statements.1', message: expect.stringMatching(/^bank_a: /) }],
    });
    expect(await snapshot(world)).toEqual(before);
    expect(existsSync(marker)).toBe(false);
  });

  it('lists every refused statement, and names the first', async () => {
    const before = await snapshot(world);
    const body = transfer('bank_a', 'bank_b', 100);
    body.branches[1]!.statements.unshift({ sql: 'SELECT pg_advisory_lock(1)' } as never);
    body.branches[1]!.statements.push({ sql: 'COMMIT' } as never);
    body.branches[0]!.statements.push({ sql: 'LISTEN x' } as never);
    const res = await world.submit(body, { token: PAIR });
    expect(res.status).toBe(422);
    expect(res.body).toMatchObject({ branch: 0, resource: 'bank_a', statement: 1, reason: expect.stringMatching(/^LISTEN/) });
    expect(res.body.errors.map((e: { path: string }) => e.path)).toEqual(['branches.0.statements.1', 'branches.1.statements.0', 'branches.1.statements.2']);
    expect(await snapshot(world)).toEqual(before);
  });

  it("still commits ordinary work afterwards, with the log's connections intact", async () => {
    const res = await world.submit(
      {
        ...transfer('bank_a', 'bank_b', 1, 9, 9),
        branches: [
          {
            resource: 'bank_a',
            statements: [
              { sql: 'SET LOCAL lock_timeout = 1000' },
              { sql: 'SELECT pg_advisory_xact_lock(7)' },
              { sql: 'UPDATE accounts SET balance = balance - $1 WHERE id = $2', params: [1, 9] },
            ],
          },
          { resource: 'bank_b', statements: [{ sql: 'WITH c AS (UPDATE accounts SET balance = balance + 1 WHERE id = 9 RETURNING balance) SELECT * FROM c' }] },
        ],
      },
      { token: PAIR },
    );
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    expect(await world.balance('bank_a', 9)).toBe(999);
    expect(await world.balance('bank_b', 9)).toBe(1001);
    expect((await world.request('GET', `/v1/transactions/${res.body.id}`, undefined, { token: PAIR })).status).toBe(200);
  });

  describe('statement templates', () => {
    const byTemplate = (amount: number, id: number) => ({
      branches: [
        { resource: 'bank_a', statements: [{ statement: 'debit', params: [amount, id], expect: { rowCount: 1 } }] },
        {
          resource: 'bank_b',
          statements: [
            { statement: 'credit', params: [amount, id] },
            { statement: 'read-balance', params: [id] },
          ],
        },
      ],
      timeoutMs: 10_000,
    });

    it("a submission by template commits the templates' SQL", async () => {
      const res = await world.submit(byTemplate(30, 3), { token: TEMPLATED });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      expect(res.body.branches[1].results[1].rows).toEqual([{ balance: 1030 }]);
      expect(await world.balance('bank_a', 3)).toBe(970);
      expect(await world.balance('bank_b', 3)).toBe(1030);
    });

    it("a template's expectation aborts like raw SQL's", async () => {
      const res = await world.submit(byTemplate(5000, 4), { token: TEMPLATED });
      expect(res.status).toBe(409);
      expect(res.body.error).toMatchObject({ resource: 'bank_a', statement: 0, code: 'expectation_failed' });
      expect(await world.balance('bank_b', 4)).toBe(1000);
    });

    it('a "sql": false token gets 403 raw-sql-forbidden for raw SQL, even beside templates; nothing runs', async () => {
      const before = await snapshot(world);
      const raw = await world.submit(transfer('bank_a', 'bank_b', 10, 5, 5), { token: TEMPLATED });
      expect(raw.status).toBe(403);
      expect(raw.body).toMatchObject({ type: 'urn:tpc:problem:raw-sql-forbidden', status: 403 });
      const mixed = byTemplate(10, 5);
      mixed.branches[1]!.statements.push({ sql: 'SELECT 1' } as never);
      expect((await world.submit(mixed, { token: TEMPLATED })).body.type).toBe('urn:tpc:problem:raw-sql-forbidden');
      expect(await snapshot(world)).toEqual(before);
      // Other tokens may mix both.
      const ok = await world.submit(mixed, { token: PAIR });
      expect(ok.status).toBe(201);
      expect(await world.balance('bank_b', 5)).toBe(1010);
    });

    it('an unknown template, or both sql and statement, or neither: 422 validation naming it', async () => {
      const before = await snapshot(world);
      const unknown = byTemplate(1, 6);
      unknown.branches[0]!.statements[0]!.statement = 'steal';
      const r1 = await world.submit(unknown, { token: TEMPLATED });
      expect(r1.status).toBe(422);
      expect(r1.body).toMatchObject({
        type: 'urn:tpc:problem:validation',
        errors: [{ path: 'branches.0.statements.0.statement', message: 'unknown statement template "steal"' }],
      });
      const both = byTemplate(1, 6);
      Object.assign(both.branches[0]!.statements[0]!, { sql: 'SELECT 1' });
      expect((await world.submit(both, { token: PAIR })).body).toMatchObject({
        status: 422,
        type: 'urn:tpc:problem:validation',
        detail: expect.stringContaining('exactly one of "sql" and "statement"'),
      });
      const neither = byTemplate(1, 6);
      delete (neither.branches[0]!.statements[0] as { statement?: string }).statement;
      expect((await world.submit(neither, { token: PAIR })).body).toMatchObject({ status: 422, type: 'urn:tpc:problem:validation' });
      expect(
        (await world.submit({ ...byTemplate(1, 6), branches: [{ resource: 'bank_a', statements: [{ statement: 'bad name!' }] }] }, { token: TEMPLATED }))
          .status,
      ).toBe(422);
      expect(await snapshot(world)).toEqual(before);
    });

    it('the idempotency key covers the resolved SQL: a template and its raw SQL are the same request', async () => {
      const headers = { 'Idempotency-Key': `k-${randomBytes(4).toString('hex')}` };
      const first = await world.submit(byTemplate(2, 7), { token: PAIR, headers });
      expect(first.status).toBe(201);
      const raw = {
        branches: [
          { resource: 'bank_a', statements: [{ sql: TEMPLATES.debit, params: [2, 7], expect: { rowCount: 1 } }] },
          {
            resource: 'bank_b',
            statements: [
              { sql: TEMPLATES.credit.sql, params: [2, 7] },
              { sql: TEMPLATES['read-balance'], params: [7] },
            ],
          },
        ],
        timeoutMs: 10_000,
      };
      const again = await world.submit(raw, { token: PAIR, headers });
      expect(again.status).toBe(201);
      expect(again.body.id).toBe(first.body.id);
      expect(await world.balance('bank_a', 7)).toBe(998);
    });
  });
});

describe('TPC_STATEMENTS_FILE', () => {
  const env = (file: string) => ({
    DATABASE_URL: 'postgres://x@127.0.0.1/log',
    REDIS_URL: 'redis://127.0.0.1:6379',
    TPC_RESOURCES: JSON.stringify({ bank_a: 'postgres://x@127.0.0.1/a' }),
    TPC_STATEMENTS_FILE: file,
  });
  const write = (name: string, text: string) => {
    const file = join(dir, name);
    writeFileSync(file, text);
    return file;
  };

  it('loads templates checked by the guard', () => {
    const config = loadConfig(env(templatesFile));
    expect([...config.statementTemplates.keys()]).toEqual(['debit', 'credit', 'read-balance']);
    expect(config.statementTemplates.get('credit')).toBe(TEMPLATES.credit.sql);
    expect(loadConfig({ ...env(templatesFile), TPC_STATEMENTS_FILE: undefined }).statementTemplates.size).toBe(0);
  });

  it.each([
    ['a missing file', () => join(dir, 'missing.json'), /^TPC_STATEMENTS_FILE: cannot read/],
    ['bad JSON', () => write('bad.json', '{ "debit": '), /^TPC_STATEMENTS_FILE: not valid JSON/],
    ['not an object', () => write('array.json', '["SELECT 1"]'), /^TPC_STATEMENTS_FILE: must be a JSON object/],
    ['a bad name', () => write('name.json', '{ "de bit": "SELECT 1" }'), /^TPC_STATEMENTS_FILE: template "de bit": a name is/],
    ['a value that is not SQL', () => write('value.json', '{ "debit": 5 }'), /^TPC_STATEMENTS_FILE: template "debit": must be/],
    ['an unknown field', () => write('field.json', '{ "debit": { "sql": "SELECT 1", "mode": "x" } }'), /template "debit": unknown field "mode"/],
    [
      'a refused statement',
      () => write('refused.json', '{ "ok": "SELECT 1", "wipe": "TRUNCATE accounts" }'),
      /^TPC_STATEMENTS_FILE: template "wipe": TRUNCATE is not allowed/,
    ],
    [
      'a hidden function',
      () => write('fn.json', '{ "peek": "SELECT * FROM accounts WHERE pg_catalog.pg_advisory_lock(1) IS NOT NULL" }'),
      /template "peek": function pg_advisory_lock/,
    ],
  ])('refuses %s with a ConfigError naming the variable and the template', (_, file, message) => {
    expect(() => loadConfig(env(file()))).toThrow(ConfigError);
    expect(() => loadConfig(env(file()))).toThrow(message);
  });

  it('a token\'s "sql" must be a boolean, true by default', () => {
    const tokens = (extra: object) => JSON.stringify([{ name: 't', token: 'x'.repeat(20), scopes: ['submit'], resources: ['*'], ...extra }]);
    expect(loadConfig({ ...env(templatesFile), TPC_API_TOKENS: tokens({}) }).tokens![0]!.sql).toBe(true);
    expect(loadConfig({ ...env(templatesFile), TPC_API_TOKENS: tokens({ sql: false }) }).tokens![0]!.sql).toBe(false);
    expect(() => loadConfig({ ...env(templatesFile), TPC_API_TOKENS: tokens({ sql: 'no' }) })).toThrow(/^TPC_API_TOKENS: 0\.sql/);
  });
});
