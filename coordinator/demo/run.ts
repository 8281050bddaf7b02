import { join } from 'node:path';
import { DEMO_ACCOUNTS, DEMO_BANKS, startLocalEnvironment, type LocalEnvironment } from '../embedded/local-environment.ts';
import { resetBanks, setBankOnline } from './banks.ts';
import { CoordinatorChild } from './coordinator-child.ts';
import { DemoSettingsError, loadDemoSettings, type DemoSettings } from './demo-settings.ts';
import { Progress } from './progress.ts';
import { runScenario } from './scenario.ts';
import { waitUntilSettled } from './settle.ts';
import { verify } from './verify.ts';
import { Workload } from './workload.ts';

/*
 * `npm run demo`: on its own embedded environment, clients move money between three banks
 * through the coordinator while it is SIGKILLed and restarted and one bank goes offline; then
 * the databases themselves are checked. Exits 0 only if every check holds.
 */

const OUTAGE_BANK = 'bank_c';
// 2 s deadline per transfer: what bounds a cross-database lock cycle between two transfers, and
// how long transactions undecided at the kill wait before recovery aborts them.
const TX_TIMEOUT_MS = 2_000;
// Settling bounds: an earlier run's leftovers, then this run's last transfers and phase 2.
const LEFTOVER_LIMIT_MS = 30_000;
const DRAIN_LIMIT_MS = 90_000;
const SETTLE_LIMIT_MS = 60_000;

/** The coordinator's environment: the local one, quick recovery, quiet logs. */
function coordinatorEnv(settings: DemoSettings, local: LocalEnvironment): Record<string, string> {
  return {
    ...settings.inherited,
    ...local.env,
    HOST: '127.0.0.1',
    LOG_LEVEL: 'warn',
    // Phase-2 retries from 100 ms to 1 s: a bank that comes back is finished within a second.
    TPC_RETRY_BASE_MS: '100',
    TPC_RETRY_MAX_MS: '1000',
    // Half a second: the restarted coordinator finds what the dead one left soon after its deadline.
    TPC_RECONCILE_INTERVAL_MS: '500',
    // 1 s: a transfer held up by the offline bank is answered 202 quickly and asked again.
    TPC_COMPLETION_WAIT_MS: '1000',
    TPC_SHUTDOWN_TIMEOUT_MS: '3000',
  };
}

function say(line = ''): void {
  process.stdout.write(`${line}\n`);
}

/** Registers how to undo a step: gently at the end, and at once (synchronously) on a second Ctrl-C. */
type Cleanup = (gentle: () => Promise<void>, atOnce?: () => void) => void;

