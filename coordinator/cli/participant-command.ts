import { Command, Option } from 'commander';
import { NAMESPACE_PATTERN } from '../../participant-adapter/gid.ts';
import { UsageError } from './errors.ts';

// zod is loaded when the command runs, not when the CLI starts: every other command would pay for it.
async function optionsSchema() {
  const { z } = await import('zod');
  return z.object({
    databaseUrl: z.string({ error: '--database-url is required' }).regex(/^postgres(ql)?:\/\//, '--database-url must be a postgres:// connection string'),
    port: z.coerce.number({ error: '--port must be a number' }).int().min(0, '--port must be 0–65535').max(65535, '--port must be 0–65535'),
    host: z.string().min(1),
    namespace: z.string().regex(NAMESPACE_PATTERN, `--namespace must match ${NAMESPACE_PATTERN}`),
    name: z.string().min(1).max(100),
    allowStatements: z.boolean(),
    token: z.string({ error: 'TPC_PARTICIPANT_TOKEN is required but not set' }).min(16, 'TPC_PARTICIPANT_TOKEN must be at least 16 characters'),
  });
}

/** `tpc participant`: the participant router as a sidecar process for one database. */
export function participantCommand(): Command {
  return new Command('participant')
    .description('serve one database to the coordinator over HTTP (the participant router as a sidecar); token from env TPC_PARTICIPANT_TOKEN')
    .addOption(
      new Option('--database-url <url>', 'the database this participant stands for (credentials stay in this process)').env('TPC_PARTICIPANT_DATABASE_URL'),
    )
    .addOption(new Option('--port <port>', 'port to listen on').default('3001').env('TPC_PARTICIPANT_PORT'))
    .addOption(new Option('--host <host>', 'address to listen on').default('127.0.0.1').env('TPC_PARTICIPANT_HOST'))
    .addOption(new Option('--namespace <ns>', "the coordinator's TPC_NAMESPACE: only its gids are answered").default('tpc').env('TPC_NAMESPACE'))
    .addOption(new Option('--name <name>', 'a name for this database in messages').default('participant'))
    .option('--allow-statements', 'run SQL sent by the coordinator (REST submissions naming this resource); off by default', false)
    .action(async (opts: Record<string, unknown>, command: Command) => {
      const parsed = (await optionsSchema()).safeParse({ ...opts, token: process.env.TPC_PARTICIPANT_TOKEN });
      if (!parsed.success) throw new UsageError(parsed.error.issues[0]!.message);
      // Loaded here, not at the top: express, pg, pino and the SQL parser would slow every other command.
      const { startParticipantServer } = await import('../../participant-adapter/participant-server.ts');
      const server = await startParticipantServer(parsed.data).catch((err: unknown) => {
        throw listenError(err, parsed.data.host, parsed.data.port, command.getOptionValueSource('port'));
      });
      process.stdout.write(`participant router for ${parsed.data.name} at ${server.url}\n`);
      const stop = () => {
        server.close().then(
          () => process.exit(0),
          () => process.exit(1),
        );
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      // Keeps the command's promise pending: the process lives until a signal stops it.
      await new Promise(() => {});
    });
}

/** A taken port names the port and where it came from (--port, TPC_PARTICIPANT_PORT or the default). */
function listenError(err: unknown, host: string, port: number, source: string | undefined): unknown {
  if ((err as NodeJS.ErrnoException | undefined)?.code !== 'EADDRINUSE') return err;
  const from = source === 'env' ? `TPC_PARTICIPANT_PORT=${port}` : source === 'cli' ? `--port ${port}` : `the default --port ${port}`;
  const where = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  return new Error(`port ${port} is already in use (${where}, from ${from}): stop what holds it, or choose a free one with --port or TPC_PARTICIPANT_PORT`, {
    cause: err,
  });
}
