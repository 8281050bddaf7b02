import type { CoordinatorChild } from './coordinator-child.ts';
import { setBankOnline } from './banks.ts';
import type { Progress } from './progress.ts';
import type { Workload } from './workload.ts';

/*
 * The demo's timeline of faults while the workload runs: the coordinator SIGKILLed and started
 * again at 30 % of the run, one bank's database offline for a few seconds at 60 %, then calm
 * until the end. Each fault is announced on its own line and measured.
 */

export interface RecoveryReport {
  inFlightAtKill: number;
  /** How long the demo left it dead on purpose, so that the failing requests are seen. */
  pauseMs: number;
  /** From the kill until the new process answered /readyz (includes the pause before restarting). */
  restartMs: number;
  /** From the kill until every transfer in flight at the kill had a definite answer. */
  resolvedMs: number;
  /** From the kill until a transfer sent after it committed. */
  firstCommitMs: number;
  /** The larger of the two: the service is whole again. */
  recoveryMs: number;
  committed: number;
  aborted: number;
}

export interface OutageReport {
  bank: string;
  downMs: number;
  sessionsCut: number;
  /** Transfers that settled while the bank was offline. */
  committedDuring: number;
  abortedDuring: number;
}

export interface ScenarioReport {
  recovery?: RecoveryReport;
  outage?: OutageReport;
  /** What went wrong with the faults themselves (a restart that failed, a recovery not seen). */
  problems: string[];
}

export interface ScenarioDeps {
  coordinator: CoordinatorChild;
  workload: Workload;
  progress: Progress;
  /** A connection to the cluster's maintenance database, for ALTER DATABASE. */
  adminUrl: string;
  outageBank: string;
  seconds: number;
  signal: AbortSignal;
}

// 1.5 s dead before the restart: long enough that the display shows the requests failing.
const DEAD_PAUSE_MS = 1_500;
// 90 s to recover at most: a recovery job killed with the coordinator waits out its 30 s lease,
// and BullMQ notices a stalled job after 30 s more; anything longer is a failure to report.
const RECOVERY_LIMIT_MS = 90_000;

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason as Error);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    };
    const timer = setTimeout(
      () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      },
      Math.max(0, ms),
    );
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

async function killAndRestart(d: ScenarioDeps): Promise<RecoveryReport> {
  const { coordinator, workload, progress } = d;
  const watched = workload.openTransfers();
  const oldPid = coordinator.pid;
  const killedAt = Date.now();
  await coordinator.kill();
  progress.phase = 'coordinator killed';
  progress.event(
    `SIGKILL coordinator (pid ${oldPid}) with ${watched.length} transfers in flight: their answers are lost, clients retry with the same Idempotency-Key`,
  );
  await sleep(DEAD_PAUSE_MS, d.signal);
  progress.phase = 'restarting';
  await coordinator.start();
  const restartMs = Date.now() - killedAt;
  progress.phase = 'recovering';
  progress.event(`coordinator started again (pid ${coordinator.pid}), ready ${secs(restartMs)} after the kill; recovering from the log`);

  const until = killedAt + RECOVERY_LIMIT_MS;
  for (;;) {
    const resolved = watched.every((t) => t.outcome !== undefined);
    const firstNew = workload.transfers.find((t) => t.sentAt > killedAt && t.outcome === 'committed');
    if (resolved && firstNew) {
      const resolvedMs = Math.max(0, ...watched.map((t) => t.settledAt! - killedAt));
      const firstCommitMs = Math.min(...workload.transfers.filter((t) => t.sentAt > killedAt && t.outcome === 'committed').map((t) => t.settledAt! - killedAt));
      const report: RecoveryReport = {
        inFlightAtKill: watched.length,
        pauseMs: DEAD_PAUSE_MS,
        restartMs,
        resolvedMs,
        firstCommitMs,
        recoveryMs: Math.max(resolvedMs, firstCommitMs),
        committed: watched.filter((t) => t.outcome === 'committed').length,
        aborted: watched.filter((t) => t.outcome === 'aborted').length,
      };
      progress.event(
        `recovered ${secs(report.recoveryMs)} after the kill: the ${report.inFlightAtKill} transfers in flight settled ` +
          `(${report.committed} committed, ${report.aborted} aborted) and new transfers commit again`,
      );
      return report;
    }
    if (Date.now() > until) {
      const open = watched.filter((t) => t.outcome === undefined).length;
      throw new Error(
        `no recovery within ${secs(RECOVERY_LIMIT_MS)} of the kill: ${open} of the transfers in flight still without an answer${firstNew ? '' : ', and no new transfer committed'}`,
      );
    }
    await sleep(50, d.signal);
  }
}

async function bankOutage(d: ScenarioDeps, downMs: number): Promise<OutageReport> {
  const { workload, progress, outageBank: bank } = d;
  const before = { committed: workload.committed, aborted: workload.aborted };
  progress.phase = `${bank} down`;
  const sessionsCut = await setBankOnline(d.adminUrl, bank, false);
  const downAt = Date.now();
  progress.event(
    `${bank} offline: ALTER DATABASE ${bank} ALLOW_CONNECTIONS false and its ${sessionsCut} open sessions terminated ` +
      `(all three banks share one Postgres cluster here, so the database goes away rather than a server; its prepared transactions stay, as across a restart)`,
  );
  try {
    await sleep(downMs, d.signal);
  } finally {
    // Whatever happens (Ctrl-C included), the bank is not left refusing connections.
    await setBankOnline(d.adminUrl, bank, true);
  }
  const report: OutageReport = {
    bank,
    downMs: Date.now() - downAt,
    sessionsCut,
    committedDuring: workload.committed - before.committed,
    abortedDuring: workload.aborted - before.aborted,
  };
  progress.phase = 'normal';
  progress.event(
    `${bank} back online (ALLOW_CONNECTIONS true) after ${secs(report.downMs)}: meanwhile ${report.committedDuring} committed ` +
      `(not touching ${bank}, or completed once it returned) and ${report.abortedDuring} aborted`,
  );
  return report;
}

export async function runScenario(d: ScenarioDeps): Promise<ScenarioReport> {
  const report: ScenarioReport = { problems: [] };
  const startedAt = Date.now();
  const runMs = d.seconds * 1000;
  // A tenth of the run offline, between 3 s (visible) and 8 s (the run stays short).
  const downMs = Math.min(8_000, Math.max(3_000, runMs / 10));
  d.progress.phase = 'normal';

  await sleep(startedAt + runMs * 0.3 - Date.now(), d.signal);
  try {
    report.recovery = await killAndRestart(d);
  } catch (err) {
    if (d.signal.aborted) throw err;
    report.problems.push(`coordinator kill and restart: ${(err as Error).message}`);
    d.progress.event(`problem: ${(err as Error).message}`);
    // Without a running coordinator there is nothing more to show; the checks report the rest.
    if (!d.coordinator.running) return report;
  }
  d.progress.phase = 'normal';

  // The outage waits for the recovery to be over (at least 2 s of calm), so the two never overlap.
  await sleep(Math.max(startedAt + runMs * 0.6, Date.now() + 2_000) - Date.now(), d.signal);
  try {
    report.outage = await bankOutage(d, downMs);
  } catch (err) {
    if (d.signal.aborted) throw err;
    report.problems.push(`${d.outageBank} outage: ${(err as Error).message}`);
    d.progress.event(`problem: ${(err as Error).message}`);
  }
  d.progress.phase = 'normal';

  await sleep(Math.max(startedAt + runMs, Date.now() + 2_000) - Date.now(), d.signal);
  return report;
}
