import type { Logger } from 'pino';
import type { Participant } from '../participant-adapter/participant.ts';
import type { ResourceConfig } from './config/load-config.ts';
import { Admission } from './engine/admission.ts';
import type { Metrics } from './observability/metrics.ts';

// At most one on-demand reading per cluster per second: a reading is one cheap query, once a second
// notices soon enough that others let go of their slots, and bounds the cost when every refusal
// under overload asks for one.
const STALE_READING_INTERVAL_MS = 1_000;

/** What admission needs from the service: the slots, and the readings that keep them true. */
export interface AdmissionCapacity {
  admission: Admission;
  /** Reads every cluster's max_prepared_transactions and prepared gids (start-up and the health loop). */
  refresh(): Promise<void>;
  close(): void;
}

/**
 * The cluster a Postgres resource lives on, by the host and port of its URL: databases of one
 * cluster share its max_prepared_transactions (the embedded default puts three banks on one).
 * Two spellings of one server (localhost and 127.0.0.1) count as two clusters: each then thinks
 * it has every slot, and a PREPARE that finds them taken is still answered 503, never 409.
 */
export function clusterOf(url: string): string {
  // By hand rather than with URL: a socket directory leaves the host empty (postgres://u@/db?host=/run/pg),
  // which URL refuses.
  const rest = url.replace(/^postgres(ql)?:\/\//i, '');
  const authority = rest.split(/[/?]/, 1)[0]!;
  const query = new URLSearchParams(rest.includes('?') ? rest.slice(rest.indexOf('?') + 1) : '');
  const hostPort = authority.slice(authority.lastIndexOf('@') + 1);
  const bracket = hostPort.startsWith('[') ? hostPort.indexOf(']') + 1 : 0; // an IPv6 literal keeps its colons
  const colon = hostPort.indexOf(':', bracket);
  const rawHost = colon === -1 ? hostPort : hostPort.slice(0, colon);
  let host = rawHost;
  try {
    host = decodeURIComponent(rawHost);
  } catch {
    // not percent-encoding after all: keep it as written
  }
  const port = (colon === -1 ? '' : hostPort.slice(colon + 1)) || query.get('port') || '5432';
  return `${(host || query.get('host') || 'localhost').toLowerCase()}:${port}`;
}

/**
 * Each resource gets TPC_RESOURCE_POOL_SIZE slots: a direct resource cannot run more branches than
 * its pool has connections anyway (more would only queue inside pg-pool, past the admission wait).
 * A resource behind a participant router gets the same number: its service's pool and
 * max_prepared_transactions are invisible from here, so the coordinator keeps to what it would
 * open on a database of its own, and a 53200 the router passes back is answered 503 like any other.
 * Direct resources also share their cluster's free prepared slots.
 */
export function createAdmissionCapacity(options: {
  resources: Readonly<Record<string, ResourceConfig>>;
  participants: ReadonlyMap<string, Participant>;
  slotsPerResource: number;
  waitMs: number;
  queueLimit: number;
  metrics: Metrics;
  logger: Logger;
}): AdmissionCapacity {
  const { metrics, logger, participants } = options;
  const members = new Map<string, Participant[]>();
  const lastRead = new Map<string, number>();
  const scheduled = new Map<string, NodeJS.Timeout>();
  let closed = false;

  const read = async (cluster: string): Promise<void> => {
    lastRead.set(cluster, Date.now());
    // Any database of the cluster sees all of its prepared transactions; the next one is asked if one is down.
    for (const p of members.get(cluster) ?? []) {
      const before = admission.heldGids();
      const slots = await p.preparedSlots().catch((err: unknown) => {
        logger.warn({ resource: p.name, err: err instanceof Error ? err.message : String(err) }, 'could not read prepared-transaction slots');
        return undefined;
      });
      if (slots === undefined) continue;
      if (slots === null) return;
      // Gids this process held when the reading started are its own slots even if released since.
      admission.setClusterReading(
        cluster,
        slots.maxPrepared,
        slots.preparedGids.filter((g) => !before.has(g)),
      );
      return;
    }
    metrics.backgroundFailures.inc({ loop: 'admission-capacity' });
  };

  const readSoon = (cluster: string) => {
    if (closed || scheduled.has(cluster)) return;
    const wait = Math.max(0, (lastRead.get(cluster) ?? 0) + STALE_READING_INTERVAL_MS - Date.now());
    const timer = setTimeout(() => {
      scheduled.delete(cluster);
      if (!closed) void read(cluster);
    }, wait);
    timer.unref();
    scheduled.set(cluster, timer);
  };

  const admission = new Admission({ waitMs: options.waitMs, queueLimit: options.queueLimit, observer: metrics.admission, onStale: readSoon });
  for (const [name, resource] of Object.entries(options.resources)) {
    const cluster = resource.kind === 'postgres' ? clusterOf(resource.url) : null;
    admission.addResource(name, options.slotsPerResource, cluster);
    const p = participants.get(name);
    if (cluster !== null && p) members.set(cluster, [...(members.get(cluster) ?? []), p]);
  }
  metrics.trackAdmission(() => admission.snapshot());

  return {
    admission,
    refresh: async () => {
      await Promise.all([...members.keys()].map(read));
    },
    close: () => {
      closed = true;
      for (const t of scheduled.values()) clearTimeout(t);
      scheduled.clear();
    },
  };
}
