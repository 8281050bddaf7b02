import { ConfigError, loadConfig, loadEmbeddedSettings } from './config/load-config.ts';
import { startLocalEnvironment, wantsLocalEnvironment, type LocalEnvironment } from './embedded/local-environment.ts';
import { localBanner } from './embedded/local-banner.ts';
import { applyHeapGrowth } from './heap-growth.ts';
import { createLogger } from './observability/logger.ts';
import { startTraceExport } from './observability/trace-export.ts';
import { startService } from './service.ts';

/**
 * `npm start`: the coordinator from the environment. With nothing configured (no DATABASE_URL,
 * no TPC_RESOURCES) it first starts the embedded default: a Postgres cluster kept under .tpc/,
 * a Redis, and a dev token, and stops them again on Ctrl-C.
 */
async function main(): Promise<void> {
  let local: LocalEnvironment | undefined;
  let env: Record<string, string | undefined> = process.env;
  if (wantsLocalEnvironment(process.env)) {
    const settings = loadEmbeddedSettings(process.env);
    process.stderr.write(`nothing configured (DATABASE_URL, TPC_RESOURCES): starting the embedded default in ${settings.dataDir}/\n`);
    local = await startLocalEnvironment({ ...settings, redisUrl: process.env.REDIS_URL || undefined, tokens: process.env.TPC_API_TOKENS || undefined });
    env = { ...process.env, ...local.env };
  }
  const stopLocal = () => local?.stop() ?? Promise.resolve();

  let config;
  try {
    config = loadConfig(env);
  } catch (err) {
    await stopLocal();
    if (err instanceof ConfigError) {
      process.stderr.write(`configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger(config.logLevel);
  if (!applyHeapGrowth(config.heapGrowthPercent) && config.heapGrowthPercent > 0) {
    logger.info('--heap-growing-percent given to Node; TPC_HEAP_GROWTH_PERCENT is not applied');
  }
  // Before the service: its spans need the SDK registered to be recorded.
  const traces = await startTraceExport(env).catch((err: unknown) => {
    logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'OpenTelemetry SDK could not start; traces are not exported');
    return null;
  });
  if (traces) logger.info({ exporter: env.OTEL_TRACES_EXPORTER ?? 'otlp' }, 'exporting traces (OpenTelemetry)');
  // Handlers go in before the service starts: a SIGTERM that arrives just as it starts listening
  // must still shut it down cleanly, not kill it with the default action.
  let service: Awaited<ReturnType<typeof startService>> | undefined;
  let pending: string | undefined;
  let stopping = false;
  const exit = (code: number) => {
    // What the embedded default started goes with us, whichever way we leave.
    void Promise.allSettled([stopLocal(), traces?.shutdown()]).finally(() => process.exit(code));
  };
  const stop = (signal: string) => {
    if (!service) {
      pending ??= signal;
      return;
    }
    if (stopping) {
      // A second signal: the operator wants out now. What is in flight is recovered from the log.
      logger.warn({ signal }, 'second signal: exiting without waiting');
      exit(1);
      return;
    }
    stopping = true;
    logger.info({ signal, inFlight: service.engine.inFlight }, 'shutting down: no new requests, finishing what is in flight');
    const timer = setTimeout(() => {
      logger.error({ timeoutMs: config.shutdownTimeoutMs }, 'shutdown timed out; exiting (recovery will finish the rest)');
      exit(1);
    }, config.shutdownTimeoutMs);
    timer.unref();
    service.close().then(
      () => exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  try {
    service = await startService(config, { logger });
  } catch (err) {
    await stopLocal();
    throw err;
  }
  if (local) process.stdout.write(localBanner(service.url, local));
  if (pending) stop(pending);
}

main().catch((err: unknown) => {
  process.stderr.write(`coordinator failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
