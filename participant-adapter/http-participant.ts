import { ParticipantError } from './errors.ts';
import { assertValidGid } from './gid.ts';
import { HttpBranch } from './http-branch.ts';
import { WIRE_PATHS, type WireFinishAnswer, type WirePrepareAnswer, type WireProblem } from './http-wire.ts';
import type { OpenBranchOptions, Participant, ParticipantHealth, PreparedBranchInfo, PreparedBranchState, XactStatus } from './participant.ts';

export interface HttpParticipantOptions {
  /** The resource name clients use. */
  name: string;
  /** Where the database's service mounts its participant router, e.g. http://inventory:3001/2pc. */
  url: string;
  /** The bearer token that router expects from this coordinator. */
  token: string;
  /** Bound on each call that is not a branch's work (phase 2, listings, health), like a direct connection's. */
  operationTimeoutMs?: number;
  /** The coordinator's namespace: health reports the resource unusable if the router answers another. */
  namespace?: string;
}

interface CallOptions {
  body?: unknown;
  signal?: AbortSignal;
  timeoutMs?: number;
  /** Statuses answered as data rather than thrown (404 for a gid that is not prepared). */
  accept?: number[];
}

/**
 * A participant whose database stays with its own service: the coordinator holds a URL and a
 * token, never the database's credentials. Phase 2 and recovery go through the service's
 * participant router; so do statements, if that service allows them.
 */
export class HttpParticipant implements Participant {
  readonly name: string;
  readonly kind = 'http';
  readonly onePhase = false;
  readonly #base: string;
  readonly #authorization: string;
  readonly #timeoutMs: number;
  readonly #namespace: string | undefined;
  #open = 0;

  constructor(options: HttpParticipantOptions) {
    this.name = options.name;
    this.#base = options.url.replace(/\/+$/, '');
    this.#authorization = `Bearer ${options.token}`;
    this.#timeoutMs = options.operationTimeoutMs ?? 5_000;
    this.#namespace = options.namespace;
  }

  get connectionsInUse(): number {
    return this.#open;
  }

