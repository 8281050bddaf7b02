import { z } from 'zod';
import { componentResponses, componentSchemas, securitySchemes } from './openapi-components.ts';
import { countsQuery, lookupQuery, orphanBody, resolveBody } from './operator-routes.ts';
import { submitSchema } from './submit-schema.ts';
import { IDEMPOTENCY_KEY } from './submission.ts';
import { interactiveSchema, joinSchema, listQuery } from './transactions-routes.ts';

type Schema = Record<string, unknown>;

/** The JSON Schema of what a zod schema accepts: requests are described by the code that validates them, never twice. */
function inputSchema(schema: z.ZodType): Schema {
  const json = z.toJSONSchema(schema, { io: 'input', target: 'draft-2020-12', unrepresentable: 'any' }) as Schema;
  delete json.$schema; // the document's jsonSchemaDialect says it once
  return json;
}

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: Schema) => ({ 'application/json': { schema } });
const answer = (description: string, schema: Schema) => ({ description, content: json(schema) });
const body = (schema: Schema) => ({ required: true, content: json(schema) });
const reply = (name: string) => ({ $ref: `#/components/responses/${name}` });
const problem = (description: string) => ({ description, content: { 'application/problem+json': { schema: ref('Problem') } } });
const idParam = { name: 'id', in: 'path', required: true, schema: { type: 'string', format: 'uuid' } };
// OpenAPI 3.1 lets a non-OAuth requirement list role names: the token scope each operation needs.
const scope = (s: 'submit' | 'read' | 'operate') => ({ security: [{ bearer: [s] }] });
const open = { security: [] };
// Every authenticated operation may answer these (auth.ts), before its own checks run.
const denied = { 401: reply('Unauthorized'), 403: reply('Forbidden') };

const LIST_PARAM_DOCS: Record<string, string> = {
  status: 'Comma-separated transaction statuses, e.g. `committing,aborting`',
  inDoubt: 'Only transactions whose phase 2 keeps failing (true) or not (false)',
  resource: 'Only transactions with a branch on this resource',
  idPrefix: 'Only transactions whose id starts with these hex digits (dashes optional), e.g. the 8 the console shows',
  since: 'Created at or after (ISO 8601 with offset)',
  before: 'Created before (ISO 8601 with offset)',
  cursor: '`next` from the previous page',
  limit: 'Page size',
};

const LOOKUP_PARAM_DOCS: Record<string, string> = {
  id: 'A transaction id or its start (at least 4 hex digits; dashes optional, only where an id has them), e.g. the 8 the console shows',
  limit: 'At most this many candidates',
};

/** Query parameters, one per property of the zod schema that validates the query. */
function queryParameters(schema: z.ZodType, docs: Record<string, string>): Schema[] {
  const q = inputSchema(schema) as { properties: Record<string, Schema>; required?: string[] };
  return Object.entries(q.properties).map(([name, schema]) => ({
    name,
    in: 'query',
    required: q.required?.includes(name) ?? false,
    schema,
    ...(docs[name] ? { description: docs[name] } : {}),
  }));
}

