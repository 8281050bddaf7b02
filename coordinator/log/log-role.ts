import { sql, type Kysely } from 'kysely';
import { ROLE_POWERS_SQL, rolePowersOf, type RolePowers } from '../../participant-adapter/role-powers.ts';
import type { LogDatabase } from './schema.ts';

/** The role the log's connections run as, and its powers beyond the log database (see role-powers.ts). */
export async function logRolePowers(db: Kysely<LogDatabase>): Promise<RolePowers> {
  const r = await sql.raw<Record<string, unknown>>(ROLE_POWERS_SQL).execute(db);
  return rolePowersOf(r.rows[0]!);
}
