import { describe, expect, it } from 'vitest';
import { assertStatementAllowed, statementRefusal } from '../participant-adapter/statement-guard.ts';

/*
 * The statement guard on its own: a table of statements it must let through and of statements it
 * must refuse, with the reason it gives. No database: what each refused statement would do to a
 * real one is shown by test/statement-guard-world.test.ts.
 */

const ALLOWED = [
  'SELECT 1',
  'SELECT 1;',
  '  select balance from accounts where id = $1  ',
  '(SELECT 1)',
  'VALUES (1), (2)',
  'TABLE accounts',
  'UPDATE accounts SET balance = balance - $1 WHERE id = $2 AND balance >= $1',
  'INSERT INTO t (a) VALUES ($1) ON CONFLICT (a) DO UPDATE SET a = excluded.a RETURNING *',
  'INSERT INTO t SELECT * FROM s',
  'DELETE FROM t WHERE a IN (SELECT a FROM s) RETURNING a',
  'MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.a)',
  'WITH x AS (SELECT 1) SELECT * FROM x',
  'WITH moved AS (DELETE FROM t WHERE a = 1 RETURNING *) INSERT INTO archive SELECT * FROM moved',
  'SELECT * FROM t FOR UPDATE SKIP LOCKED',
  'SELECT pg_sleep(0.01)',
  'SELECT pg_advisory_xact_lock(1), pg_try_advisory_xact_lock(2), pg_advisory_xact_lock_shared(3)',
  "SELECT set_config('search_path', 'public', true)",
  "SELECT set_config('myapp.user', $1, true)",
  "SELECT current_setting('search_path')",
  "SELECT nextval('s')",
  'SELECT * FROM generate_series(1, 3) g',
  'SELECT dblink FROM t', // a column of that name, not a call
  'SELECT "dblink" FROM t',
  'LOCK TABLE accounts IN ROW EXCLUSIVE MODE',
  'LOCK accounts',
  'SET LOCAL lock_timeout = 100',
  'set local search_path to public',
  'SET LOCAL myapp.x TO DEFAULT',
  'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE',
  'set constraints all deferred',
  '/* a comment */ SELECT 1 -- another',
  'SELECT 1 /* a /* nested */ comment */',
  "SELECT 'COMMIT; DROP TABLE t'",
  'SELECT $$ DO $x$ $$',
];

