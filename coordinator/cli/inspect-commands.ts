import { Command } from 'commander';
import type { Orphan, OrphansAnswer, ResourceReport, ResourcesAnswer } from './api-types.ts';
import { apiContext } from './context.ts';
import { formatTable, time, truncate, type Column } from './format.ts';
import { emit } from './output.ts';

const yesNo = (v: boolean) => (v ? 'yes' : 'no');

const RESOURCE_COLUMNS: Column<ResourceReport>[] = [
  { header: 'RESOURCE', value: (r) => r.resource },
  { header: 'KIND', value: (r) => r.kind },
  { header: 'REACHABLE', value: (r) => yesNo(r.reachable) },
  { header: 'USABLE', value: (r) => yesNo(r.usable) },
  { header: 'VERSION', value: (r) => r.serverVersion },
  { header: 'MAX PREPARED', value: (r) => r.maxPreparedTransactions, align: 'right' },
  { header: 'PREPARED', value: (r) => r.prepared, align: 'right' },
  { header: 'OLDEST (s)', value: (r) => r.oldestPreparedSeconds, align: 'right' },
  { header: 'MESSAGE', value: (r) => (r.message ? truncate(r.message, 60) : '') },
];

export function renderResources(a: ResourcesAnswer): string {
  return a.items.length ? formatTable(RESOURCE_COLUMNS, a.items) : 'no resources visible to this token\n';
}

const ORPHAN_COLUMNS: Column<Orphan>[] = [
  { header: 'RESOURCE', value: (o) => o.resource },
  { header: 'GID', value: (o) => o.gid },
  { header: 'TRANSACTION', value: (o) => o.transactionId },
  { header: 'PREPARED AT', value: (o) => time(o.preparedAt) },
  { header: 'AGE (s)', value: (o) => o.ageSeconds, align: 'right' },
];

export function renderOrphans(a: OrphansAnswer): string {
  const body = a.items.length ? formatTable(ORPHAN_COLUMNS, a.items) : 'no orphaned prepared branches\n';
  return a.unreachable.length ? `${body}not checked (unreachable): ${a.unreachable.join(', ')}\n` : body;
}

export function resourcesCommand(): Command {
  return new Command('resources')
    .description('each participant database: reachable, usable, prepared branches of the namespace')
    .action(async (_o: unknown, cmd: Command) => {
      const { config, api } = apiContext(cmd);
      emit(config.json, await api.get<ResourcesAnswer>('/v1/resources'), renderResources);
    });
}

export function orphansCommand(): Command {
  return new Command('orphans').description('prepared branches of the namespace that the log does not know').action(async (_o: unknown, cmd: Command) => {
    const { config, api } = apiContext(cmd);
    emit(config.json, await api.get<OrphansAnswer>('/v1/orphans'), renderOrphans);
  });
}
