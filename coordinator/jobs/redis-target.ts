import { Redis, type RedisOptions } from 'ioredis';

/**
 * Where the coordinator's Redis is. `REDIS_URL` is either one server (`redis://` or `rediss://`,
 * handed to ioredis as it is) or a Sentinel group, which ioredis does not read from a URL:
 *
 *   redis+sentinel://[[user]:password@]h1[:26379][,h2[:26379]…]/master-name[/db][?sentinelPassword=…&sentinelUsername=…]
 *
 * The user and password are the Redis servers' (ACL or requirepass); the Sentinels' own, when
 * they have one, go in the query. ioredis asks the Sentinels for the current primary at every
 * connect, so after a failover each connection (the producer and every BullMQ worker) reconnects
 * to the promoted replica without a restart.
 */
export interface RedisTarget {
  readonly kind: 'server' | 'sentinel';
  /** What ioredis is given: a server's URL, or Sentinel options. */
  readonly connectWith: string | RedisOptions;
  /** The URL without its passwords, for logs and error messages. */
  readonly redacted: string;
}

/** What is wrong with a REDIS_URL; the config loader names the variable. */
export class RedisUrlError extends Error {
  override readonly name = 'RedisUrlError';
}

const SENTINEL_PORT = 26379;
const MAX_SENTINELS = 16;
const SENTINEL_URL = /^redis\+sentinel:\/\/(?:([^@/?#]*)@)?([^/?#]*)(\/[^?#]*)?(\?[^#]*)?$/s;
const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/;
const MASTER_NAME = /^[A-Za-z0-9_.-]{1,100}$/;
const QUERY_KEYS = new Set(['sentinelPassword', 'sentinelUsername']);

export function parseRedisUrl(url: string): RedisTarget {
  if (/^rediss?:\/\//.test(url)) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new RedisUrlError('is not a URL that can be read (redis://[user:password@]host:port[/db])');
    }
    if (parsed.password) parsed.password = '***';
    return { kind: 'server', connectWith: url, redacted: parsed.toString() };
  }
  const m = SENTINEL_URL.exec(url);
  if (!m) {
    throw new RedisUrlError('must be a redis:// or rediss:// URL, or redis+sentinel://host:26379[,host:26379…]/master-name for a Sentinel group');
  }
  const [, userinfo, authority = '', path = '', query = ''] = m;
  const sentinels = authority.split(',').map((name) => {
    const hp = HOST_PORT.exec(name);
    if (!hp) throw new RedisUrlError(`"${name}" is not a Sentinel host or host:port (hosts are separated by commas)`);
    const port = hp[2] === undefined ? SENTINEL_PORT : Number(hp[2]);
    if (port < 1 || port > 65535) throw new RedisUrlError(`port ${port} of "${name}" is not between 1 and 65535`);
    return { host: hp[1]!.replace(/^\[|\]$/g, ''), port };
  });
  if (sentinels.length > MAX_SENTINELS) throw new RedisUrlError(`at most ${MAX_SENTINELS} Sentinels, not ${sentinels.length}`);
  const segments = path.split('/').slice(1);
  const name = decodeURIComponent(segments[0] ?? '');
  if (!MASTER_NAME.test(name)) {
    throw new RedisUrlError('the path names the Sentinel master group: redis+sentinel://h1:26379,h2:26379/mymaster');
  }
  if (segments.length > 2 || (segments.length === 2 && !/^\d{1,2}$/.test(segments[1]!))) {
    throw new RedisUrlError(`after the master group's name the path may hold only a database number, not "${segments.slice(1).join('/')}"`);
  }
  const options: RedisOptions = { sentinels, name };
  if (segments[1] !== undefined) options.db = Number(segments[1]);
  if (userinfo !== undefined) {
    const colon = userinfo.indexOf(':');
    const user = decodeURIComponent(colon < 0 ? userinfo : userinfo.slice(0, colon));
    if (colon < 0) throw new RedisUrlError('a user without a password: write redis+sentinel://user:password@… or :password@…');
    if (user) options.username = user;
    options.password = decodeURIComponent(userinfo.slice(colon + 1));
  }
  const params = new URLSearchParams(query.slice(1));
  for (const key of params.keys()) {
    if (!QUERY_KEYS.has(key)) throw new RedisUrlError(`unknown parameter "${key}" (only sentinelPassword and sentinelUsername)`);
  }
  const sentinelPassword = params.get('sentinelPassword');
  const sentinelUsername = params.get('sentinelUsername');
  if (sentinelPassword !== null) options.sentinelPassword = sentinelPassword;
  if (sentinelUsername !== null) options.sentinelUsername = sentinelUsername;
  return { kind: 'sentinel', connectWith: options, redacted: redactSentinelUrl(url, userinfo, params) };
}

function redactSentinelUrl(url: string, userinfo: string | undefined, params: URLSearchParams): string {
  let out = url;
  if (userinfo?.includes(':')) {
    out = out.replace(`${userinfo}@`, `${userinfo.slice(0, userinfo.indexOf(':'))}:***@`);
  }
  if (params.has('sentinelPassword')) out = out.replace(/([?&]sentinelPassword=)[^&#]*/, '$1***');
  return out;
}

/**
 * A connection to the target with `extra` options. A primary that comes back after a failover is
 * made a replica by the Sentinels; a connection still on it (or on any server turned replica under
 * it) would fail every write with READONLY until it happened to reconnect: it reconnects at once,
 * asking the Sentinels again, and the command is sent anew.
 */
export function connectRedis(target: RedisTarget, extra: RedisOptions): Redis {
  const reconnectOnError = (err: Error) => (err.message.startsWith('READONLY') ? 2 : false);
  if (typeof target.connectWith === 'string') return new Redis(target.connectWith, { reconnectOnError, ...extra });
  // Not ioredis' failoverDetector: its +switch-master disconnects the connector, and when that lands
  // while a connection is being made (resolving the primary, or its TCP connect), the connect fails
  // with "Connection is closed." and ioredis ends the connection for good, never to reconnect (seen
  // in a CI run: /readyz named Redis as "end" for the rest of the test, and a worker's would starve
  // its queue). A killed primary drops its connections, which then reconnect through the Sentinels;
  // a demoted one answers READONLY, which reconnects at once (above).
  return new Redis({ ...target.connectWith, reconnectOnError, ...extra });
}