// [statement, a part of the reason]
const REFUSED: [string, RegExp][] = [
  ['', /empty/],
  ['   ', /empty/],
  [';', /empty/],
  ['-- only a comment', /empty/],
  ['SELEC broken', /does not parse: syntax error at or near "SELEC"/],
  ['SELECT 1 /* unterminated', /does not parse/],
  ['SELECT 1; SELECT 2', /only one statement.*found 2/],
  ['SELECT 1; COMMIT', /only one statement/],
  ['SELECT 1\u0000; COMMIT', /NUL/],
  ['COMMIT', /transaction control/],
  [' rollback', /transaction control/],
  ['begin', /transaction control/],
  ['start transaction', /transaction control/],
  ['END', /transaction control/],
  ['SAVEPOINT s', /transaction control/],
  ['RELEASE s', /transaction control/],
  ["PREPARE TRANSACTION 'x'", /transaction control/],
  ["COMMIT PREPARED 'x'", /transaction control/],
  ['/* x */ END', /transaction control/],
  ['/* a /* nested */ */ commit', /transaction control/],
  ["-- c\nPREPARE TRANSACTION 'x'", /transaction control/],
  ['-- x\rCOMMIT', /transaction control/],
  ['-- c\rSET search_path TO x\n, pg_catalog', /session-wide SET/],
  ["DO $$ BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''id > /tmp/x'''; END $$", /^DO blocks are not allowed/],
  ['CALL p()', /CALL/],
  ["COPY (SELECT 1) TO PROGRAM 'id'", /COPY/],
  ["COPY accounts FROM '/etc/passwd'", /COPY/],
  ['COPY t FROM STDIN', /COPY/],
  ['COPY t TO STDOUT', /COPY/],
  ['PREPARE p AS SELECT 1', /PREPARE/],
  ['EXECUTE p', /EXECUTE/],
  ['DEALLOCATE ALL', /DEALLOCATE/],
  ['DECLARE c CURSOR WITH HOLD FOR SELECT 1', /cursors/],
  ['FETCH c', /cursors/],
  ['LISTEN x', /LISTEN/],
  ['UNLISTEN *', /UNLISTEN/],
  ["NOTIFY x, 'y'", /NOTIFY/],
  ['DISCARD ALL', /DISCARD/],
  ['RESET ALL', /RESET/],
  ['RESET search_path', /RESET/],
  ['SHOW search_path', /SHOW/],
  ['SET search_path = x', /session-wide SET/],
  ['SET SESSION statement_timeout = 0', /session-wide SET/],
  ['set session authorization x', /session-wide SET/],
  ['SET ROLE x', /session-wide SET/],
  ['SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY', /session-wide SET/],
  ['SET LOCAL ROLE x', /setting role may not be changed/],
  ['SET LOCAL "ROLE" = x', /setting role may not be changed/],
  ['SET LOCAL SESSION AUTHORIZATION x', /setting session_authorization/],
  ['SET LOCAL standard_conforming_strings = off', /standard_conforming_strings/],
  ["SET LOCAL client_encoding = 'SJIS'", /client_encoding/],
  ['SET LOCAL statement_timeout = 0', /statement_timeout/],
  ['SET LOCAL synchronous_commit = off', /synchronous_commit .*durable/],
  ["SELECT set_config('synchronous_commit', 'off', true)", /synchronous_commit/],
  ['ALTER ROLE CURRENT_USER SET search_path = pwned', /ALTER ROLE … SET/],
  ['ALTER DATABASE d SET search_path = pwned', /ALTER DATABASE … SET/],
  ["ALTER SYSTEM SET work_mem = '1GB'", /ALTER SYSTEM/],
  ['CREATE EXTENSION dblink', /CREATE EXTENSION/],
  ['GRANT ALL ON accounts TO PUBLIC', /GRANT and REVOKE/],
  ['REVOKE ALL ON accounts FROM PUBLIC', /GRANT and REVOKE/],
  ['GRANT pg_execute_server_program TO x', /GRANT and REVOKE/],
  ['TRUNCATE accounts', /TRUNCATE/],
  ['VACUUM accounts', /VACUUM/],
  ['ANALYZE accounts', /VACUUM and ANALYZE/],
  ['EXPLAIN ANALYZE DELETE FROM accounts', /EXPLAIN/],
  ['CHECKPOINT', /CHECKPOINT/],
  ["LOAD 'x'", /LOAD/],
  ['CREATE TABLE x (a int)', /^Create statements are not allowed: a branch may run only SELECT/],
  ['DROP TABLE accounts', /^Drop statements are not allowed/],
  ['ALTER TABLE accounts ADD COLUMN x int', /AlterTable statements are not allowed/],
  ['CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$', /CreateFunction statements/],
  ['CREATE TABLE x AS SELECT 1', /CreateTableAs statements/],
  ['CREATE ROLE r SUPERUSER', /CreateRole statements/],
  ['SELECT 1 INTO t', /SELECT … INTO/],
  ['SELECT * INTO TEMP t FROM accounts', /SELECT … INTO/],
  ['LOCK pg_authid', /system catalog \(pg_authid\)/],
  ['LOCK TABLE pg_catalog.pg_class IN ACCESS EXCLUSIVE MODE', /system catalog/],
  ['LOCK accounts, information_schema.tables', /system catalog/],
  // functions, wherever they hide
  ["SELECT dblink_exec('dbname=bank_a', 'UPDATE accounts SET balance = 0')", /^function dblink_exec acts outside the transaction/],
  ["SELECT * FROM dblink('dbname=x', 'SELECT 1') AS t(a int)", /function dblink acts outside/],
  ["SELECT pg_catalog.dblink_exec('x', 'y')", /function dblink_exec/],
  ["SELECT \"DBLINK_EXEC\"('x', 'y')", /function dblink_exec/],
  ['SELECT public."dblink_connect"(\'x\')', /function dblink_connect/],
  ['SELECT postgres_fdw_disconnect_all()', /function postgres_fdw_disconnect_all/],
  ['SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()', /function pg_terminate_backend .*signals other sessions/],
  ['SELECT pg_cancel_backend(1)', /pg_cancel_backend/],
  ["SELECT pg_read_file('/etc/passwd')", /pg_read_file .*files/],
  ["SELECT pg_read_binary_file('x')", /pg_read_binary_file/],
  ["SELECT * FROM pg_ls_dir('.')", /pg_ls_dir/],
  ['SELECT pg_ls_waldir()', /pg_ls_waldir/],
  ["SELECT pg_stat_file('x')", /pg_stat_file/],
  ["SELECT lo_import('/etc/passwd')", /lo_import/],
  ["SELECT lo_export(1, '/tmp/x')", /lo_export/],
  ["SELECT pg_file_write('x', 'y', false)", /pg_file_write/],
  ["SELECT set_config('search_path', 'x', false)", /set_config .*literal true/],
  ["SELECT set_config('search_path', 'x', 'true')", /set_config/],
  ["SELECT set_config('search_path', 'x', $1)", /set_config/],
  ["SELECT set_config($1, 'x', true)", /literal setting name/],
  ["SELECT set_config('role', 'x', true)", /setting role/],
  ["SELECT set_config('Standard_Conforming_Strings', 'off', true)", /standard_conforming_strings/],
  ['SELECT pg_advisory_lock(1)', /pg_advisory_lock .*session advisory lock/],
  ['SELECT pg_advisory_lock_shared(1)', /pg_advisory_lock_shared/],
  ['SELECT pg_try_advisory_lock(1)', /pg_try_advisory_lock/],
  ['SELECT pg_advisory_unlock_all()', /pg_advisory_unlock_all/],
  ["SELECT pg_notify('c', 'x')", /pg_notify/],
  ['SELECT pg_reload_conf()', /pg_reload_conf .*administers/],
  ['SELECT pg_rotate_logfile()', /pg_rotate_logfile/],
  ['SELECT pg_switch_wal()', /pg_switch_wal/],
  ['SELECT pg_promote()', /pg_promote/],
  ["SELECT pg_create_logical_replication_slot('s', 'test_decoding')", /replication/],
  ["SELECT pg_drop_replication_slot('s')", /replication/],
  ["SELECT pg_replication_origin_create('o')", /replication/],
  ["SELECT pg_logical_emit_message(false, 'p', 'm')", /pg_logical_emit_message/],
  ["SELECT query_to_xml('SELECT pg_terminate_backend(1)', true, true, '')", /query_to_xml runs SQL text/],
  // …in FROM, CTEs, subqueries, DEFAULT, ON CONFLICT, RETURNING, WHERE, ORDER BY, casts, VALUES
  ['SELECT * FROM pg_advisory_lock(1) AS x', /pg_advisory_lock/],
  ['SELECT * FROM ROWS FROM (generate_series(1, 2), pg_advisory_lock(1)) AS x', /pg_advisory_lock/],
  ['WITH x AS (SELECT pg_terminate_backend(1)) SELECT 1', /pg_terminate_backend/],
  ['WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT pg_cancel_backend(n) FROM x) SELECT 1', /pg_cancel_backend/],
  ['SELECT 1 WHERE EXISTS (SELECT 1 FROM (SELECT pg_advisory_lock(2)) s)', /pg_advisory_lock/],
  ["SELECT (SELECT (SELECT pg_notify('a', 'b')))", /pg_notify/],
  ['INSERT INTO t VALUES (DEFAULT), (pg_advisory_lock(1))', /pg_advisory_lock/],
  ["INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = set_config('search_path', 'x', false)", /set_config/],
  ['UPDATE t SET a = 1 RETURNING pg_terminate_backend(a)', /pg_terminate_backend/],
  ['DELETE FROM t WHERE pg_cancel_backend(a)', /pg_cancel_backend/],
  ['SELECT a FROM t ORDER BY pg_advisory_lock(a)', /pg_advisory_lock/],
  ['SELECT pg_advisory_lock(1)::text', /pg_advisory_lock/],
  ['SELECT coalesce(null, pg_advisory_lock(1))', /pg_advisory_lock/],
  ['SELECT count(*) FILTER (WHERE pg_advisory_lock(1) IS NULL) FROM t', /pg_advisory_lock/],
  ['MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = pg_advisory_lock(1)', /pg_advisory_lock/],
  ["WITH d AS (DELETE FROM t RETURNING dblink_exec('x', 'y')) SELECT 1", /dblink_exec/],
  ['SELECT 1 UNION SELECT pg_advisory_lock(1)', /pg_advisory_lock/],
];

