import { Command, InvalidArgumentError } from 'commander';
import { TX_STATUSES } from '../engine/states.ts';
import type { ResolveAnswer, TransactionDetail, TransactionPage } from './api-types.ts';
import { apiContext } from './context.ts';
import { UsageError } from './errors.ts';
import { emit } from './output.ts';
import { resolveTransactionId } from './short-id.ts';
import { renderDetail, renderList, renderResolve } from './tx-render.ts';

function parseLimit(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > 200) throw new InvalidArgumentError('must be an integer from 1 to 200');
  return n;
}

function parseStatuses(v: string): string {
  const list = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const unknown = list.filter((s) => !(TX_STATUSES as readonly string[]).includes(s));
  if (list.length === 0 || unknown.length) throw new InvalidArgumentError(`expected a comma-separated list of ${TX_STATUSES.join(', ')}`);
  return list.join(',');
}

function parseTime(v: string): string {
  if (Number.isNaN(Date.parse(v))) throw new InvalidArgumentError('expected an ISO 8601 time, e.g. 2025-01-31T12:00:00Z');
  return new Date(v).toISOString();
}

const encodeId = (id: string) => encodeURIComponent(id);

export function txCommand(): Command {
  const tx = new Command('tx').description('list, inspect and resolve transactions');

  tx.command('list')
    .description('transactions, newest first')
    .option('--in-doubt', 'only transactions flagged in doubt')
    .option('--status <s,...>', `only these statuses (${TX_STATUSES.join(', ')})`, parseStatuses)
    .option('--resource <r>', 'only transactions with a branch on this resource')
    .option('--since <time>', 'created at or after (ISO 8601)', parseTime)
    .option('--before <time>', 'created before (ISO 8601)', parseTime)
    .option('--limit <n>', 'at most n items (1-200, default 50)', parseLimit)
    .option('--cursor <c>', 'the next page, from a previous answer')
    .action(
      async (o: { inDoubt?: boolean; status?: string; resource?: string; since?: string; before?: string; limit?: number; cursor?: string }, cmd: Command) => {
        const { config, api } = apiContext(cmd);
        const page = await api.get<TransactionPage>('/v1/transactions', {
          status: o.status,
          inDoubt: o.inDoubt ? true : undefined,
          resource: o.resource,
          since: o.since,
          before: o.before,
          limit: o.limit,
          cursor: o.cursor,
        });
        emit(config.json, page, renderList);
      },
    );

  tx.command('show')
    .description('one transaction: branches with their live state, and the audit trail')
    .argument('<id>', 'transaction id, or its start as the console shows it (8 hex digits) when no other id starts so')
    .action(async (id: string, _o: unknown, cmd: Command) => {
      const { config, api } = apiContext(cmd);
      const full = await resolveTransactionId(api, id);
      emit(config.json, await api.get<TransactionDetail>(`/v1/transactions/${encodeId(full)}`), renderDetail);
    });

  tx.command('resolve')
    .description('resolve a transaction recovery cannot finish (exactly one of --commit, --abort)')
    .argument('<id>', 'transaction id, or its start as the console shows it when no other id starts so')
    .option('--commit', 'resolve as commit')
    .option('--abort', 'resolve as abort')
    .option('--reason <text>', 'why (required; recorded in the audit trail)')
    .option('--force', 'act against a durable decision: recorded as a heuristic outcome')
    .action(async (id: string, o: { commit?: boolean; abort?: boolean; reason?: string; force?: boolean }, cmd: Command) => {
      if (Boolean(o.commit) === Boolean(o.abort)) throw new UsageError('exactly one of --commit or --abort is required');
      if (o.reason === undefined || o.reason.trim() === '') throw new UsageError('--reason "<why>" is required');
      const { config, api } = apiContext(cmd);
      const full = await resolveTransactionId(api, id);
      const answer = await api.post<ResolveAnswer>(`/v1/transactions/${encodeId(full)}/resolve`, {
        outcome: o.commit ? 'commit' : 'abort',
        reason: o.reason,
        force: o.force === true,
      });
      emit(config.json, answer, renderResolve);
    });

  return tx;
}
