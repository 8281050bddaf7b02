import type pg from 'pg';

interface Corkable {
  cork(): void;
  uncork(): void;
}

/**
 * Holds back this connection's writes until the current turn of the event loop is over, so that
 * queries issued back to back (BEGIN, the statements, the xid probe, PREPARE, the session reset in
 * pipeline mode) leave in one write instead of one each. On loopback a write costs its sender the
 * receiver's TCP processing too, and these writes were the coordinator's largest CPU cost.
 * setImmediate, not nextTick or a microtask: the code that issues the rest of a batch resumes in
 * a microtask after the first query, and must still find the socket corked.
 */
export function batchWrites(client: pg.ClientBase): void {
  // pg keeps its socket at client.connection.stream (a net.Socket); not public API, hence the guard.
  const stream = (client as unknown as { connection?: { stream?: Partial<Corkable> } }).connection?.stream;
  if (typeof stream?.cork !== 'function' || typeof stream.uncork !== 'function') return;
  const s = stream as Corkable;
  s.cork();
  setImmediate(() => s.uncork());
}