// Allowed statements that can leave nothing on the session past their transaction: no reset after them.
const SESSION_NEUTRAL = [
  'UPDATE accounts SET balance = balance - $1 WHERE id = $2 AND balance >= $1',
  'INSERT INTO audit (src, dst, amount) VALUES ($1, $2, $3)',
  'SELECT count(*), sum(balance), max(id) FROM accounts WHERE id = ANY($1::int[])',
  'SELECT pg_catalog.now(), lower($1), coalesce($2, 0), greatest(1, 2), CURRENT_TIMESTAMP',
  "SELECT extract(epoch FROM now()), substring('abc' FROM 2)",
  'WITH moved AS (DELETE FROM t WHERE a = 1 RETURNING *) INSERT INTO archive SELECT * FROM moved',
  'MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a',
  'SELECT * FROM t FOR UPDATE SKIP LOCKED',
  'LOCK TABLE accounts IN SHARE ROW EXCLUSIVE MODE',
  'SET CONSTRAINTS ALL DEFERRED',
];

// Allowed, but a function's body (or nextval's currval, or a SET LOCAL's search_path) may leave state behind.
const SESSION_TOUCHING = [
  "SELECT nextval('s')",
  'SELECT public.my_function($1)',
  'SELECT my_function()',
  'UPDATE t SET a = my_function(a)',
  'SELECT 1 WHERE EXISTS (SELECT 1 FROM (SELECT helper()) s)',
  'INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = audit_write(excluded.a)',
  'SELECT myschema.lower($1)',
  'SELECT * FROM generate_rows(3)',
  "SELECT set_config('myapp.user', $1, true)",
  'SELECT pg_advisory_xact_lock(1)',
  'SET LOCAL search_path = decoy, public',
  'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE',
];

