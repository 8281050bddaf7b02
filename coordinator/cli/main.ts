import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { DEFAULT_URL } from './config.ts';
import { describeError, EXIT_USAGE } from './errors.ts';
import { orphansCommand, resourcesCommand } from './inspect-commands.ts';
import { migrateCommand, serveCommand } from './local-commands.ts';
import { participantCommand } from './participant-command.ts';
import { txCommand } from './tx-commands.ts';

/** The version in our package.json: two levels up from the source, three from the compiled dist/. */
function packageVersion(): string {
  for (const path of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(path, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'pg-2pc-coordinator' && pkg.version) return pkg.version;
    } catch {
      // Not there (or not ours): try the next place.
    }
  }
  return 'unknown';
}

/** `tpc`: the operator's command line for the coordinator. */
export function buildProgram(): Command {
  const program = new Command('tpc')
    .description('two-phase-commit coordinator for PostgreSQL: operate a running service, or run one')
    .option('--url <url>', `the service's base URL (env TPC_URL; default ${DEFAULT_URL})`)
    .option('--token <token>', 'API bearer token (env TPC_TOKEN)')
    .option('--json', "print the API's JSON instead of tables")
    .version(packageVersion(), '-V, --version')
    .showHelpAfterError('(see tpc --help)')
    .exitOverride();
  program.addCommand(txCommand());
  program.addCommand(orphansCommand());
  program.addCommand(resourcesCommand());
  program.addCommand(serveCommand());
  program.addCommand(migrateCommand());
  program.addCommand(participantCommand());
  // Every (sub)command: commander's own errors are thrown, not exited on, so that they exit 2.
  const override = (cmd: Command, path: string) => {
    cmd.exitOverride();
    cmd.showHelpAfterError(`(see ${path} --help)`);
    for (const sub of cmd.commands) override(sub, `${path} ${sub.name()}`);
  };
  for (const sub of program.commands) override(sub, `tpc ${sub.name()}`);
  return program;
}

export async function run(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version exit 0; every other commander error (already printed) is a usage error.
      return err.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    const { message, exitCode } = describeError(err);
    process.stderr.write(`${message}\n`);
    return exitCode;
  }
}

// Set the exit code and let the process end on its own, so that stdout is flushed (and `serve` keeps running).
process.exitCode = await run(process.argv.slice(2));
