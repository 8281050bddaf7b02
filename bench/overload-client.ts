import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { randomTransfer, statementsOf } from './variants.ts';

/*
 * The clients of the overload benchmark: closed-loop REST clients that behave as the 503 asks
 * (they wait Retry-After, plus jitter, before trying again), a prober that times /healthz and
 * /readyz during the load, and a sampler of the coordinator's resident memory.
 */

// 5 s: the deadline the collapse was measured against (answers after 12 s of a 5 s deadline).
export const OVERLOAD_TIMEOUT_MS = 5_000;
// Up to half a second on top of Retry-After: clients refused together must not all return in the same instant.
const RETRY_JITTER_MS = 500;
// Memory sampled 5 times a second: a stage lasts seconds, and the peak is what matters.
const RSS_INTERVAL_MS = 200;

export interface StageCounts {
  commits: number;
  commitLatencies: number[];
  /** 503 overloaded answers, each with its latency. */
  refusals: number;
  refusalLatencies: number[];
  /** 409 answers (a transfer aborted: under overload there should be none). */
  aborted: number;
  /** Any answer (or none) that came after the transaction's deadline. */
  late: number;
  /** When each late request was sent, ms into the stage, and what it got: to tell a start-up burst from a steady state. */
  lateSent: { at: number; status: number; sentMs: number; connectMs: number; firstByteMs: number }[];
  /** Anything else: other statuses, failed connections; by message. */
  errors: Map<string, number>;
}

interface Answer {
  status: number;
  text: string;
  retryAfter: string | undefined;
  /** Time until the request was written to the socket (a new connection's handshake included), ms. */
  sentMs: number;
  /** Time until the first byte of the answer, ms. */
  firstByteMs: number;
  /** Time until a new connection was established (0: a kept-alive one was reused), ms. */
  connectMs: number;
}

function post(agent: Agent, url: URL, body: string): Promise<Answer> {
  const t0 = performance.now();
  let sentMs = Number.NaN;
  let connectMs = 0;
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        const firstByteMs = performance.now() - t0;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            text: Buffer.concat(chunks).toString('utf8'),
            retryAfter: res.headers['retry-after'] as string | undefined,
            sentMs,
            firstByteMs,
            connectMs,
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.on('finish', () => {
      sentMs = performance.now() - t0;
    });
    req.on('socket', (socket) => {
      if (socket.connecting)
        socket.once('connect', () => {
          connectMs = performance.now() - t0;
        });
    });
    req.end(body);
  });
}

/** What an unexpected answer was, without its ids, so that answers of one kind are counted together. */
function answerKind(text: string): string {
  try {
    const body = JSON.parse(text) as { status?: unknown; type?: unknown };
    if (typeof body.type === 'string') return body.type;
    if (typeof body.status === 'string') return `status ${body.status}`;
  } catch {
    /* not JSON */
  }
  return text.replace(/[0-9a-f]{8}-[0-9a-f-]{27}/g, '<id>').slice(0, 160);
}

/** An abort's reason without the ids, so that the same reason is counted once: `<code> on <resource>: <message>`. */
function abortReason(text: string): string {
  try {
    const e = (JSON.parse(text) as { error?: { code?: string; resource?: string | null; message?: string } }).error;
    const message = (e?.message ?? '').replace(/[0-9a-f]{8}-[0-9a-f-]{27}/g, '<id>').replace(/\d+/g, 'N');
    return `${e?.code ?? '?'} on ${e?.resource ?? '?'}: ${message.slice(0, 160)}`;
  } catch {
    return text.slice(0, 160);
  }
}