  async openBranch(options: OpenBranchOptions): Promise<HttpBranch> {
    options.signal?.throwIfAborted();
    this.#open++;
    let released = false;
    return new HttpBranch({
      resource: this.name,
      statementTimeoutMs: options.statementTimeoutMs,
      send: (gid, body, signal) =>
        this.#call<WirePrepareAnswer>('POST', `${WIRE_PATHS.branches}/${encodeURIComponent(gid)}`, {
          body,
          signal,
          timeoutMs: body.statementTimeoutMs + this.#timeoutMs,
        }),
      onRelease: () => {
        if (!released) {
          released = true;
          this.#open--;
        }
      },
    });
  }

  async commitPrepared(gid: string): Promise<'committed' | 'not-found'> {
    const r = await this.#call<WireFinishAnswer<'committed' | 'not-found'>>('POST', `${this.#gidPath(gid)}/commit`, {});
    return r.outcome;
  }

  async rollbackPrepared(gid: string): Promise<'rolled-back' | 'not-found'> {
    const r = await this.#call<WireFinishAnswer<'rolled-back' | 'not-found'>>('POST', `${this.#gidPath(gid)}/rollback`, {});
    return r.outcome;
  }

  async listPrepared(prefix: string): Promise<PreparedBranchInfo[]> {
    const r = await this.#call<{ branches: (Omit<PreparedBranchInfo, 'preparedAt'> & { preparedAt: string })[] }>(
      'GET',
      `${WIRE_PATHS.prepared}?prefix=${encodeURIComponent(prefix)}`,
      {},
    );
    return r.branches.map((b) => ({ ...b, preparedAt: new Date(b.preparedAt) }));
  }

  /** The router answers the full state (with locks) whatever is asked: one call either way. */
  async inspectPrepared(gid: string): Promise<PreparedBranchState | null> {
    const r = await this.#call<(Omit<PreparedBranchState, 'preparedAt'> & { preparedAt: string }) | null>('GET', this.#gidPath(gid), { accept: [404] });
    return r ? { preparedAt: new Date(r.preparedAt), locks: r.locks, xid: r.xid } : null;
  }

  async xactStatus(xid: string): Promise<XactStatus> {
    if (!/^\d{1,20}$/.test(xid)) throw new ParticipantError('invalid_xid', `bad xid ${xid}`, { retryable: false, resource: this.name });
    const r = await this.#call<{ xid: string; status: XactStatus }>('GET', `${WIRE_PATHS.xacts}/${xid}`, {});
    return r.status;
  }

  async health(): Promise<ParticipantHealth> {
    try {
      const { namespace, ...h } = await this.#call<Omit<ParticipantHealth, 'resource'> & { namespace?: string }>('GET', WIRE_PATHS.health, {});
      if (this.#namespace !== undefined && namespace !== this.#namespace) {
        // Every gid would be refused as outside its namespace: say so now, not at the first commit.
        return {
          ...h,
          resource: this.name,
          usable: false,
          message: `the participant router for "${this.name}" serves namespace "${namespace}", not "${this.#namespace}": start it with --namespace ${this.#namespace} (or namespace: '${this.#namespace}')`,
        };
      }
      return { ...h, resource: this.name };
    } catch (err) {
      const unauthorized = err instanceof ParticipantError && err.code === 'unauthorized';
      return {
        resource: this.name,
        reachable: unauthorized,
        usable: false,
        serverVersion: null,
        maxPreparedTransactions: null,
        message: unauthorized
          ? `the participant router at ${this.#base} refused the coordinator's token for resource "${this.name}": check its token in TPC_RESOURCES`
          : err instanceof Error
            ? err.message
            : String(err),
      };
    }
  }

  /**
   * Not visible over HTTP: the router's service holds its database's credentials and slots. Its
   * own concurrency bounds it; the coordinator bounds its branches there by TPC_RESOURCE_POOL_SIZE
   * like a direct pool, and a PREPARE the router refuses with 53200 is answered 503 all the same.
   */
  async preparedSlots(): Promise<null> {
    return null;
  }

  async close(): Promise<void> {}

  #gidPath(gid: string): string {
    return `${WIRE_PATHS.prepared}/${encodeURIComponent(assertValidGid(gid))}`;
  }

  async #call<T>(method: string, path: string, options: CallOptions): Promise<T> {
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    const what = `${method} ${path.split('?')[0]}`;
    let res: Response;
    try {
      res = await fetch(`${this.#base}${path}`, {
        method,
        headers: {
          authorization: this.#authorization,
          accept: 'application/json',
          ...(options.body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        signal,
      });
    } catch (err) {
      if (options.signal?.aborted) {
        throw new ParticipantError('cancelled', `${what} on ${this.name} was cancelled`, { retryable: false, resource: this.name, cause: err });
      }
      // No answer: the call may or may not have taken effect, which is why every call is idempotent.
      const reason = timeout.aborted
        ? `no answer within ${timeoutMs} ms`
        : err instanceof Error
          ? ((err.cause as Error | undefined)?.message ?? err.message)
          : String(err);
      throw new ParticipantError('connection_failure', `${what} on ${this.name}: ${reason}`, { retryable: true, resource: this.name, cause: err });
    }
    const text = await res.text().catch(() => '');
    let body: unknown = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      /* a proxy's HTML error page: reported below by status */
    }
    if (res.ok) return body as T;
    if (options.accept?.includes(res.status)) return null as T;
    const problem = (body ?? {}) as Partial<WireProblem>;
    if (res.status === 401) {
      throw new ParticipantError('unauthorized', `${what} on ${this.name}: the participant router refused the coordinator's token`, {
        retryable: false,
        resource: this.name,
      });
    }
    throw new ParticipantError(problem.code ?? `http_${res.status}`, `${what} on ${this.name}: ${problem.detail ?? `HTTP ${res.status}`}`, {
      sqlState: problem.sqlState,
      retryable: problem.retryable ?? res.status >= 500,
      resource: this.name,
    });
  }
}
