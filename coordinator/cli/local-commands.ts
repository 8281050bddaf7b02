import { Command } from 'commander';

/*
 * Local commands run the same entry points as the npm scripts, in this process: `tpc serve` is
 * `npm start` (coordinator/main.ts: configuration from the environment, signals, shutdown) and
 * `tpc migrate` is `npm run migrate` (coordinator/migrate.ts). Importing the module runs it; its
 * own error handling sets the exit code (2 for a configuration error).
 */

export function serveCommand(): Command {
  return new Command('serve').description('start the coordinator from the environment (as `npm start`)').action(async () => {
    await import('../main.ts');
  });
}

export function migrateCommand(): Command {
  return new Command('migrate').description('apply the log schema to DATABASE_URL (as `npm run migrate`)').action(async () => {
    await import('../migrate.ts');
  });
}
