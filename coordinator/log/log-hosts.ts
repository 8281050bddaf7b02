import pg from 'pg';
import { sessionConnection } from '../../participant-adapter/session-settings.ts';

/**
 * A log DATABASE_URL may list several hosts, libpq style
 * (`postgres://user:pw@h1:5432,h2:5432/tpc_log?target_session_attrs=read-write`): the coordinator
 * connects to the one that takes writes, and after a failover finds the new primary without a
 * restart. node-postgres knows neither several hosts nor target_session_attrs, so every log
 * connection (both pools, the readiness probe, the migration) is made through `logConnection`.
 * A single-host URL without target_session_attrs is handed to node-postgres unchanged.
 */
export type TargetSessionAttrs = 'any' | 'read-write' | 'primary';

export interface LogHost {
  host: string;
  port: number;
}

export interface LogHosts {
  hosts: LogHost[];
  targetSessionAttrs: TargetSessionAttrs;
  /** The URL with only hosts[i] and without target_session_attrs, which node-postgres can read. */
  urls: string[];
}

/** What is wrong with a DATABASE_URL; the config loader names the variable. */
export class LogUrlError extends Error {
  override readonly name = 'LogUrlError';
}

const MAX_HOSTS = 16;
const URL_PARTS = /^(postgres(?:ql)?:\/\/)(?:([^@/?#]*)@)?([^/?#]*)([^?#]*)(\?[^#]*)?(#.*)?$/s;
const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/;

/** Parses a log URL; null for a plain single-host URL, which keeps node-postgres' own handling. */
export function parseLogUrl(url: string): LogHosts | null {
  const m = URL_PARTS.exec(url);
  if (!m) return null;
  const [, scheme, userinfo, authority = '', path = '', query = '', fragment = ''] = m;
  const params = query ? query.slice(1).split('&') : [];
  const attrParams = params.filter((p) => p.split('=')[0] === 'target_session_attrs');
  const rest = params.filter((p) => p.split('=')[0] !== 'target_session_attrs');
  const hostParam = rest.find((p) => p.split('=')[0] === 'host');
  if (hostParam && decodeURIComponent(hostParam.slice(5)).includes(',')) {
    throw new LogUrlError("several hosts go in the URL's authority (postgres://user@h1:5432,h2:5432/db), not in a host= parameter");
  }
  const names = authority.split(',');
  if (names.length === 1 && attrParams.length === 0) return null;
  if (attrParams.length > 1) throw new LogUrlError('target_session_attrs is given more than once');
  const attrs = attrParams.length ? decodeURIComponent(attrParams[0]!.slice('target_session_attrs='.length)) : 'any';
  if (attrs === 'standby' || attrs === 'prefer-standby' || attrs === 'read-only') {
    throw new LogUrlError(`target_session_attrs=${attrs} would put the log on a server that cannot take its writes: use read-write (or primary)`);
  }
  if (attrs !== 'any' && attrs !== 'read-write' && attrs !== 'primary') {
    throw new LogUrlError(`target_session_attrs must be read-write, primary or any, not "${attrs}"`);
  }
  if (names.length > MAX_HOSTS) throw new LogUrlError(`at most ${MAX_HOSTS} hosts, not ${names.length}`);
  const hosts = names.map((name): LogHost => {
    const hp = HOST_PORT.exec(name);
    if (!hp) throw new LogUrlError(`"${name}" is not a host or host:port (hosts are separated by commas)`);
    const port = hp[2] === undefined ? 5432 : Number(hp[2]);
    if (port < 1 || port > 65535) throw new LogUrlError(`port ${hp[2]} of "${name}" is not between 1 and 65535`);
    return { host: hp[1]!.replace(/^\[(.*)\]$/, '$1'), port };
  });
  const q = rest.length ? `?${rest.join('&')}` : '';
  const urls = names.map((name) => `${scheme}${userinfo === undefined ? '' : `${userinfo}@`}${name}${path}${q}${fragment}`);
  return { hosts, targetSessionAttrs: attrs, urls };
}

// A session on a standby, or on a server left read-only, fails every write of the log with it.
const READ_ONLY = '25006';

/**
 * No host takes the log's writes now (mid-failover: the primary dead, the standby not yet
 * promoted). SQLSTATE 08001, as a connection that could not be made, so that a caller handling
 * the log's outages by code (the API's 503) treats it as one: without a code it was answered 500.
 */
function unreachable(message: string): Error {
  return Object.assign(new Error(message), { code: '08001' });
}

/**
 * Which host takes the log now. Shared by every connection of one pool, so that one failover is
 * searched for once, not by each of the pool's connections at the same time.
 */
class PrimaryFinder {
  #known: number | null = null;
  #search: Promise<number> | null = null;

  constructor(
    readonly spec: LogHosts,
    readonly connectionStrings: string[],
  ) {}

  /** The host to connect to: the last one found good, or the first good one in the URL's order. */
  async pick(config: pg.ClientConfig): Promise<number> {
    if (this.#known !== null) return this.#known;
    this.#search ??= this.#find(config).finally(() => {
      this.#search = null;
    });
    return this.#search;
  }

  forget(index: number): void {
    if (this.#known === index) this.#known = null;
  }

  /** Whether a connected session is on a server that fits target_session_attrs. */
  async fits(client: pg.ClientBase): Promise<string | null> {
    if (this.spec.targetSessionAttrs === 'any') return null;
    const r = await client.query<{ standby: boolean; read_only: string }>(
      "SELECT pg_is_in_recovery() AS standby, current_setting('transaction_read_only') AS read_only",
    );
    const row = r.rows[0]!;
    if (row.standby) return 'is a standby in recovery';
    // libpq's read-write also refuses a primary whose sessions are read-only (default_transaction_read_only).
    if (this.spec.targetSessionAttrs === 'read-write' && row.read_only === 'on') return 'takes no writes (transaction_read_only is on)';
    return null;
  }

  // Tries each host in the URL's order with a connection of its own, as libpq does, all within one
  // connect timeout: a host that hangs must not hold the search past what a single connect may take.
  async #find(config: pg.ClientConfig): Promise<number> {
    const deadline = Date.now() + (config.connectionTimeoutMillis || 5_000);
    const refusals: string[] = [];
    for (const [i, { host, port }] of this.spec.hosts.entries()) {
      const left = deadline - Date.now();
      if (left <= 0) {
        refusals.push(`${host}:${port}: not tried (connect timeout spent)`);
        continue;
      }
      const probe = new pg.Client({ ...config, connectionString: this.connectionStrings[i], connectionTimeoutMillis: left, query_timeout: left });
      probe.on('error', () => {});
      try {
        await probe.connect();
        const unfit = await this.fits(probe);
        if (!unfit) {
          this.#known = i;
          return i;
        }
        refusals.push(`${host}:${port}: ${unfit}`);
      } catch (err) {
        refusals.push(`${host}:${port}: ${err instanceof Error ? err.message : String(err)}`);
      } finally {
        await probe.end().catch(() => {});
      }
    }
    throw unreachable(`no log host fits target_session_attrs=${this.spec.targetSessionAttrs} (${refusals.join('; ')})`);
  }
}

/** A pg.Client that connects to the host the finder picks, and leaves the pool once it meets a read-only server. */
function hostAwareClient(finder: PrimaryFinder): typeof pg.Client {
  return class LogHostClient extends pg.Client {
    #index = 0;
    #stale = false;
    #release: ((err?: Error | boolean) => void) | undefined;
    readonly #config: pg.ClientConfig;

    constructor(config: pg.ClientConfig) {
      super(config);
      this.#config = config;
      // A connection dropped by its server (a primary stopped or crashed for a failover) tells the
      // finder, so the next connect searches at once instead of first failing on the old address.
      this.on('error', () => finder.forget(this.#index));
      // After a failover a kept connection may sit on a server that now refuses writes (a demoted
      // primary back as a standby, a read-only switch): every statement on it would fail. The
      // error still goes to the caller (a rollback after it must not hide it); the connection is
      // dropped when released, and the next connect searches for the primary again.
      const query = this.query.bind(this) as (...args: unknown[]) => unknown;
      const notice = (err: unknown) => {
        if ((err as { code?: string } | null)?.code === READ_ONLY) {
          this.#stale = true;
          finder.forget(this.#index);
        }
      };
      this.query = ((...args: unknown[]) => {
        const last = args.length - 1;
        const callback = args[last];
        if (typeof callback === 'function') {
          args[last] = (err: unknown, res: unknown) => {
            notice(err);
            (callback as (e: unknown, r: unknown) => void)(err, res);
          };
          return query(...args);
        }
        const result = query(...args);
        if (result instanceof Promise)
          return result.catch((err: unknown) => {
            notice(err);
            throw err;
          });
        return result;
      }) as typeof this.query;
    }

    // The pool sets `release` on each checkout; a stale connection is released with an error,
    // which is how pg-pool is told to destroy it instead of keeping it idle.
    get release(): (err?: Error | boolean) => void {
      return (err) => this.#release?.(err ?? (this.#stale ? new Error('log connection on a read-only server') : undefined));
    }

    set release(fn: (err?: Error | boolean) => void) {
      this.#release = fn;
    }

    override connect(): Promise<pg.Client>;
    override connect(callback: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): void;
    // biome-ignore lint/suspicious/noConfusingVoidType: the implementation of pg.Client#connect's two overloads above
    override connect(callback?: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): Promise<pg.Client> | void {
      const done = this.#connect().then(() => this);
      if (!callback) return done;
      const cb = callback as (err: Error | null, c?: pg.Client) => void;
      done.then(
        (c) => cb(null, c),
        (err: Error) => cb(err),
      );
    }

    async #connect(): Promise<void> {
      this.#index = await finder.pick(this.#config);
      const { host, port } = finder.spec.hosts[this.#index]!;
      // The client was built from the first host's URL; only the address differs between hosts.
      this.host = host;
      this.port = port;
      const params = (this as unknown as { connectionParameters: { host: string; port: number } }).connectionParameters;
      params.host = host;
      params.port = port;
      try {
        await super.connect();
      } catch (err) {
        finder.forget(this.#index);
        throw err;
      }
      const unfit = await finder.fits(this).catch((err: Error) => err.message);
      if (unfit) {
        // The server changed role since it was found (a failover in between): search again next time.
        finder.forget(this.#index);
        await this.end().catch(() => {});
        throw unreachable(`log host ${host}:${port} ${unfit} (target_session_attrs=${finder.spec.targetSessionAttrs})`);
      }
    }
  } as unknown as typeof pg.Client;
}

/**
 * The pg.Pool fields for a log connection: the session settings of `sessionConnection` and, for a
 * multi-host URL or one with target_session_attrs, a Client that finds the host to use.
 */
export function logConnection(
  url: string,
  required: Readonly<Record<string, string>> = {},
): { connectionString: string; options: string; Client?: typeof pg.Client } {
  const spec = parseLogUrl(url);
  if (!spec) return sessionConnection(url, required);
  const configs = spec.urls.map((u) => sessionConnection(u, required));
  return {
    ...configs[0]!,
    Client: hostAwareClient(
      new PrimaryFinder(
        spec,
        configs.map((c) => c.connectionString),
      ),
    ),
  };
}