/** `clients` closed-loop clients sending random transfers for `durationMs`; what they got back. */
export async function runClients(baseUrl: string, clients: number, durationMs: number, accounts: number, stopped: () => boolean): Promise<StageCounts> {
  const agent = new Agent({ keepAlive: true, maxSockets: clients, maxFreeSockets: clients });
  const url = new URL('/v1/transactions', baseUrl);
  const counts: StageCounts = { commits: 0, commitLatencies: [], refusals: 0, refusalLatencies: [], aborted: 0, late: 0, lateSent: [], errors: new Map() };
  const error = (msg: string) => counts.errors.set(msg, (counts.errors.get(msg) ?? 0) + 1);
  const start = performance.now();
  const end = start + durationMs;

  const client = async () => {
    while (!stopped() && performance.now() < end) {
      const body = JSON.stringify({
        branches: statementsOf(randomTransfer(accounts)).map((s) => ({
          resource: s.bank,
          statements: [{ sql: s.sql, params: s.params, expect: { rowCount: 1 } }],
        })),
        timeoutMs: OVERLOAD_TIMEOUT_MS,
      });
      const t0 = performance.now();
      let answer: Answer;
      try {
        answer = await post(agent, url, body);
      } catch (err) {
        if (performance.now() - t0 > OVERLOAD_TIMEOUT_MS) {
          counts.late++;
          counts.lateSent.push({ at: t0 - start, status: 0, sentMs: Number.NaN, connectMs: Number.NaN, firstByteMs: Number.NaN });
        }
        error(err instanceof Error ? err.message : String(err));
        await sleep(100); // a failing connection must not spin
        continue;
      }
      const ms = performance.now() - t0;
      if (ms > OVERLOAD_TIMEOUT_MS) {
        counts.late++;
        counts.lateSent.push({ at: t0 - start, status: answer.status, sentMs: answer.sentMs, connectMs: answer.connectMs, firstByteMs: answer.firstByteMs });
      }
      if (answer.status === 201) {
        counts.commits++;
        counts.commitLatencies.push(ms);
      } else if (answer.status === 503 && answer.text.includes('urn:tpc:problem:overloaded')) {
        counts.refusals++;
        counts.refusalLatencies.push(ms);
        const seconds = Number(answer.retryAfter);
        if (!Number.isFinite(seconds) || seconds < 1) error(`503 overloaded without a usable Retry-After (${answer.retryAfter})`);
        await sleep((Number.isFinite(seconds) ? seconds : 1) * 1000 + Math.random() * RETRY_JITTER_MS);
      } else if (answer.status === 409) {
        counts.aborted++;
        error(`409 ${abortReason(answer.text)}`);
      } else {
        error(`HTTP ${answer.status}: ${answerKind(answer.text)}`);
        await sleep(100);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: clients }, client));
  } finally {
    agent.destroy();
  }
  return counts;
}

export interface ProbeTimes {
  healthz: number[];
  readyz: number[];
  /** Probes that did not answer 200 (or not at all), by path and what came back. */
  failures: Map<string, number>;
}

/** Starts bench/overload-prober.ts in its own process; `stop` ends it and returns what it measured. */
export async function startProber(baseUrl: string): Promise<{ stop(): Promise<ProbeTimes> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./overload-prober.ts', import.meta.url)), baseUrl], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.setEncoding('utf8');
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: string) => {
      out += d;
      if (out.startsWith('ready\n')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`the prober exited (${code}) before it was ready`)));
  });
  await ready;
  return {
    async stop() {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.stdin.end();
      await exited;
      const line = out.split('\n').filter(Boolean).pop() ?? '{}';
      const t = JSON.parse(line) as { healthz?: number[]; readyz?: number[]; failures?: Record<string, number> };
      return { healthz: t.healthz ?? [], readyz: t.readyz ?? [], failures: new Map(Object.entries(t.failures ?? {})) };
    },
  };
}

/** The peak resident memory of process `pid` (this one when undefined), in MiB, until `stop` is called. */
export function startRssSampler(pid: number | undefined): { stop(): number } {
  const read = (): number => {
    if (pid === undefined) return process.memoryUsage().rss / 2 ** 20;
    try {
      const kb = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      return kb ? Number(kb[1]) / 1024 : Number.NaN;
    } catch {
      return Number.NaN;
    }
  };
  let peak = read();
  const timer = setInterval(() => {
    const v = read();
    if (Number.isFinite(v)) peak = Number.isFinite(peak) ? Math.max(peak, v) : v;
  }, RSS_INTERVAL_MS);
  return {
    stop() {
      clearInterval(timer);
      return peak;
    },
  };
}
