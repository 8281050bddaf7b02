import type { Participant } from '../../participant-adapter/participant.ts';
import type { LiveBranch } from './types.ts';

// 1 s: an operator's page must come back even when a participant is down; it then says so.
const LIVE_VIEW_TIMEOUT_MS = 1_000;

/** What a branch's database says of it now, bounded so that an unreachable one cannot stall the answer. */
export async function liveBranch(participants: ReadonlyMap<string, Participant>, resource: string, gid: string): Promise<NonNullable<LiveBranch['live']>> {
  const participant = participants.get(resource);
  if (!participant) return { reachable: false, error: `resource ${resource} is not configured` };
  let timer: NodeJS.Timeout | undefined;
  try {
    const seen = await Promise.race([
      participant.inspectPrepared(gid),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${LIVE_VIEW_TIMEOUT_MS} ms`)), LIVE_VIEW_TIMEOUT_MS);
      }),
    ]);
    return { reachable: true, prepared: seen !== null, preparedAt: seen ? seen.preparedAt.toISOString() : null, locks: seen?.locks ?? null };
  } catch (err) {
    return { reachable: false, error: err instanceof Error ? err.message : String(err) };
  } finally {
    clearTimeout(timer);
  }
}
