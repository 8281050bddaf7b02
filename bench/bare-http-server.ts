import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { bareTransaction, type BarePools, type Statement } from './bare-flights.ts';
import { BANKS, benchPool, type Bank } from './world.ts';

/*
 * Variant (j)'s server: the bare protocol of (b), unchanged, behind the leanest HTTP server Node has.
 * It takes (c)'s request (`POST /v1/transactions`, one statement per branch), parses it, runs
 * bare-flights.ts's transaction on pools of its own (the same size and pipelining as the
 * coordinator's) and answers 201 `{ id, status: "committed" }`. What a REST coordinator costs beyond
 * this is the coordinator's own; what this costs beyond (b) is HTTP's, which no REST service avoids.
 * A benchmark fixture, run as a child by world.ts: it checks nothing a real service must (no auth,
 * no statement guard, no deadline, no recovery) and must never face anything but the benchmark.
 *
 *   env: BARE_URLS (JSON: bank_a, bank_b, bank_c, bench_log), BARE_POOL_SIZE, PORT
 */
const urls = JSON.parse(process.env.BARE_URLS ?? '{}') as Record<Bank | 'bench_log', string>;
const size = Number(process.env.BARE_POOL_SIZE ?? 32);
const pools: BarePools = {
  banks: Object.fromEntries(BANKS.map((b) => [b, benchPool(urls[b], size)])) as Record<Bank, ReturnType<typeof benchPool>>,
  log: benchPool(urls.bench_log, size, { options: '-c synchronous_commit=on' }),
};
const runId = `${Date.now().toString(36)}j`;
let counter = 0;

interface Submission {
  branches: { resource: string; statements: { sql: string; params: number[] }[] }[];
}

function statementsOf(body: unknown): Statement[] | null {
  const branches = (body as Partial<Submission> | null)?.branches;
  if (!Array.isArray(branches)) return null;
  const out: Statement[] = [];
  for (const b of branches) {
    const s = b?.statements;
    if (!(BANKS as readonly string[]).includes(b?.resource) || !Array.isArray(s) || s.length !== 1 || typeof s[0]?.sql !== 'string') return null;
    out.push({ bank: b.resource as Bank, sql: s[0].sql, params: Array.isArray(s[0].params) ? s[0].params : [] });
  }
  return out;
}

function answer(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method === 'GET' && req.url === '/readyz') return answer(res, 200, { status: 'ready' });
  if (req.method !== 'POST' || req.url !== '/v1/transactions') return answer(res, 404, { title: 'not found' });
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  let statements: Statement[] | null;
  try {
    statements = statementsOf(JSON.parse(Buffer.concat(chunks).toString('utf8')));
  } catch {
    statements = null;
  }
  if (!statements) return answer(res, 400, { title: 'one statement per branch on bank_a, bank_b or bank_c' });
  const id = `${runId}-${++counter}`;
  try {
    await bareTransaction(pools, statements, id, false);
    answer(res, 201, { id, status: 'committed' });
  } catch (err) {
    answer(res, 409, { id, status: 'aborted', detail: err instanceof Error ? err.message : String(err) });
  }
}

const server = createServer((req, res) => {
  handle(req, res).catch((err: unknown) => {
    if (!res.headersSent) answer(res, 500, { title: String(err) });
  });
});
server.listen(Number(process.env.PORT), '127.0.0.1');

process.once('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  void Promise.allSettled([...Object.values(pools.banks), pools.log].map((p) => p.end())).then(() => process.exit(0));
});
