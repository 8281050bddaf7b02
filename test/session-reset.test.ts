import pg from 'pg';
import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import { DirectParticipant } from '../participant-adapter/index.ts';
import { prepareBranch } from '../participant-adapter/prepare-branch.ts';
import { settingFree } from '../participant-adapter/statement-names.ts';
import { adminUrl, createDatabase } from './harness/world.ts';

/*
 * Between two transactions on one pooled connection (two tokens, possibly), the session keeps the
 * coordinator's named statements and nothing else. Each test pins the participant to one
 * connection, so "the next transaction" is on the session the previous one touched. The functions
 * play what the statement guard cannot see: code already in the database, run by a token's SQL.
 */

const DEBIT = 'UPDATE accounts SET balance = balance - $1 WHERE id = $2';

let url: string;
let admin: pg.Client;
let p: DirectParticipant;
let seq = 0;

/** One branch: its statements, PREPARE, COMMIT PREPARED. Returns each statement's result or error code. */
function branch(...statements: [string, unknown[]?][]) {
  return branchEndedBy('prepare', statements);
}

/** One-phase: what a single-resource transaction does, and the only way to commit LISTEN or a temporary table. */
function committed(...statements: [string, unknown[]?][]) {
  return branchEndedBy('commit', statements);
}

async function branchEndedBy(ending: 'prepare' | 'commit', statements: [string, unknown[]?][], participant: DirectParticipant = p) {
  const b = await participant.openBranch({ statementTimeoutMs: 5_000 });
  const runs = statements.map(([sql, params]) =>
    b.run(sql, params ?? []).then(
      (r) => r,
      (e: { code: string }) => e.code,
    ),
  );
  const gid = `tpc:sr:${++seq}:0`;
  let prepared = false;
  try {
    if (ending === 'commit') expect(await b.commit()).toBe(true);
    else prepared = (await b.prepare(gid)).prepared;
  } finally {
    b.release(); // before COMMIT PREPARED: the pool has one connection
  }
  if (prepared) await participant.commitPrepared(gid);
  return Promise.all(runs);
}

type Answer = Awaited<ReturnType<typeof branch>>[number];
const rowsOf = <T>(answer: Answer | undefined) => (answer as { rows: T[] }).rows;
const balance = async (id: number) => (await admin.query('SELECT balance FROM accounts WHERE id = $1', [id])).rows[0].balance as number;
const prepared = async () =>
  rowsOf<{ name: string; from_sql: boolean }>((await branch(['SELECT name, from_sql FROM pg_prepared_statements ORDER BY name']))[0]);
const backend = async () => rowsOf<{ pid: number }>((await branch(['SELECT pg_catalog.pg_backend_pid() AS pid']))[0])[0]!.pid;