/** The OpenAPI 3.1 document served at /openapi.json. test/openapi.test.ts checks it against the app's routes. */
export function openApiDocument(maxTimeoutMs: number): Record<string, unknown> {
  const begin = inputSchema(interactiveSchema) as { properties: Record<string, Schema> };
  // The route checks this bound itself (its message names TPC_MAX_TIMEOUT_MS's value), not in the zod schema.
  begin.properties.timeoutMs = { ...begin.properties.timeoutMs, maximum: maxTimeoutMs };
  const interactiveAnswer = (done: string) => ({
    200: answer(`${done}, as asked`, ref('InteractiveOutcome')),
    202: answer('Decided; phase 2 still running', ref('InteractiveOutcome')),
    409: answer(
      'It ended otherwise (a branch not really prepared, the deadline passed, already decided): the outcome and the `refusal`',
      ref('InteractiveOutcome'),
    ),
    400: reply('BadRequest'),
    ...denied,
    404: problem('Unknown transaction, or one this token did not begin or whose resources it may not use: the same answer, so an id confirms nothing'),
    503: reply('Unavailable'),
  });

  return {
    openapi: '3.1.0',
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    info: {
      title: 'tpc: two-phase-commit coordinator for PostgreSQL',
      version: '1',
      description: 'Errors are RFC 9457 application/problem+json with a stable `type` (`urn:tpc:problem:<code>`).',
    },
    components: {
      securitySchemes,
      schemas: {
        SubmitRequest: inputSchema(submitSchema(maxTimeoutMs)),
        InteractiveBeginRequest: begin,
        JoinRequest: inputSchema(joinSchema),
        ResolveRequest: inputSchema(resolveBody),
        OrphanResolveRequest: inputSchema(orphanBody),
        ...componentSchemas,
      },
      responses: componentResponses,
    },
    security: [{ bearer: [] }],
    paths: {
      '/v1/transactions': {
        post: {
          operationId: 'submitTransaction',
          summary: 'Run one transaction atomically across several databases, or begin an interactive one',
          description: 'Scope `submit`. With `"interactive": true`, begins a transaction whose branches the calling service runs and prepares itself.',
          ...scope('submit'),
          parameters: [
            {
              name: 'Idempotency-Key',
              in: 'header',
              required: false,
              schema: { type: 'string', pattern: IDEMPOTENCY_KEY.source },
              description:
                'The same key with the same body answers the first transaction again, with the header `Idempotent-Replayed: true`; ' +
                'with another body, 422. Scoped to the token.',
            },
          ],
          requestBody: body({ oneOf: [ref('SubmitRequest'), ref('InteractiveBeginRequest')] }),
          responses: {
            201: answer('Committed on every database; or an interactive transaction begun', { oneOf: [ref('Transaction'), ref('InteractiveBegin')] }),
            202: answer(
              'Decided (committing/aborting; preparing for a one-phase commit); phase 2 still running. `Location` to poll. ' +
                'Never sent for an undecided transaction (`active`): that is a 503',
              ref('Transaction'),
            ),
            409: answer(
              'Aborted; `error` says which branch, which statement and why. `error.code` log_lost_transaction: the log lost ' +
                "the transaction's record before any decision (a failover to a standby its begin record had not reached); its branches " +
                'were rolled back at once, nothing was applied, and it may be sent again. `error.code` abandoned (a repeated ' +
                'Idempotency-Key): the first attempt was begun but never run or decided; nothing was applied; send it with a new key',
              ref('Transaction'),
            ),
            400: problem('Malformed JSON, body too large, or a bad Idempotency-Key header'),
            ...denied,
            403: problem(
              'The token lacks the scope (forbidden), may not use a resource involved (forbidden-resource), or has `"sql": false` ' +
                'and sent a statement as `sql` rather than a template (raw-sql-forbidden)',
            ),
            422: problem(
              'The body breaks the contract or names an unknown statement template (validation); the Idempotency-Key was used ' +
                'with another body (idempotency-key-reused); or the statement guard refused a statement (statement_not_allowed: `branch` ' +
                'and `resource` name the branch, `statement` its index within the branch, `reason` why; `errors` lists every refused ' +
                'statement). Nothing was run or logged',
            ),
            503: {
              ...problem(
                'The log database is unreachable: nothing applied, or, when `detail` says so, an outcome recovery settles; a ' +
                  'transaction not decided yet (`detail` names it; ask again with the same Idempotency-Key or GET it); a resource is unusable (resource-unusable); or the service is ' +
                  'at capacity (overloaded): no slot on `resource` freed within TPC_ADMISSION_WAIT_MS, the admission queue was full, or a ' +
                  "PREPARE found its cluster's prepared-transaction slots all held (SQLSTATE 53200; the transaction, `transactionId`, was " +
                  'aborted). `reason` says which (queue_full, wait_timeout, no_capacity, prepare_refused); when the queue is full and every resource is ' +
                  'taken, the request is refused before its body is read. Nothing was applied; retry after `Retry-After`',
              ),
              headers: {
                'Retry-After': {
                  description: 'Seconds to wait before retrying; sent with every 503 (1 for an outage of the log or a database)',
                  schema: { type: 'integer', minimum: 1 },
                },
              },
            },
          },
        },
        get: {
          operationId: 'listTransactions',
          summary: 'Transactions, newest first, a page at a time',
          description: 'Scope `read`. A token limited to some resources sees only transactions wholly within them.',
          ...scope('read'),
          parameters: queryParameters(listQuery, LIST_PARAM_DOCS),
          responses: { 200: answer('A page', ref('TransactionPage')), ...denied, 422: reply('Invalid'), 503: reply('Unavailable') },
        },
      },
      '/v1/transactions/counts': {
        get: {
          operationId: 'countTransactions',
          summary: 'How many transactions per status, in doubt and heuristic',
          description:
            'Scope `read`. Filtered like the list by resource and creation window; a token limited to some resources counts only ' +
            'transactions wholly within them.',
          ...scope('read'),
          parameters: queryParameters(countsQuery, LIST_PARAM_DOCS),
          responses: { 200: answer('The counts', ref('TransactionCounts')), ...denied, 422: reply('Invalid'), 503: reply('Unavailable') },
        },
      },
      '/v1/transactions/lookup': {
        get: {
          operationId: 'lookupTransaction',
          summary: 'The transactions whose id starts with a prefix: one if it is unique, else the candidates',
          description: "Scope `read`. A range scan of the primary key, no pattern matching. Transactions outside the token's resources are not listed.",
          ...scope('read'),
          parameters: queryParameters(lookupQuery, LOOKUP_PARAM_DOCS),
          responses: {
            200: answer('The candidates, newest first; `unique` when the prefix names exactly one', ref('TransactionLookup')),
            ...denied,
            404: reply('NotFound'),
            422: reply('Invalid'),
            503: reply('Unavailable'),
          },
        },
      },
      '/v1/transactions/{id}': {
        get: {
          operationId: 'getTransaction',
          summary: "The log's view of a transaction, each branch's live state and the audit trail",
          description: 'Scope `read`. A token whose resources do not cover the transaction gets 404, as for an unknown id.',
          ...scope('read'),
          parameters: [idParam],
          responses: {
            200: answer('The transaction', ref('TransactionDetail')),
            400: reply('BadRequest'),
            ...denied,
            404: reply('NotFound'),
            503: reply('Unavailable'),
          },
        },
      },
      '/v1/transactions/{id}/commit': {
        post: {
          operationId: 'commitInteractive',
          summary: 'Commit an interactive transaction once the service has prepared every branch',
          description:
            'Scope `submit`, and only the token that began the transaction (any other gets 404, as for an unknown id; an operator uses /resolve). ' +
            'The coordinator looks every gid up in pg_prepared_xacts; a branch not really prepared, or a commit after the deadline, aborts everything.',
          ...scope('submit'),
          parameters: [idParam],
          responses: interactiveAnswer('Committed'),
        },
      },
      '/v1/transactions/{id}/abort': {
        post: {
          operationId: 'abortInteractive',
          summary: 'Roll an interactive transaction back',
          description: 'Scope `submit`, and only the token that began the transaction (any other gets 404, as for an unknown id; an operator uses /resolve).',
          ...scope('submit'),
          parameters: [idParam],
          responses: interactiveAnswer('Aborted'),
        },
      },
      '/v1/transactions/{id}/branches': {
        post: {
          operationId: 'joinInteractive',
          summary: 'Add a branch to an active interactive transaction, for another service to prepare under its gid',
          description:
            'Scope `submit`, and only the token that began the transaction (any other gets 404, as for an unknown id). ' +
            'The token must be allowed the resource (403 otherwise).',
          ...scope('submit'),
          parameters: [idParam],
          requestBody: body(ref('JoinRequest')),
          responses: {
            201: answer('The new branch', ref('JoinedBranch')),
            200: answer('The resource already had a branch in this transaction: that one (a retried join)', ref('JoinedBranch')),
            400: reply('BadRequest'),
            ...denied,
            404: problem('Unknown transaction, or one this token did not begin or whose resources it may not use: the same answer, so an id confirms nothing'),
            409: problem(
              'Not active (not-active), not interactive (not-interactive), past its deadline (deadline-passed), or lost to concurrent joins (busy: retry)',
            ),
            422: problem('The body breaks the contract, or names an unknown resource (validation)'),
            503: reply('Unavailable'),
          },
        },
      },
      '/v1/transactions/{id}/resolve': {
        post: {
          operationId: 'resolveTransaction',
          summary: 'An operator decides or drives a transaction recovery cannot finish alone',
          description:
            'Scope `operate`. Without a decision the outcome becomes it; with one, the same outcome drives completion and the ' +
            "opposite needs `force` (recorded as a heuristic outcome). Every call is written to the transaction's events.",
          ...scope('operate'),
          parameters: [idParam],
          requestBody: body(ref('ResolveRequest')),
          responses: {
            200: answer('What was done, and the transaction after it', ref('ResolveResult')),
            400: problem('Malformed JSON, or a body that breaks the contract, e.g. no reason (bad-resolution)'),
            ...denied,
            404: reply('NotFound'),
            409: problem('Refused: already-finished, against-decision, not-prepared, or busy (another process drives it)'),
            503: reply('Unavailable'),
          },
        },
      },
      '/v1/resources': {
        get: {
          operationId: 'listResources',
          summary: "Each resource's health and this namespace's prepared branches on it",
          description: 'Scope `read`. A token limited to some resources sees only those.',
          ...scope('read'),
          responses: { 200: answer('The resources', ref('ResourceList')), ...denied },
        },
      },
      '/v1/orphans': {
        get: {
          operationId: 'listOrphans',
          summary: 'Prepared branches of the namespace that the log does not know',
          description: 'Scope `read`. Reconciliation rolls them back once older than TPC_MAX_TIMEOUT_MS.',
          ...scope('read'),
          responses: { 200: answer('The orphans, and the resources that could not be asked', ref('OrphanList')), ...denied, 503: reply('Unavailable') },
        },
      },
      '/v1/orphans/resolve': {
        post: {
          operationId: 'resolveOrphan',
          summary: 'Roll an orphan back (presumed abort), or commit it when forced',
          description: 'Scope `operate`. Every call is written to the append-only tpc_audit table.',
          ...scope('operate'),
          requestBody: body(ref('OrphanResolveRequest')),
          responses: {
            200: answer('Done', ref('OrphanResolveResult')),
            400: problem('Malformed JSON, or a body that breaks the contract (bad-resolution)'),
            ...denied,
            404: problem('The gid is not an orphan of this namespace on that resource (not-found)'),
            409: problem('Commit without force (orphan-commit-refused), or finished by someone else meanwhile (orphan-gone)'),
            422: problem('Unknown resource (validation)'),
            503: reply('Unavailable'),
          },
        },
      },
      '/v1/session': {
        post: {
          operationId: 'createSession',
          summary: 'A one-hour session cookie for the queue dashboard, whose page cannot send an Authorization header',
          description:
            'Any valid token. The cookie (tpc_queues: HttpOnly, SameSite=Strict, Path=/queues, Secure over https) holds a signed, expiring value ' +
            "bound to the token's name, never the token; rotating or removing the token revokes it. Only /queues accepts it, never the API, and a change " +
            'made there with it (any method but GET, HEAD, OPTIONS) must come from a page of the same origin (Origin or Sec-Fetch-Site). ' +
            'With no tokens configured, no cookie is set.',
          responses: { 204: { description: 'Cookie set (tpc_queues)' }, 401: reply('Unauthorized') },
        },
      },
      '/': {
        get: {
          operationId: 'home',
          summary: 'Redirects to the operator console at /console/',
          ...open,
          responses: { 302: { description: 'Location: /console/' } },
        },
      },
      '/openapi.json': {
        get: { operationId: 'openApi', summary: 'This document', ...open, responses: { 200: answer('OpenAPI 3.1', { type: 'object' }) } },
      },
      '/healthz': {
        get: { operationId: 'health', summary: 'The process is up', ...open, responses: { 200: answer('up', ref('Health')) } },
      },
      '/readyz': {
        get: {
          operationId: 'readiness',
          summary: 'The log can be queried (its tables, as the hot path uses them) and Redis answers',
          description:
            '`checks` names each dependency; a failing one carries `error`, e.g. `relation "tpc_transactions" does not exist`, ' +
            '`permission denied for table tpc_events`, or `no connection to Redis (reconnecting)`. The log is probed on a connection of its own, ' +
            'so a saturated pool does not read as an outage.',
          ...open,
          responses: { 200: answer('ready', ref('Readiness')), 503: answer('not ready: the failing check says why', ref('Readiness')) },
        },
      },
      '/metrics': {
        get: {
          operationId: 'metrics',
          summary: 'Prometheus metrics',
          ...open,
          responses: { 200: { description: 'Prometheus text exposition format', content: { 'text/plain': { schema: { type: 'string' } } } } },
        },
      },
    },
  };
}
