import type { Migration } from 'kysely';
import * as m0001 from './0001_log_schema.ts';
import * as m0002 from './0002_recovery.ts';
import * as m0003 from './0003_operator_audit.ts';
import * as m0004 from './0004_branch_joins.ts';
import * as m0005 from './0005_lean_log.ts';
import * as m0006 from './0006_hot_decisions.ts';

/** Append-only: a landed migration is never edited, only followed by a new one. */
export const migrations: Record<string, Migration> = {
  '0001_log_schema': m0001,
  '0002_recovery': m0002,
  '0003_operator_audit': m0003,
  '0004_branch_joins': m0004,
  '0005_lean_log': m0005,
  '0006_hot_decisions': m0006,
};
