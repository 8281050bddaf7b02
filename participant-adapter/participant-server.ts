import type { Server } from 'node:http';
import express from 'express';
import pg from 'pg';
import { pino, type Logger } from 'pino';
import { participantRouter, type ParticipantRouterOptions } from './participant-router.ts';
import { listenFor } from './express-server.ts';
import { sessionConnection } from './session-settings.ts';

export interface ParticipantServerOptions extends Omit<ParticipantRouterOptions, 'pool'> {
  databaseUrl: string;
  host: string;
  port: number;
  /** Where the router is mounted; the coordinator's resource URL is http://host:port + this. */
  mountPath?: string;
  poolSize?: number;
  logger?: Logger;
}

export interface RunningParticipantServer {
  /** What to put in the coordinator's TPC_RESOURCES entry as `url`. */
  readonly url: string;
  close(): Promise<void>;
}

/**
 * The participant router as a process of its own (`tpc participant`): a sidecar next to a
 * database whose service does not mount the router itself. The database's credentials stay here.
 */
export async function startParticipantServer(options: ParticipantServerOptions): Promise<RunningParticipantServer> {
  const logger = options.logger ?? pino({ base: { service: 'tpc-participant' } });
  const mountPath = options.mountPath ?? '/2pc';
  const pool = new pg.Pool({
    // Session settings fixed at startup: a role default changed behind its back cannot break it.
    ...sessionConnection(options.databaseUrl),
    max: options.poolSize ?? 20,
    connectionTimeoutMillis: options.operationTimeoutMs ?? 5_000,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
    application_name: 'tpc-participant',
    pipeline: true,
  } as pg.PoolConfig);
  pool.on('error', (err) => logger.warn({ err: err.message }, 'idle database connection failed'));
  // As in the coordinator's own pools: a fatal error on a checked-out connection must not crash us.
  pool.on('connect', (client) => client.on('error', () => {}));

  const { databaseUrl: _url, host, port, logger: _logger, poolSize: _size, mountPath: _mount, ...routerOptions } = options;
  const app = express();
  app.disable('x-powered-by');
  // Liveness for an orchestrator: says only that the process answers, so it needs no token.
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.use(mountPath, participantRouter({ ...routerOptions, pool }));

  const server: Server = await listenFor(app, { port, host }, (err) => logger.error({ err }, 'the HTTP server reported an error')).catch(
    async (err: unknown) => {
      await pool.end();
      throw err;
    },
  );
  const address = server.address();
  const boundPort = typeof address === 'object' && address ? address.port : port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${boundPort}${mountPath}`;
  logger.info({ endpoint: url, namespace: options.namespace ?? 'tpc', allowStatements: Boolean(options.allowStatements) }, 'participant router listening');
  return {
    url,
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await pool.end();
    },
  };
}
