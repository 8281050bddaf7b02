import { UsageError } from './errors.ts';

export const DEFAULT_URL = 'http://127.0.0.1:8080';

/** What the API commands need to reach the service. */
export interface CliConfig {
  url: string;
  token: string | null;
  json: boolean;
  timeoutMs: number;
  /** Where `npm start`'s embedded default keeps its dev token (TPC_DATA_DIR, default .tpc), for the 401 message. */
  devTokenFile: string;
}

export interface GlobalOptions {
  url?: string;
  token?: string;
  json?: boolean;
}

/**
 * The one place the CLI reads its environment: `--url` over `TPC_URL` over the default, `--token`
 * over `TPC_TOKEN` (none: no Authorization header, for a service without tokens).
 */
export function cliConfig(options: GlobalOptions, env: NodeJS.ProcessEnv = process.env): CliConfig {
  const raw = options.url ?? (env.TPC_URL || undefined) ?? DEFAULT_URL;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`--url / TPC_URL: "${raw}" is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`--url / TPC_URL: "${raw}" is not an http(s) URL`);
  const token = options.token ?? (env.TPC_TOKEN || undefined) ?? null;
  const devTokenFile = `${(env.TPC_DATA_DIR || '.tpc').replace(/\/+$/, '')}/dev-token`;
  return { url: url.href.replace(/\/+$/, ''), token, json: options.json === true, timeoutMs: 60_000, devTokenFile };
}
