import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Where the embedded default keeps the ports of its last start, in its data directory (JSON). */
export const PORTS_FILE = 'ports.json';

/** The ports of the embedded default's own servers: each is asked for again at the next start. */
export interface KeptPorts {
  postgres?: number;
  redis?: number;
}

const isPort = (p: unknown): p is number => typeof p === 'number' && Number.isInteger(p) && p > 0 && p <= 65535;

/**
 * The ports of the last start. A missing or unreadable file (a data directory made by an earlier
 * version, or edited by hand) means no wish: the servers take free ports, as they did before.
 */
export async function readKeptPorts(dataDir: string): Promise<KeptPorts> {
  const file = join(dataDir, PORTS_FILE);
  if (!existsSync(file)) return {};
  try {
    const kept = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    return { ...(isPort(kept.postgres) ? { postgres: kept.postgres } : {}), ...(isPort(kept.redis) ? { redis: kept.redis } : {}) };
  } catch {
    return {};
  }
}

export async function writeKeptPorts(dataDir: string, ports: KeptPorts): Promise<void> {
  await writeFile(join(dataDir, PORTS_FILE), `${JSON.stringify(ports, null, 2)}\n`);
}
