/**
 * The session settings the coordinator's own SQL relies on, sent in every connection's startup
 * packet (`options: -c name=value …`). Any role may change its own defaults
 * (`ALTER ROLE CURRENT_USER SET search_path = pwned`, `… SET default_transaction_read_only = on`),
 * and a token whose resource shares a role with the log, or with another resource, could do so to
 * break every later connection of that role. Settings given at startup take precedence over role
 * and database defaults, cost no round trip, and are what the session reset between transactions
 * (`RESET ALL`, session-reset.ts) returns a session to.
 *
 * Only settings that exist on every server the coordinator supports (PostgreSQL 13+:
 * pg_current_xact_id) are listed: an unknown name in the startup packet refuses the connection.
 */
export const SESSION_SETTINGS: Readonly<Record<string, string>> = Object.freeze({
  // Postgres' own default. pg_catalog is not listed, so it is searched first: nothing in a schema a
  // role can create shadows a built-in function or operator in the coordinator's SQL.
  search_path: '"$user", public',
  // Bounds are set per statement where they matter (SET LOCAL statement_timeout in a branch, the
  // client-side query_timeout of every administrative call); a role default of 1 ms would fail
  // every statement, and a lock or idle timeout would abort a branch between its work and PREPARE.
  statement_timeout: '0',
  lock_timeout: '0',
  idle_in_transaction_session_timeout: '0',
  // A read-only default makes every branch fail at its first write, and the log's every write.
  default_transaction_read_only: 'off',
  // Serializable by default would turn concurrent transfers into serialization failures the
  // engine does not retry; the protocol's compare-and-set statements are written for read committed.
  default_transaction_isolation: 'read committed',
  default_transaction_deferrable: 'off',
  // node-postgres parses dates and intervals as ISO / postgres style; another style makes it
  // misread the log's timestamps (deadlines) and pg_prepared_xacts.prepared.
  DateStyle: 'ISO, MDY',
  IntervalStyle: 'postgres',
  extra_float_digits: '1',
  // Literals the coordinator builds (gids) assume standard strings.
  standard_conforming_strings: 'on',
});

/** One `-c name=value`; a backslash escapes spaces and backslashes in the startup packet's options. */
function option(name: string, value: string): string {
  return `-c ${name}=${value.replace(/\\/g, '\\\\').replace(/ /g, '\\ ')}`;
}

/** The startup `options` string for `settings`. */
export function startupOptions(settings: Readonly<Record<string, string>>): string {
  return Object.entries(settings)
    .map(([name, value]) => option(name, value))
    .join(' ');
}

/**
 * The pool fields that connect to `url` with SESSION_SETTINGS fixed at startup. An `options`
 * parameter in the URL itself is the operator's own choice (a search_path for the user's
 * statements, say): it is sent after ours, so it wins. `required` is what the caller's correctness
 * rests on (the log's synchronous_commit at its commit point): sent last, nothing overrides it.
 * node-postgres lets an `options` in the connection string replace the pool's whole `options`
 * field, so it is taken out of the URL and merged here instead.
 */
export function sessionConnection(url: string, required: Readonly<Record<string, string>> = {}): { connectionString: string; options: string } {
  const compose = (given: string) => [startupOptions(SESSION_SETTINGS), given.trim(), startupOptions(required)].filter(Boolean).join(' ');
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { connectionString: url, options: compose('') };
  }
  const given = parsed.searchParams.get('options');
  if (given === null) return { connectionString: url, options: compose('') };
  parsed.searchParams.delete('options');
  return { connectionString: parsed.href, options: compose(given) };
}