async function run(settings: DemoSettings, signal: AbortSignal, cleanup: Cleanup): Promise<number> {
  say(`tpc demo: ${settings.clients} clients move money between ${DEMO_BANKS.join(', ')} for ${settings.seconds} s through the coordinator;`);
  say('midway the coordinator is SIGKILLed and started again, later one bank goes offline and comes back.');
  say('At the end the banks themselves are checked: money conserved, every transfer on both banks or neither, nothing left prepared.');
  say();
  const progress = new Progress();
  const local = await startLocalEnvironment({ dataDir: settings.dataDir, pgBinDir: settings.pgBinDir });
  cleanup(async () => {
    await local.stop();
    progress.event('stopped Postgres and Redis');
  });
  const banks = JSON.parse(local.env.TPC_RESOURCES!) as Record<string, string>;
  const adminUrl = local.cluster.url();
  progress.event(
    `embedded environment in ${local.dataDir}: Postgres (data ${local.cluster.dataDir}) at ${local.cluster.host}:${local.cluster.port}, Redis at ${local.env.REDIS_URL}`,
  );
  // A run interrupted mid-outage left the bank refusing connections.
  for (const bank of Object.keys(banks)) await setBankOnline(adminUrl, bank, true);
  if (signal.aborted) return 130;

  const logFile = join(local.dataDir, 'coordinator.log');
  const coordinator = new CoordinatorChild(coordinatorEnv(settings, local), logFile);
  cleanup(
    async () => {
      await coordinator.close();
      progress.event(`stopped the coordinator (its log: ${logFile}; processes ${coordinator.pids.join(', ')})`);
    },
    () => coordinator.killNow(),
  );
  await coordinator.start();
  progress.event(`coordinator (pid ${coordinator.pid}) listening at ${coordinator.url}, a child process of the demo`);

  // Whatever an interrupted run left undecided or prepared is finished first, so the reset below
  // neither waits on its locks nor has its balances changed behind it.
  const leftovers = await waitUntilSettled({ url: coordinator.url, token: local.token!, banks, limitMs: LEFTOVER_LIMIT_MS, signal });
  if (!leftovers.settled && !signal.aborted) {
    throw new Error(
      `an earlier run left work the coordinator did not finish in ${LEFTOVER_LIMIT_MS / 1000} s: ` +
        `${[...leftovers.unfinished, ...leftovers.prepared].slice(0, 5).join('; ')}; remove ${local.dataDir} to start afresh`,
    );
  }
  if (signal.aborted) return 130;
  await resetBanks(banks);
  progress.event(`banks reset: ${DEMO_ACCOUNTS} accounts of 1000 each per bank, empty transfers ledgers`);

  const workload = new Workload({
    url: () => coordinator.url,
    token: local.token!,
    clients: settings.clients,
    banks: Object.keys(banks),
    accounts: DEMO_ACCOUNTS,
    timeoutMs: TX_TIMEOUT_MS,
  });
  const startedAt = Date.now();
  signal.addEventListener(
    'abort',
    () => {
      workload.abandon();
      progress.stop();
    },
    { once: true },
  );
  workload.start();
  progress.follow(workload);
  const scenario = await runScenario({ coordinator, workload, progress, adminUrl, outageBank: OUTAGE_BANK, seconds: settings.seconds, signal });

  progress.phase = 'draining';
  const drainTimer = setTimeout(() => workload.abandon(), DRAIN_LIMIT_MS);
  await workload.drain();
  clearTimeout(drainTimer);
  const workloadMs = Date.now() - startedAt;
  if (signal.aborted) return 130;
  progress.phase = 'settling';
  const settle = await waitUntilSettled({ url: coordinator.url, token: local.token!, banks, limitMs: SETTLE_LIMIT_MS, signal });
  progress.phase = 'verifying';
  progress.stop();

  const verdict = await verify({ banks, logUrl: local.env.DATABASE_URL!, transfers: workload.transfers, scenario, settle, workloadMs });
  say();
  say("verified summary (read back from the banks and the coordinator's log):");
  for (const line of verdict.lines) say(`  ${line}`);
  say(verdict.ok ? '  all checks hold' : '  SOME CHECKS FAILED');
  say();
  return verdict.ok ? 0 : 1;
}

async function main(): Promise<void> {
  let settings: DemoSettings;
  try {
    settings = loadDemoSettings(process.env, process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof DemoSettingsError)) throw err;
    process.stderr.write(`demo: ${err.message}\n`);
    process.exit(2);
  }
  const interrupt = new AbortController();
  // Undone in reverse order: the coordinator stops before the databases it talks to.
  const undo: { gentle: () => Promise<void>; atOnce?: () => void }[] = [];
  const cleanupAll = async () => {
    while (undo.length > 0) {
      await undo
        .pop()!
        .gentle()
        .catch((err: unknown) => process.stderr.write(`demo: cleanup: ${String(err)}\n`));
    }
  };
  let signals = 0;
  const onSignal = (name: string) => {
    signals++;
    if (signals === 1) {
      process.stderr.write(`\n${name}: stopping the workload, the coordinator, Postgres and Redis (again to leave at once)\n`);
      interrupt.abort(new Error(`interrupted by ${name}`));
    } else {
      // The second signal: leave now, but not with a detached coordinator still running; a Postgres
      // left behind is taken over by the environment's next start.
      for (const step of [...undo].reverse()) step.atOnce?.();
      process.exit(130);
    }
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));

  let code: number;
  try {
    code = await run(settings, interrupt.signal, (gentle, atOnce) => undo.push({ gentle, atOnce }));
  } catch (err) {
    if (interrupt.signal.aborted) {
      code = 130;
    } else {
      process.stderr.write(`\ndemo failed: ${err instanceof Error ? err.message : String(err)}\n`);
      code = 1;
    }
  }
  await cleanupAll();
  process.exit(code);
}

void main();