describe('the session between two transactions', () => {
  beforeEach(async () => {
    const name = `sr_${Math.random().toString(36).slice(2, 8)}`;
    url = await createDatabase(inject('clusterB'), name);
    // The database's own role: the functions below are ones it could have made itself.
    admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await admin.query('CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)');
    await admin.query('INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, 10) g');
    p = new DirectParticipant({ name: 'sr', connectionString: url, maxConnections: 1 });
  });
  afterEach(async () => {
    await p.close();
    await admin.end();
  });

  it('keeps a statement that repeats prepared, so the server parses and plans it once per connection', async () => {
    for (let i = 0; i < 3; i++) await branch([DEBIT, [1, 1]]);
    const kept = await prepared();
    expect(kept).toEqual([{ name: expect.stringMatching(/^tpc_[0-9a-f]{32}$/), from_sql: false }]);
    expect(await balance(1)).toBe(997);
    // The xid probe is never among them: a function could re-make it and fake the branch's xid.
    expect(JSON.stringify(kept)).not.toContain('xact');
  });

  it("runs the real statement after a function re-made it under the coordinator's name", async () => {
    await admin.query(`
      CREATE FUNCTION public.hijack(target text) RETURNS void LANGUAGE plpgsql AS $$
      BEGIN
        EXECUTE format('DEALLOCATE %I', target);
        EXECUTE format('PREPARE %I (int, int) AS UPDATE accounts SET balance = balance + 100000 WHERE id = $2', target);
      END $$`);
    await branch([DEBIT, [1, 2]]);
    await branch([DEBIT, [1, 2]]);
    const { name } = (await prepared())[0]!;
    // One token's transaction re-makes the statement; in the same transaction it is that token's
    // own SQL (it could run it directly), so only what comes after matters.
    const [hijacked] = await branch(['SELECT public.hijack($1)', [name]]);
    expect(hijacked).toMatchObject({ rowCount: 1 });
    // The next token's debit is the debit it sent, not the hijacker's credit.
    await branch([DEBIT, [5, 2]]);
    expect(await balance(2)).toBe(1000 - 1 - 1 - 5);
    expect((await prepared()).every((s) => !s.from_sql)).toBe(true);
  });

  it('keeps the lookup of a prepared branch named, and it cannot be faked by a function that re-made it', async () => {
    const gid = 'tpc:sr:00000000-0000-4000-8000-000000000000:0';
    expect(await p.inspectPrepared(gid)).toBeNull();
    await branch([DEBIT, [1, 1]]);
    expect((await prepared()).map((s) => s.name)).toContain('tpc_admin_inspect_locks');
    // Re-made to say the branch is prepared: a commit decision taken on that word would be a lie.
    await admin.query(`
      CREATE FUNCTION public.fake_inspect() RETURNS void LANGUAGE plpgsql AS $$
      BEGIN
        EXECUTE 'DEALLOCATE tpc_admin_inspect_locks';
        EXECUTE 'PREPARE tpc_admin_inspect_locks (text) AS SELECT now() AS prepared, 0::int4 AS locks, ''42''::text AS xid';
      END $$`);
    const [faked] = await branch(['SELECT public.fake_inspect()']);
    expect(faked).toMatchObject({ rowCount: 1 });
    expect(await p.inspectPrepared(gid)).toBeNull();
    expect(await p.inspectPrepared(gid)).toBeNull();
  });

  it("works on after a function dropped the coordinator's statement", async () => {
    await admin.query(`CREATE FUNCTION public.drop_it(target text) RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE format('DEALLOCATE %I', target); END $$`);
    await branch([DEBIT, [1, 3]]);
    await branch([DEBIT, [1, 3]]);
    const { name } = (await prepared())[0]!;
    await branch(['SELECT public.drop_it($1)', [name]]);
    expect(await branch([DEBIT, [1, 3]])).toEqual([expect.objectContaining({ rowCount: 1 })]);
    expect(await balance(3)).toBe(997);
  });

  it('wipes a statement a function prepared, whether or not the connection holds named statements', async () => {
    await admin.query(`CREATE FUNCTION public.leave(n text) RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE format('PREPARE %I AS SELECT 1', n); END $$`);
    await branch(['SELECT public.leave($1)', ['before_names']]);
    expect(await prepared()).toEqual([]);
    await branch([DEBIT, [1, 7]]);
    await branch([DEBIT, [1, 7]]);
    await branch(['SELECT public.leave($1)', ['after_names']]);
    expect(await prepared()).toEqual([{ name: expect.stringMatching(/^tpc_/), from_sql: false }]);
  });

  it('rolls back a branch whose statement failed, and pools its connection for the next one', async () => {
    const pid = await backend();
    const b = await p.openBranch({ statementTimeoutMs: 5_000 });
    const failed = b.run('UPDATE accounts SET balance = balance / $1 WHERE id = 8', [0]).catch((e: { code: string }) => e.code);
    // PREPARE behind the probe never runs: the probe meets the failed transaction first.
    expect(await b.prepare('tpc:sr:failed:0')).toEqual({ prepared: false, xid: null });
    expect(b.state).toBe('finished');
    b.release();
    expect(await failed).toBe('22012');
    expect(await p.listPrepared('tpc:sr:')).toEqual([]);
    expect(await backend()).toBe(pid);
    expect(await balance(8)).toBe(1000);
  });

  it('wipes what a function leaves on the session: settings, role, locks, temporary tables, LISTEN, currval', async () => {
    await admin.query('CREATE SEQUENCE s');
    const owner = (await admin.query('SELECT current_user AS u')).rows[0].u as string;
    const superuser = new pg.Client({ connectionString: adminUrl(inject('clusterB'), 'postgres') });
    await superuser.connect();
    try {
      await superuser.query('DO $$ BEGIN CREATE ROLE sr_other NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$');
      await superuser.query(`GRANT sr_other TO ${owner}`);
    } finally {
      await superuser.end();
    }
    await admin.query(`
      CREATE FUNCTION public.litter() RETURNS void LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM set_config('search_path', 'pg_catalog', false);
        PERFORM set_config('app.token', 'first', false);
        PERFORM pg_advisory_lock(42);
        CREATE TEMPORARY TABLE left_behind (x int);
        LISTEN first_token;
        PERFORM set_config('role', 'sr_other', false);
      END $$`);
    await branch([DEBIT, [1, 4]]);
    const [next, litter] = await committed(["SELECT nextval('public.s')"], ['SELECT public.litter()']);
    expect(litter).toMatchObject({ rowCount: 1 });
    expect(next).toMatchObject({ rows: [{ nextval: '1' }] });

    const [state, temp, currval] = await branch(
      [
        `SELECT pg_catalog.current_setting('search_path') AS path, pg_catalog.current_setting('app.token', true) AS token, current_user AS role,
          (SELECT count(*)::int FROM pg_catalog.pg_locks WHERE locktype = 'advisory') AS locks,
          (SELECT count(*)::int FROM pg_catalog.pg_listening_channels()) AS channels`,
      ],
      ["SELECT count(*)::int AS n FROM pg_catalog.pg_class WHERE relname = 'left_behind'"],
      ["SELECT pg_catalog.currval('public.s')"],
    );
    expect(state).toMatchObject({ rows: [{ path: '"$user", public', token: expect.toBeOneOf([null, '']), role: owner, locks: 0, channels: 0 }] });
    expect(temp).toMatchObject({ rows: [{ n: 0 }] });
    // The last call's currval would tell one token the sequence value another drew.
    expect(currval).toBe('55000');
  });

  it('resets nothing after statements that can leave nothing on the session, and resets after a function call', async () => {
    await admin.query('CREATE SEQUENCE s');
    // The pool's owner marks its one session; RESET ALL, the reset's first effect, would clear the mark.
    const pool = new pg.Pool({ connectionString: url, max: 1 });
    const own = new DirectParticipant({ name: 'sr', pool });
    const mark = async () => (await pool.query("SELECT pg_catalog.current_setting('application_name') AS v")).rows[0].v as string;
    try {
      await pool.query("SET application_name = 'marked'");
      const neutral: [string, unknown[]?][] = [
        [DEBIT, [1, 9]],
        ['SELECT count(*)::int AS n, max(balance) FROM accounts WHERE id = $1', [9]],
        ['LOCK TABLE accounts IN ROW EXCLUSIVE MODE'],
        ['INSERT INTO accounts (id, balance) VALUES ($1, 0) ON CONFLICT (id) DO UPDATE SET balance = accounts.balance', [9]],
      ];
      expect(await branchEndedBy('prepare', neutral, own)).toEqual(neutral.map(() => expect.objectContaining({ command: expect.any(String) })));
      expect(await mark()).toBe('marked');
      await branchEndedBy(
        'commit',
        [
          [DEBIT, [1, 9]],
          ['SELECT now(), lower($1)', ['X']],
        ],
        own,
      );
      expect(await mark()).toBe('marked');
      expect(await balance(9)).toBe(998);

      // nextval leaves currval on the session: the reset runs, and the mark goes with everything else.
      await branchEndedBy('prepare', [[DEBIT, [1, 9]], ["SELECT nextval('public.s')"]], own);
      expect(await mark()).toBe('');
      // A SET LOCAL, though it ends with the transaction, can move the search_path under later names: reset too.
      await pool.query("SET application_name = 'marked'");
      await branchEndedBy('commit', [["SET LOCAL work_mem = '8MB'"], [DEBIT, [1, 9]]], own);
      expect(await mark()).toBe('');
      // The connection was pooled throughout: one backend served every branch.
      expect(pool.totalCount).toBe(1);
    } finally {
      await own.close();
      await pool.end();
    }
  });

  it('gives a statement the search_path of the transaction that runs it, not of the one that first parsed it', async () => {
    await admin.query('CREATE SCHEMA decoy');
    await admin.query('CREATE TABLE decoy.accounts (id int PRIMARY KEY, balance int NOT NULL)');
    await admin.query('INSERT INTO decoy.accounts SELECT g, 1000 FROM generate_series(1, 10) g');
    await admin.query(`GRANT USAGE ON SCHEMA decoy TO CURRENT_USER`);
    await branch(['SET LOCAL search_path = decoy, public'], [DEBIT, [1, 5]]);
    await branch(['SET LOCAL search_path = decoy, public'], [DEBIT, [1, 5]]);
    expect((await prepared()).length).toBe(1);
    await branch([DEBIT, [7, 5]]);
    expect(await balance(5)).toBe(993);
    expect((await admin.query('SELECT balance FROM decoy.accounts WHERE id = 5')).rows[0].balance).toBe(998);
  });

  it('names no statement with a string constant: its meaning would depend on the settings of whoever parsed it', async () => {
    expect(settingFree(DEBIT)).toBe(true);
    expect(settingFree('SELECT 1.5, true, -3 FROM accounts WHERE id = $1')).toBe(true);
    expect(settingFree("SELECT * FROM accounts WHERE now() > '01/02/2020'")).toBe(false);
    expect(settingFree("SELECT interval '1 day'")).toBe(false);
    expect(settingFree('SELECT * FROM accounts WHERE balance = NULL')).toBe(false);
    expect(settingFree("SELECT B'101'")).toBe(false);
    const dated = "SELECT '01/02/2020'::date AS d";
    // One token parses under day-first dates; the next reads the date as the coordinator's startup settings say.
    await branch(["SET LOCAL DateStyle = 'ISO, DMY'"], [dated]);
    await branch(["SET LOCAL DateStyle = 'ISO, DMY'"], [dated]);
    const [, later] = await branch(['SELECT 1'], [dated]);
    expect(rowsOf<{ d: Date }>(later)[0]!.d.getMonth()).toBe(0);
    expect(await prepared()).toEqual([]);
  });

  it('fails a statement made stale by a column added, once, and recovers on the next transaction', async () => {
    const read = 'SELECT * FROM accounts WHERE id = $1';
    await branch([read, [6]]);
    await branch([read, [6]]);
    await admin.query('ALTER TABLE accounts ADD COLUMN note int');
    const [stale] = await branch([read, [6]]);
    expect(stale).toBe('0A000'); // cached plan must not change result type
    expect(await branch([read, [6]])).toEqual([expect.objectContaining({ rows: [{ id: 6, balance: 1000, note: null }] })]);
  });
});

describe("a joined branch prepared on a service's own pool", () => {
  it("leaves the service's own prepared statements usable", async () => {
    const dbUrl = await createDatabase(inject('clusterB'), `srj_${Math.random().toString(36).slice(2, 8)}`);
    const pool = new pg.Pool({ connectionString: dbUrl, max: 1 });
    try {
      await pool.query('CREATE TABLE items (id int PRIMARY KEY)');
      const own = { name: 'service_lookup', text: 'SELECT count(*)::int AS n FROM items WHERE id = $1' };
      await pool.query({ ...own, values: [1] });
      await prepareBranch(
        pool,
        'tpc:srj:1:0',
        async (db) => {
          await db
            .insertInto('items' as never)
            .values({ id: 1 } as never)
            .execute();
        },
        { timeoutMs: 5_000 },
      );
      await pool.query("COMMIT PREPARED 'tpc:srj:1:0'");
      // DISCARD ALL here used to drop it while node-postgres still believed it parsed.
      expect((await pool.query({ ...own, values: [1] })).rows).toEqual([{ n: 1 }]);
    } finally {
      await pool.end();
    }
  });
});
