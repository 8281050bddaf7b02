import { setFlagsFromString } from 'node:v8';

const FLAG = '--heap-growing-percent';

/**
 * How far V8 lets the old generation grow past what its last full collection kept before it
 * collects again. V8's default scales with the largest heap the machine allows: on a machine with
 * gigabytes to spare it lets the heap reach up to four times the live data. The coordinator keeps
 * little alive (about 35 MB with 10 000 transactions waiting on a participant), but a long outage
 * promotes much short-lived garbage (every retried phase 2), so RSS wandered between 203 and
 * 284 MiB from run to run with the same code: over the 256 MiB a container limit might be set to.
 * A fixed factor bounds the peak by what is alive instead (README, "Memory"; bench/RESULTS.md).
 *
 * Not a cap: the heap still grows as far as the live data needs. A `--heap-growing-percent` given
 * to Node by the operator wins. Applies to the process that calls it: only the service's own entry
 * points, never an application that embeds the coordinator.
 */
export function applyHeapGrowth(percent: number, execArgv: readonly string[] = process.execArgv): boolean {
  if (percent <= 0) return false;
  if (execArgv.some((a) => a === FLAG || a.startsWith(`${FLAG}=`) || a.startsWith('--heap_growing_percent'))) return false;
  setFlagsFromString(`${FLAG}=${percent}`);
  return true;
}
