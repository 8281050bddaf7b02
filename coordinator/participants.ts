import { DirectParticipant } from '../participant-adapter/direct-participant.ts';
import { HttpParticipant } from '../participant-adapter/http-participant.ts';
import type { Participant } from '../participant-adapter/participant.ts';
import type { ResourceConfig } from './config/load-config.ts';

/** A configured resource as the engine sees it: the same interface whichever way it is reached. */
export function createParticipant(
  name: string,
  resource: ResourceConfig,
  options: { namespace: string; poolSize: number; idleTimeoutMs?: number; onIdleError: (err: Error) => void },
): Participant {
  if (resource.kind === 'http') return new HttpParticipant({ name, url: resource.url, token: resource.token, namespace: options.namespace });
  return new DirectParticipant({
    name,
    connectionString: resource.url,
    maxConnections: options.poolSize,
    idleTimeoutMs: options.idleTimeoutMs,
    onIdleError: options.onIdleError,
  });
}
