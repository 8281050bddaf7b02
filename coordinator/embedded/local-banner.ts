import { relative } from 'node:path';
import { safeUrl } from '../observability/logger.ts';
import { DEMO_ACCOUNTS, DEMO_BALANCE, ROLE_PASSWORDS_FILE, type LocalEnvironment } from './local-environment.ts';

/** What a newcomer needs on screen once the embedded default is up: where, what, and a first request. */
export function localBanner(url: string, local: LocalEnvironment): string {
  const auth = local.token ? ` -H 'authorization: Bearer ${local.token}'` : ` -H "authorization: Bearer $TOKEN"`;
  const rel = relative(process.cwd(), local.dataDir);
  const dir = rel === '' ? '.' : rel.startsWith('..') ? local.dataDir : rel;
  const body = JSON.stringify({
    branches: [
      { resource: 'bank_a', statements: [{ sql: 'UPDATE accounts SET balance = balance - $1 WHERE id = $2 AND balance >= $1', params: [100, 1], expect: { rowCount: 1 } }] },
      { resource: 'bank_b', statements: [{ sql: 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', params: [100, 7] }] },
    ],
  });
  return `
  tpc is running on its embedded default (kept in ${dir}/, reused next time; Ctrl-C stops everything it started)

  coordinator  ${url}            console  ${url}/console/
  resources    ${local.resources.join(', ')} (table accounts: ids 1..${DEMO_ACCOUNTS}, ${DEMO_BALANCE} each when first created)
  log          ${safeUrl(local.env.DATABASE_URL!)}   (each database has a role of its own; passwords in ${dir}/${ROLE_PASSWORDS_FILE})
  dev token    ${local.token ?? '(yours, from TPC_API_TOKENS)'}${local.token ? `   (all scopes; kept in ${dir}/dev-token)` : ''}

  move 100 from bank_a account 1 to bank_b account 7, atomically:

    curl -s -X POST ${url}/v1/transactions${auth} -H 'content-type: application/json' -d '${body}'

  then look at it:  curl -s${auth} '${url}/v1/transactions?limit=1'

`;
}
