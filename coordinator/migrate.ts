import { ConfigError, loadLogUrl } from './config/load-config.ts';
import { migrateLog } from './log/log-database.ts';

/** `npm run migrate`: applies the log schema to DATABASE_URL (also done at every service start). */
async function main(): Promise<void> {
  const applied = await migrateLog(loadLogUrl(process.env));
  process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'log schema is up to date\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof ConfigError ? 'configuration error: ' : ''}${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(err instanceof ConfigError ? 2 : 1);
});
