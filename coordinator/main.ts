import { ConfigError, loadConfig } from './config/load-config.ts';
import { createLogger } from './observability/logger.ts';
import { startService } from './service.ts';

/** `npm start`: the coordinator from the environment. */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger(config.logLevel);
  // Handlers go in before the service starts: a SIGTERM that arrives just as it starts listening
  // must still shut it down cleanly, not kill it with the default action.
  let service: Awaited<ReturnType<typeof startService>> | undefined;
  let pending: string | undefined;
  let stopping = false;
  const stop = (signal: string) => {
    if (!service) {
      pending ??= signal;
      return;
    }
    if (stopping) {
      // A second signal: the operator wants out now. What is in flight is recovered from the log.
      logger.warn({ signal }, 'second signal: exiting without waiting');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal, inFlight: service.engine.inFlight }, 'shutting down: no new requests, finishing what is in flight');
    const timer = setTimeout(() => {
      logger.error({ timeoutMs: config.shutdownTimeoutMs }, 'shutdown timed out; exiting (recovery will finish the rest)');
      process.exit(1);
    }, config.shutdownTimeoutMs);
    timer.unref();
    service.close().then(() => process.exit(0), (err: unknown) => {
      logger.error({ err }, 'shutdown failed');
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  service = await startService(config, { logger });
  if (pending) stop(pending);
}

main().catch((err: unknown) => {
  process.stderr.write(`coordinator failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
