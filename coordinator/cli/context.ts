import type { Command } from 'commander';
import { ApiClient } from './api-client.ts';
import { cliConfig, type CliConfig, type GlobalOptions } from './config.ts';

/** For an API command: the global options (`--url`, `--token`, `--json`, wherever given) and a client. */
export function apiContext(cmd: Command): { config: CliConfig; api: ApiClient } {
  const config = cliConfig(cmd.optsWithGlobals<GlobalOptions>());
  return { config, api: new ApiClient(config) };
}
