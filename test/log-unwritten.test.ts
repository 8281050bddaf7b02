import { once } from 'node:events';
import net from 'node:net';
import { describe, expect, inject, it } from 'vitest';
import { migrateLog, openLogDatabase } from '../coordinator/log/log-database.ts';
import { certainlyUnwritten } from '../coordinator/log/unwritten.ts';
import { createDatabase } from './harness/world.ts';

/*
 * A transaction's first log write decides what its driver does when it fails: certainly unwritten,
 * it rolls back at once and answers 503; otherwise it reads the log back (for up to seconds) before
 * handing over. So the classification is checked against real failures, one of each kind.
 */
const SLEEP = { sql: 'SELECT pg_sleep(30)', parameters: [] };

function withPort(url: string, port: number): string {
  const u = new URL(url);
  u.port = String(port);
  return u.toString();
}

/** What `db.prepared` rejects with, run against `url`. */
async function failureOf(url: string, query = SLEEP, during?: (url: string) => Promise<void>): Promise<unknown> {
  const db = openLogDatabase({ url, maxConnections: 1 });
  try {
    const running = db.prepared('forced', 'unwritten_probe', query).then(
      () => new Error('the statement succeeded'),
      (err: unknown) => err,
    );
    await during?.(url);
    const err = await running;
    expect(err).toBeInstanceOf(Error);
    return err;
  } finally {
    await db.close();
  }
}

describe('a failed log write: certainly unwritten or not', () => {
  it('a connection accepted and dropped before the statement (a proxy whose server is gone): unwritten', async () => {
    // What a TCP proxy in front of a failing-over log does: it accepts, then has nowhere to go.
    const dropper = net.createServer((socket) => socket.destroy());
    dropper.listen(0, '127.0.0.1');
    await once(dropper, 'listening');
    try {
      const url = await createDatabase(inject('clusterA'), `uw_${Math.random().toString(36).slice(2, 8)}`);
      const err = await failureOf(withPort(url, (dropper.address() as net.AddressInfo).port));
      // The same error a connection lost mid-statement gives: only the way it was taken tells them apart.
      expect(String((err as Error).message)).toMatch(/terminated|ECONNRESET|closed/i);
      expect(certainlyUnwritten(err)).toBe(true);
    } finally {
      dropper.close();
    }
  });

  it('nothing listening: unwritten', async () => {
    const free = net.createServer().listen(0, '127.0.0.1');
    await once(free, 'listening');
    const port = (free.address() as net.AddressInfo).port;
    await new Promise((r) => free.close(r));
    const url = await createDatabase(inject('clusterA'), `uw_${Math.random().toString(36).slice(2, 8)}`);
    expect(certainlyUnwritten(await failureOf(withPort(url, port)))).toBe(true);
  });

  it('a statement the server refused with an ERROR: unwritten', async () => {
    const url = await createDatabase(inject('clusterA'), `uw_${Math.random().toString(36).slice(2, 8)}`);
    const err = await failureOf(url, { sql: 'SELECT 1 / 0', parameters: [] });
    expect((err as { code?: string }).code).toBe('22012');
    expect(certainlyUnwritten(err)).toBe(true);
  });

  it('the connection lost after the statement went out: maybe written', async () => {
    const url = await createDatabase(inject('clusterA'), `uw_${Math.random().toString(36).slice(2, 8)}`);
    await migrateLog(url);
    const admin = openLogDatabase({ url, maxConnections: 1 });
    try {
      const err = await failureOf(url, SLEEP, async () => {
        // Ended by the server while the statement runs: it may have committed before the end.
        for (;;) {
          const r = await admin.prepared<{ n: number }>('relaxed', 'uw_kill', {
            sql: "SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND pid <> pg_backend_pid()",
            parameters: [],
          });
          if (r.rows[0]!.n > 0) return;
          await new Promise((r) => setTimeout(r, 50));
        }
      });
      expect(certainlyUnwritten(err)).toBe(false);
    } finally {
      await admin.close();
    }
  });
});
