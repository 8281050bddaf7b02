import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * CPU accounting from /proc (Linux), so that the tables can say where the machine's CPU goes per
 * transaction: each Postgres cluster, Redis, the benchmark process, the coordinator, and anything
 * else running on the machine (other people's tests on a shared box). On a small machine every
 * variant is CPU-bound, so CPU per transaction is what sets the throughput.
 * Elsewhere every figure reads as NaN and the tables show "–".
 */
interface Proc {
  ppid: number;
  comm: string;
  /** CPU seconds (user + system, all threads). */
  cpu: number;
  /** CPU seconds of its children that ended and were waited for (cutime + cstime). */
  endedChildren: number;
}

export interface CpuSnapshot {
  /** Machine-wide jiffies over every core: busy (not idle, not iowait) and total. */
  machineBusy: number;
  machineTotal: number;
  procs: Map<number, Proc>;
  /** Postmaster pid of each cluster (null if not running). */
  postmasters: (number | null)[];
}

/** CPU seconds used between two snapshots. */
export interface CpuUsed {
  /** Every core, every process and the kernel. */
  machine: number;
  /** Busy share of the machine (0..1). */
  busyShare: number;
  clusters: number[];
  redis: number;
  bench: number;
  /** Every coordinator child process (both with --baseline-root); NaN when they run inside the benchmark process. */
  coordinator: number;
  /** Processes that are not part of this benchmark. */
  foreign: number;
}

const CLK_TCK = 100; // USER_HZ: /proc counts CPU time in 1/100 s

function read(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

function procOf(pid: number): Proc | null {
  const stat = read(`/proc/${pid}/stat`);
  if (!stat) return null;
  const close = stat.lastIndexOf(')');
  // Fields after the ")" that ends the command name: ppid is the 4th field, utime the 14th, stime the 15th, cutime and cstime the 16th and 17th.
  const f = stat.slice(close + 2).split(' ');
  return {
    ppid: Number(f[1]),
    comm: stat.slice(stat.indexOf('(') + 1, close),
    cpu: (Number(f[11]) + Number(f[12])) / CLK_TCK,
    endedChildren: (Number(f[13]) + Number(f[14])) / CLK_TCK,
  };
}

function postmasterPid(dataDir: string): number | null {
  const text = read(join(dataDir, 'postmaster.pid'));
  const pid = text ? Number(text.split('\n')[0]) : Number.NaN;
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

export function snapshot(dataDirs: readonly string[]): CpuSnapshot {
  let machineBusy = Number.NaN;
  let machineTotal = Number.NaN;
  const line = read('/proc/stat')?.split('\n')[0];
  if (line) {
    // user nice system idle iowait irq softirq steal
    const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
    machineTotal = v.reduce((a, b) => a + b, 0);
    machineBusy = machineTotal - (v[3] ?? 0) - (v[4] ?? 0);
  }
  const procs = new Map<number, Proc>();
  let pids: number[] = [];
  try {
    pids = readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .map(Number);
  } catch {
    // no /proc
  }
  for (const pid of pids) {
    const p = procOf(pid);
    if (p) procs.set(pid, p);
  }
  return { machineBusy, machineTotal, procs, postmasters: dataDirs.map(postmasterPid) };
}

/**
 * Per-process differences, attributed to their owner. A process that started in between counts
 * in full; one that ended in between is lost (pooled connections live on, so little is), except a
 * Postgres backend: its postmaster waits for it, so the kernel adds its CPU to the postmaster's
 * cutime/cstime, which count for the cluster. Connections that churn (a proxy cutting them, as
 * --backlog's does) would otherwise hide their backends' CPU. A backend that was already running at
 * the first snapshot and ended before the second adds its whole life to cutime: what the first
 * snapshot saw of it is taken off again. (Counted in full, an idle pooled connection of another
 * variant closing during a round, after its idle timeout, charged that variant's earlier CPU to
 * this round: seen as a baseline whose banks "cost" 2.5 ms per transfer and a negative remainder.)
 */
export function used(after: CpuSnapshot, before: CpuSnapshot, coordinatorPids: readonly number[]): CpuUsed {
  const total = after.machineTotal - before.machineTotal;
  const out: CpuUsed = {
    machine: (after.machineBusy - before.machineBusy) / CLK_TCK,
    busyShare: total > 0 ? (after.machineBusy - before.machineBusy) / total : Number.NaN,
    clusters: after.postmasters.map(() => 0),
    redis: 0,
    bench: 0,
    coordinator: coordinatorPids.length === 0 ? Number.NaN : 0,
    foreign: 0,
  };
  if (after.procs.size === 0) {
    return { ...out, clusters: out.clusters.map(() => Number.NaN), redis: Number.NaN, bench: Number.NaN, coordinator: Number.NaN, foreign: Number.NaN };
  }
  after.postmasters.forEach((pid, i) => {
    const a = pid === null ? undefined : after.procs.get(pid);
    const b = pid === null ? undefined : before.procs.get(pid);
    if (!a || !b) return;
    let seenBefore = 0;
    for (const [child, c] of before.procs) if (c.ppid === pid && !after.procs.has(child)) seenBefore += c.cpu;
    out.clusters[i]! += Math.max(0, a.endedChildren - b.endedChildren - seenBefore);
  });
  for (const [pid, p] of after.procs) {
    const d = p.cpu - (before.procs.get(pid)?.cpu ?? 0);
    if (d <= 0) continue;
    const cluster = after.postmasters.findIndex((m) => m !== null && (m === pid || m === p.ppid));
    if (cluster !== -1) out.clusters[cluster]! += d;
    else if (pid === process.pid) out.bench += d;
    else if (coordinatorPids.includes(pid)) out.coordinator += d;
    else if (p.comm === 'redis-server' && p.ppid === process.pid) out.redis += d;
    else out.foreign += d;
  }
  return out;
}

export function addUsed(a: CpuUsed, b: CpuUsed): CpuUsed {
  return {
    machine: a.machine + b.machine,
    busyShare: Number.NaN, // time-weighted by the caller
    clusters: b.clusters.map((c, i) => c + (a.clusters[i] ?? 0)),
    redis: a.redis + b.redis,
    bench: a.bench + b.bench,
    coordinator: a.coordinator + b.coordinator,
    foreign: a.foreign + b.foreign,
  };
}

export function zeroUsed(clusters: number): CpuUsed {
  return { machine: 0, busyShare: 0, clusters: Array.from({ length: clusters }, () => 0), redis: 0, bench: 0, coordinator: 0, foreign: 0 };
}
