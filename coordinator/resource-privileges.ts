import type { Logger } from 'pino';
import { DirectParticipant } from '../participant-adapter/direct-participant.ts';
import type { Participant } from '../participant-adapter/participant.ts';
import type { RolePowers } from '../participant-adapter/role-powers.ts';
import type { Config } from './config/load-config.ts';
import { parseLogUrl } from './log/log-hosts.ts';

export interface ResourcePrivilegesOptions {
  /** The participants as created (not wrapped): only a DirectParticipant can report its role. */
  participants: ReadonlyMap<string, Participant>;
  config: Pick<Config, 'privilegedResources' | 'databaseUrl' | 'resources'>;
  logger: Logger;
  logRole: () => Promise<RolePowers>;
}

/** A resource refused at start because its role holds powers the operator did not allow. */
export class PrivilegedResourceError extends Error {
  override readonly name = 'PrivilegedResourceError';
  readonly code = 'privileged_resource';
}

/**
 * Least privilege, checked rather than hoped for. A `submit` token can do anything the resource's
 * role can do inside one transaction, and a statement guard can miss something; a superuser role
 * (or CREATEROLE, or membership of pg_execute_server_program / pg_read_server_files /
 * pg_write_server_files) turns such a miss into a shell on the database host or a read of every
 * database on it. Such a resource is refused unless named in TPC_PRIVILEGED_RESOURCES.
 *
 * HTTP resources are out of reach: their database connection belongs to the participant router,
 * which runs in another service; that service's operator owns its role.
 */
export class ResourcePrivileges {
  readonly #o: ResourcePrivilegesOptions;
  #logRole: string | undefined;
  /** Warnings already given, so that the periodic check does not repeat them every pass. */
  readonly #warned = new Set<string>();

  constructor(options: ResourcePrivilegesOptions) {
    this.#o = options;
  }

  /**
   * At start: warns about a privileged log role and about resources that share the log's role on
   * its cluster, and throws for every reachable resource whose role is privileged without the
   * opt-in. Only `reachable` resources are asked (an unreachable one would cost a connect timeout
   * for nothing): one that does not answer yet does not block the start, and refusal() checks it,
   * from the periodic health check, once it answers.
   */
  async checkAtStart(reachable: Iterable<string>): Promise<void> {
    const log = await this.#o.logRole();
    this.#logRole = log.role;
    if (log.powers.length) {
      this.#o.logger.warn(
        { role: log.role, powers: log.powers },
        `the log database (DATABASE_URL) connects as role "${log.role}", which has ${log.powers.join(', ')}: ` +
          'give the log a role that owns only the log database',
      );
    }
    const refused: string[] = [];
    await Promise.all(
      [...reachable].map(async (name) => {
        const reason = await this.refusal(name);
        if (reason) refused.push(reason);
      }),
    );
    if (refused.length) throw new PrivilegedResourceError(refused.sort().join('\n'));
  }

  /**
   * Why `name` must not be used (its role is privileged and not allowed), or null. Null too when
   * the resource cannot be reached now (the health check reports that) or is not a direct one.
   */
  async refusal(name: string): Promise<string | null> {
    const participant = this.#o.participants.get(name);
    if (!(participant instanceof DirectParticipant)) return null;
    let report: RolePowers;
    try {
      report = await participant.roleReport();
    } catch {
      return null;
    }
    this.#warnIfSharesLogRole(name, report.role);
    if (!report.powers.length) return null;
    const allowed = this.#o.config.privilegedResources === '*' || this.#o.config.privilegedResources.includes(name);
    const what = `resource "${name}" connects as role "${report.role}", which has ${report.powers.join(', ')}`;
    if (allowed) {
      this.#warnOnce(
        `privileged:${name}:${report.role}`,
        { resource: name, role: report.role, powers: report.powers },
        `${what}: allowed by TPC_PRIVILEGED_RESOURCES, so a submit token on it can act beyond its transaction (run programs or read files on the database host, reach other databases)`,
      );
      return null;
    }
    return (
      `${what}, so a submit token on it could act beyond its transaction (run programs or read files on the database host, reach other databases). ` +
      `Connect it as a role without these powers, one that owns only this database's tables (${howToDrop(report)}), ` +
      `or allow it by name with TPC_PRIVILEGED_RESOURCES=${name}`
    );
  }

  /*
   * Any role may set its own defaults and terminate its own backends: a token on a resource that
   * runs as the log's role, on the log's server, can break or kill the log's connections.
   */
  #warnIfSharesLogRole(name: string, role: string): void {
    const resource = this.#o.config.resources[name];
    if (role !== this.#logRole || resource?.kind !== 'postgres' || !logServers(this.#o.config.databaseUrl).has(serverOf(resource.url))) return;
    this.#warnOnce(
      `shares-log:${name}:${role}`,
      { resource: name, role },
      `resource "${name}" connects as role "${role}" on the log's server, the log's own role: a token on it can change that role's ` +
        "settings or end its sessions, the log's among them; give the resource a role of its own",
    );
  }

  #warnOnce(key: string, fields: Record<string, unknown>, message: string): void {
    if (this.#warned.has(key)) return;
    this.#warned.add(key);
    this.#o.logger.warn(fields, message);
  }
}

/**
 * How to take each power away. A superuser is best replaced, not demoted (the cluster's first
 * superuser cannot be); a membership through another role is revoked from that role.
 */
function howToDrop({ role, powers }: RolePowers): string {
  if (powers.includes('SUPERUSER')) {
    return `e.g. CREATE ROLE app LOGIN PASSWORD '…', then ALTER DATABASE … OWNER TO app and ALTER TABLE … OWNER TO app, and connect as app`;
  }
  const quoted = `"${role.replace(/"/g, '""')}"`;
  return powers.map((p) => (p === 'CREATEROLE' ? `ALTER ROLE ${quoted} NOCREATEROLE` : `REVOKE ${p} FROM ${quoted}`)).join('; ');
}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

/** Every server a log URL names: one, or each host of a multi-host URL (a standby may be promoted). */
function logServers(url: string): Set<string | null> {
  const hosts = parseLogUrl(url);
  const servers = new Set(hosts ? hosts.urls.map(serverOf) : [serverOf(url)]);
  servers.delete(null);
  return servers;
}

/** host:port of a connection string, loopback names made one; null when it cannot be read. */
function serverOf(url: string): string | null {
  try {
    const u = new URL(url);
    const host = u.searchParams.get('host') ?? decodeURIComponent(u.hostname);
    return `${LOOPBACK.has(host) ? 'loopback' : host.toLowerCase()}:${u.port || '5432'}`;
  } catch {
    return null;
  }
}
