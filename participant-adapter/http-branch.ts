import { setTimeout as sleep } from 'node:timers/promises';
import type { PrepareResult, StatementResult } from './branch.ts';
import { ParticipantError } from './errors.ts';
import type { PrepareBody, WirePrepareAnswer } from './http-wire.ts';
import type { BranchSession, BranchState } from './participant.ts';

interface Pending {
  sql: string;
  params: unknown[];
  resolve: (r: StatementResult) => void;
  reject: (err: unknown) => void;
}

export interface HttpBranchOptions {
  resource: string;
  statementTimeoutMs: number;
  send: (gid: string, body: PrepareBody, signal: AbortSignal) => Promise<WirePrepareAnswer>;
  onRelease: () => void;
}

const RETRY_FIRST_MS = 50;
const RETRY_MAX_MS = 1_000;

/**
 * A branch on a participant reached over HTTP. HTTP holds no session between calls, so the
 * statements are collected and sent with the PREPARE in one request; the participant runs them in
 * one transaction and answers for all of them. That request is keyed by the gid, so when its reply
 * is lost it is sent again and the participant answers the same (it does not run them twice).
 */
export class HttpBranch implements BranchSession {
  readonly resource: string;
  readonly #options: HttpBranchOptions;
  readonly #opened = Date.now();
  #state: BranchState = 'open';
  #pending: Pending[] = [];
  #sent = false;
  #inFlight: AbortController | null = null;
  #cancelled = false;

  constructor(options: HttpBranchOptions) {
    this.resource = options.resource;
    this.#options = options;
  }

  get state(): BranchState {
    return this.#state;
  }

  run(sql: string, params: readonly unknown[] = []): Promise<StatementResult> {
    if (this.#sent || this.#state !== 'open') {
      return Promise.reject(
        new ParticipantError('branch_closed', `the branch on ${this.resource} was already sent`, { retryable: false, resource: this.resource }),
      );
    }
    return new Promise((resolve, reject) => this.#pending.push({ sql, params: [...params], resolve, reject }));
  }

  xid(): Promise<string | null> {
    return Promise.reject(this.#unsupported('an open branch has no session to ask for its xid'));
  }

  commit(): Promise<boolean> {
    return Promise.reject(this.#unsupported('a branch is always prepared, never committed in one phase'));
  }

  async prepare(gid: string): Promise<PrepareResult> {
    if (this.#sent)
      throw new ParticipantError('branch_closed', `the branch on ${this.resource} was already sent`, { retryable: false, resource: this.resource });
    this.#sent = true;
    const statements = this.#pending;
    this.#pending = [];
    const body: PrepareBody = {
      statements: statements.map((s) => ({ sql: s.sql, params: s.params })),
      statementTimeoutMs: Math.max(1, Math.ceil(this.#options.statementTimeoutMs)),
    };
    let answer: WirePrepareAnswer;
    try {
      answer = await this.#sendWithRetries(gid, body);
    } catch (err) {
      this.#state = 'broken';
      for (const s of statements) s.reject(err);
      throw err;
    }
    this.#state = answer.prepared ? 'prepared' : 'finished';
    this.#settle(statements, answer);
    const f = answer.failure;
    if (f && f.statement === null && !answer.prepared) {
      // PREPARE itself (or the participant's connection) failed: the caller reports this error.
      throw new ParticipantError(f.code, f.message, { sqlState: f.sqlState ?? undefined, retryable: f.retryable, resource: this.resource });
    }
    return { prepared: answer.prepared, xid: answer.xid };
  }

  async rollback(): Promise<void> {
    if (this.#state !== 'open') return;
    // Nothing sent: the participant never opened anything. Sent and unanswered: the participant
    // cancels when the request goes away, and a branch that got prepared even so belongs to an
    // aborted transaction, which recovery rolls back (presumed abort).
    this.#inFlight?.abort();
    this.#state = 'finished';
    for (const s of this.#pending)
      s.reject(new ParticipantError('rolled_back', `the branch on ${this.resource} was rolled back`, { retryable: false, resource: this.resource }));
    this.#pending = [];
  }

  async cancel(): Promise<void> {
    this.#cancelled = true;
    this.#inFlight?.abort();
  }

  release(): void {
    this.#options.onRelease();
  }

  /** A lost reply is retried until the branch's time is up; the participant answers a gid once. */
  async #sendWithRetries(gid: string, body: PrepareBody): Promise<WirePrepareAnswer> {
    const giveUpAt = this.#opened + this.#options.statementTimeoutMs;
    for (let wait = RETRY_FIRST_MS; ; wait = Math.min(wait * 2, RETRY_MAX_MS)) {
      if (this.#cancelled)
        throw new ParticipantError('cancelled', `the branch on ${this.resource} was cancelled`, { retryable: false, resource: this.resource });
      const controller = new AbortController();
      this.#inFlight = controller;
      try {
        return await this.#options.send(gid, body, controller.signal);
      } catch (err) {
        const retry = err instanceof ParticipantError && err.code === 'connection_failure' && !this.#cancelled && Date.now() + wait < giveUpAt;
        if (!retry) throw err;
      } finally {
        this.#inFlight = null;
      }
      await sleep(wait);
    }
  }

  #settle(statements: Pending[], answer: WirePrepareAnswer): void {
    const failure = answer.failure;
    if (answer.results === null && !failure) {
      // Prepared before the participant restarted, answering a retry: the work is there but what
      // it returned is not. The caller fails the branch and the prepared gid is rolled back.
      const lost = new ParticipantError('results_lost', `the branch on ${this.resource} was prepared but the participant no longer has its results`, {
        retryable: false,
        resource: this.resource,
      });
      for (const s of statements) s.reject(lost);
      return;
    }
    const results = answer.results ?? [];
    const failedAt = failure?.statement ?? null;
    if (failure && failedAt !== null) {
      statements[failedAt]?.reject(
        new ParticipantError(failure.code, failure.message, { sqlState: failure.sqlState ?? undefined, retryable: failure.retryable, resource: this.resource }),
      );
    }
    statements.forEach((s, i) => {
      if (i === failedAt) return;
      const r = results[i];
      if (r) s.resolve(r);
      else
        s.reject(
          new ParticipantError(failure?.code ?? 'not_run', failure?.message ?? `statement ${i} on ${this.resource} did not run`, {
            sqlState: failure?.sqlState ?? undefined,
            retryable: failure?.retryable ?? false,
            resource: this.resource,
          }),
        );
    });
  }

  #unsupported(why: string): ParticipantError {
    return new ParticipantError('unsupported', `${this.resource} is reached over HTTP: ${why}`, { retryable: false, resource: this.resource });
  }
}
