import { relative } from 'node:path';
import { QUEUE_BOARD_PATH } from '../api/queue-board.ts';
import { safeUrl } from '../observability/logger.ts';
import { DEMO_ACCOUNTS, DEMO_BALANCE, ROLE_PASSWORDS_FILE, type LocalEnvironment } from './local-environment.ts';

/**
 * What a newcomer needs on screen once the embedded default is up: where, what, and a first request.
 *
 * The banks' URLs carry their passwords, so they can be pasted into a pg.Pool or psql as they are:
 * these are demo databases on a loopback-only cluster, their passwords are dev secrets already kept
 * in the data directory for this user, and the banner already shows the dev token, which can write
 * to every bank through the coordinator. The log's password is not shown: the log is the
 * coordinator's state (a decision edited by hand breaks the protocol's guarantees), so its URL is
 * not one to paste by accident; the file holding it is named instead.
 */
export function localBanner(url: string, local: LocalEnvironment): string {
  const auth = local.token ? ` -H 'authorization: Bearer ${local.token}'` : ` -H "authorization: Bearer $TOKEN"`;
  const rel = relative(process.cwd(), local.dataDir);
  const dir = rel === '' ? '.' : rel.startsWith('..') ? local.dataDir : rel;
  const body = JSON.stringify({
    branches: [
      {
        resource: 'bank_a',
        statements: [{ sql: 'UPDATE accounts SET balance = balance - $1 WHERE id = $2 AND balance >= $1', params: [100, 1], expect: { rowCount: 1 } }],
      },
      { resource: 'bank_b', statements: [{ sql: 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', params: [100, 7] }] },
    ],
  });
  const pad = (label: string) => label.padEnd(11);
  const banks = Object.entries(local.bankUrls)
    .map(([bank, bankUrl]) => `    ${pad(bank)}${bankUrl}`)
    .join('\n');
  const redis = local.redisUrl ?? `${safeUrl(local.env.REDIS_URL!)}   (yours, from REDIS_URL)`;
  return `
  tpc is running on its embedded default (kept in ${dir}/, reused next time; Ctrl-C stops everything it started)

  coordinator  ${url}
  console      ${url}/console/        (sign in with the dev token)
  queues       ${url}${QUEUE_BOARD_PATH}/         (Bull Board, operate scope: sign in to the console first)
  openapi      ${url}/openapi.json
  api docs     ${url}/docs/   (the OpenAPI document, readable)
  dev token    ${local.token ?? '(yours, from TPC_API_TOKENS)'}${local.token ? `   (all scopes; kept in ${dir}/dev-token)` : ''}

  resources    ${local.resources.join(', ')} (table accounts: ids 1..${DEMO_ACCOUNTS}, ${DEMO_BALANCE} each when first created), each for its own role:
${banks}
  log          ${safeUrl(local.env.DATABASE_URL!)}   (the coordinator's own: password in ${dir}/${ROLE_PASSWORDS_FILE})
  redis        ${redis}
  (Postgres and Redis keep their ports from one start to the next while nothing else takes them)

  move 100 from bank_a account 1 to bank_b account 7, atomically:

    curl -s -X POST ${url}/v1/transactions${auth} -H 'content-type: application/json' -d '${body}'

  then look at it:  curl -s${auth} '${url}/v1/transactions?limit=1'

`;
}
