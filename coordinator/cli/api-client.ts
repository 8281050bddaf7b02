import type { CliConfig } from './config.ts';
import { ApiError, ConnectionError } from './errors.ts';

type Query = Record<string, string | number | boolean | undefined>;

/** A small client of the coordinator's REST API: JSON in, JSON out, problem+json → ApiError. */
export class ApiClient {
  constructor(private readonly config: Pick<CliConfig, 'url' | 'token' | 'timeoutMs' | 'devTokenFile'>) {}

  get<T>(path: string, query: Query = {}): Promise<T> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, String(v));
    const qs = params.toString();
    return this.#call<T>('GET', qs ? `${path}?${qs}` : path);
  }

  post<T>(path: string, body: unknown): Promise<T> {
    return this.#call<T>('POST', path, body);
  }

  /** A 401 says where the token comes from and where `npm start` keeps the dev token. */
  #tokenHint(): string {
    const given = this.config.token ? 'the token given (--token or TPC_TOKEN) was refused' : 'no token was given: set TPC_TOKEN (or pass --token)';
    return (
      `${given}. A service started with \`npm start\` and no TPC_API_TOKENS keeps its dev token in ${this.config.devTokenFile} ` +
      `(under TPC_DATA_DIR, default .tpc in the directory it was started from; the banner prints it): ` +
      `export TPC_TOKEN=$(cat ${this.config.devTokenFile})`
    );
  }

  async #call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const url = this.config.url + path;
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: {
          accept: 'application/json, application/problem+json',
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...(this.config.token ? { authorization: `Bearer ${this.config.token}` } : {}),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.config.timeoutMs),
      });
    } catch (err) {
      const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
      if (e.name === 'TimeoutError') throw new ConnectionError(`${method} ${url}: no answer within ${this.config.timeoutMs} ms`);
      throw new ConnectionError(`cannot reach ${this.config.url}: ${e.cause?.code ?? e.cause?.message ?? e.message ?? String(err)}`);
    }
    const text = await res.text();
    let parsed: unknown = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = null;
    }
    if (!res.ok) {
      const p = (parsed && typeof parsed === 'object' ? parsed : {}) as { type?: unknown; title?: unknown; detail?: unknown };
      throw new ApiError(
        res.status,
        typeof p.type === 'string' ? p.type : null,
        typeof p.title === 'string' ? p.title : res.statusText || 'Request failed',
        typeof p.detail === 'string' ? p.detail : parsed === null && text ? text.slice(0, 500) : null,
        parsed,
        res.status === 401 ? this.#tokenHint() : null,
      );
    }
    if (parsed === null) throw new ConnectionError(`${method} ${url}: the answer is not JSON`);
    return parsed as T;
  }
}