describe('the statement guard', () => {
  it.each(ALLOWED)('allows %j', (sql) => {
    expect(statementRefusal(sql)).toBeNull();
    expect(() => assertStatementAllowed(sql)).not.toThrow();
  });

  it.each(REFUSED)('refuses %j', (sql, why) => {
    expect(statementRefusal(sql)).toMatch(why);
    expect(() => assertStatementAllowed(sql)).toThrow(expect.objectContaining({ code: 'statement_not_allowed', retryable: false }));
  });

  it.each(SESSION_NEUTRAL)('lets %j go without a session reset', (sql) => {
    expect(assertStatementAllowed(sql)).toEqual({ touchesSession: false });
  });

  it.each(SESSION_TOUCHING)('has the session reset after %j', (sql) => {
    expect(assertStatementAllowed(sql)).toEqual({ touchesSession: true });
  });

  it('gives the same verdict from its cache, for any number of distinct texts', () => {
    for (let i = 0; i < 5000; i++) expect(statementRefusal(`SELECT ${i}`)).toBeNull();
    for (let i = 0; i < 3; i++) expect(statementRefusal('COMMIT')).toMatch(/transaction control/);
    const long = `SELECT pg_advisory_lock(1) /* ${'x'.repeat(10_000)} */`;
    expect(statementRefusal(long)).toMatch(/pg_advisory_lock/);
    expect(statementRefusal(long)).toMatch(/pg_advisory_lock/);
  });

  it('refuses what is too deep to parse, and keeps working afterwards', () => {
    const deep = `SELECT ${'('.repeat(100_000)}1${')'.repeat(100_000)}`;
    expect(statementRefusal(deep)).toMatch(/does not parse/);
    const calls = `SELECT ${'abs('.repeat(20_000)}1${')'.repeat(20_000)}`;
    expect(statementRefusal(calls)).toMatch(/does not parse/);
    // Deep but parseable: the tree walk does not recurse.
    const nested = `SELECT ${'abs('.repeat(500)}pg_advisory_lock(1)${')'.repeat(500)}`;
    expect(statementRefusal(nested)).toMatch(/pg_advisory_lock/);
    expect(statementRefusal('SELECT 2')).toBeNull();
  });
});
