import { z } from 'zod';
import { migrateLog } from './log/log-database.ts';

/** `npm run migrate`: applies the log schema to DATABASE_URL (also done at every service start). */
const url = z.string().regex(/^postgres(ql)?:\/\//).safeParse(process.env.DATABASE_URL);
if (!url.success) {
  process.stderr.write('configuration error: DATABASE_URL: must be set to a postgres:// connection string\n');
  process.exit(2);
}
migrateLog(url.data).then(
  (applied) => {
    process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'log schema is up to date\n');
  },
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
