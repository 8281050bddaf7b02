import { BRANCH_STATUSES, TX_STATUSES } from '../engine/states.ts';

/**
 * The response side of the OpenAPI document: JSON Schemas of what the routes answer, written once
 * here from the types they are built from (engine/types.ts, log/transaction-list.ts,
 * operator/inspection.ts, operator/resolve.ts). Objects are closed (additionalProperties: false)
 * so that test/openapi.test.ts fails when an answer grows a field this file does not describe.
 * The request side is generated from the zod schemas (openapi.ts).
 */

type Schema = Record<string, unknown>;

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const closed = (properties: Record<string, Schema>, optional: string[] = []): Schema => ({
  type: 'object',
  required: Object.keys(properties).filter((k) => !optional.includes(k)),
  properties,
  additionalProperties: false,
});
const str = { type: 'string' };
const int = { type: 'integer' };
const bool = { type: 'boolean' };
const time = { type: 'string', format: 'date-time' };
const timeOrNull = { type: ['string', 'null'], format: 'date-time' };
const uuid = { type: 'string', format: 'uuid' };
// The log stores these as JSON without a fixed shape (a driver error, a participant's answer).
const anyJson = { description: 'free-form JSON, or null' };

/** TransactionView (engine/types.ts): the answer to a submission. */
const transactionProperties: Record<string, Schema> = {
  id: uuid,
  status: { enum: [...TX_STATUSES] },
  branches: {
    type: 'array',
    items: closed({
      resource: str,
      status: { enum: [...BRANCH_STATUSES] },
      readOnly: { ...bool, description: 'wrote nothing: took no part in the decision' },
      results: { type: 'array', items: closed({ rowCount: int, rows: { type: 'array', items: { type: 'object' } } }) },
    }),
  },
  error: ref('TxError'),
};

/** TransactionDetail (engine/types.ts): the view plus what the log and the databases say. */
const detailProperties: Record<string, Schema> = {
  ...transactionProperties,
  branchDetails: { type: 'array', items: ref('LiveBranch') },
  inDoubt: { ...bool, description: 'phase 2 keeps failing' },
  heuristic: { ...bool, description: 'a branch ended against the decision' },
  attempts: int,
  lastError: anyJson,
  deadline: time,
  createdAt: time,
  decidedAt: timeOrNull,
  completedAt: timeOrNull,
  onePhase: bool,
  events: {
    type: 'array',
    description: 'the audit trail',
    items: closed({ at: time, kind: str, actor: { type: ['string', 'null'] }, detail: { type: 'object' } }),
  },
};

export const componentSchemas: Record<string, Schema> = {
  Problem: {
    type: 'object',
    description: 'RFC 9457 problem details; clients switch on `type`, which never changes once published.',
    required: ['type', 'title', 'status'],
    properties: {
      type: { type: 'string', pattern: '^urn:tpc:problem:[A-Za-z0-9_-]+$' },
      title: str,
      status: { type: 'integer', minimum: 400, maximum: 599 },
      detail: str,
      instance: str,
      errors: { type: 'array', description: 'every validation issue, or every refused statement', items: closed({ path: str, message: str }) },
      branch: { ...int, description: 'statement_not_allowed: index of the branch of the (first) refused statement' },
      statement: { ...int, description: 'statement_not_allowed: index of the refused statement within its branch' },
      reason: { ...str, description: "why; for statement_not_allowed, the statement guard's sentence naming the statement type or function" },
    },
    // Extensions (e.g. `resource` on resource-unusable) are allowed by RFC 9457.
    additionalProperties: true,
  },
  TxError: {
    oneOf: [
      { type: 'null' },
      closed({
        resource: { type: ['string', 'null'] },
        statement: { type: ['integer', 'null'], description: 'index of the statement within its branch' },
        code: { ...str, description: 'SQLSTATE, or a coordinator code such as deadline_exceeded, expectation_failed, log_lost_transaction or abandoned' },
        message: str,
      }),
    ],
  },
  Transaction: closed(transactionProperties),
  LiveBranch: closed(
    {
      resource: str,
      gid: str,
      xid: { type: ['string', 'null'] },
      heuristic: { type: ['string', 'null'] },
      lastError: anyJson,
      live: {
        description: 'what the database says now; only while the transaction is unfinished',
        oneOf: [
          closed({ reachable: { const: true }, prepared: bool, preparedAt: timeOrNull, locks: { type: ['integer', 'null'] } }),
          closed({ reachable: { const: false }, error: str }),
        ],
      },
    },
    ['live'],
  ),
  TransactionDetail: closed(detailProperties, ['branchDetails']),
  InteractiveOutcome: closed(
    {
      ...detailProperties,
      refusal: { ...closed({ code: str, message: str }), description: 'why the commit or abort was refused' },
    },
    ['branchDetails', 'refusal'],
  ),
  InteractiveBegin: closed({
    id: uuid,
    status: { const: 'active' },
    deadline: time,
    branches: { type: 'array', items: closed({ resource: str, gid: { ...str, description: "PREPARE TRANSACTION '<gid>' ends the branch" } }) },
  }),
  JoinedBranch: closed({ index: int, resource: str, gid: str, deadline: time }),
  TransactionSummary: closed({
    id: uuid,
    status: { enum: [...TX_STATUSES] },
    createdAt: time,
    deadline: time,
    decidedAt: timeOrNull,
    completedAt: timeOrNull,
    inDoubt: bool,
    heuristic: bool,
    attempts: int,
    lastError: anyJson,
    error: anyJson,
    resources: { type: 'array', items: str },
  }),
  TransactionPage: closed({
    items: { type: 'array', items: ref('TransactionSummary') },
    next: { type: ['string', 'null'], description: 'pass as `cursor` for the next page; null on the last' },
  }),
  TransactionCounts: closed({
    byStatus: { ...closed(Object.fromEntries(TX_STATUSES.map((s) => [s, int]))), description: 'every status, zeros included' },
    inDoubt: int,
    heuristic: int,
    total: int,
  }),
  TransactionLookup: closed({
    items: { type: 'array', items: ref('TransactionSummary') },
    unique: { ...bool, description: 'the prefix names exactly one transaction: items[0]' },
    more: { ...bool, description: 'more candidates than `limit`: type more of the id' },
  }),
  ResourceReport: closed({
    resource: str,
    kind: { enum: ['postgres', 'http'], description: "its own pool, or the database's participant router" },
    reachable: bool,
    usable: { ...bool, description: 'false when max_prepared_transactions is 0' },
    serverVersion: { type: ['string', 'null'] },
    maxPreparedTransactions: { type: ['integer', 'null'] },
    prepared: { type: ['integer', 'null'], description: "branches of this coordinator's namespace prepared there" },
    oldestPreparedSeconds: { type: ['integer', 'null'] },
    message: { type: ['string', 'null'] },
  }),
  ResourceList: closed({ items: { type: 'array', items: ref('ResourceReport') } }),
  Orphan: closed({ resource: str, gid: str, transactionId: { type: ['string', 'null'], format: 'uuid' }, preparedAt: time, ageSeconds: int }),
  OrphanList: closed({ items: { type: 'array', items: ref('Orphan') }, unreachable: { type: 'array', items: str } }),
  ResolveResult: closed({
    action: { enum: ['decided', 'drove', 'forced', 'nothing'] },
    result: { enum: ['finished', 'pending', 'busy', 'not-due', 'gone'] },
    transaction: ref('TransactionDetail'),
  }),
  OrphanResolveResult: closed({ result: { enum: ['rolled-back', 'committed'] } }),
  Health: closed({ status: { const: 'ok' } }),
  Readiness: closed({
    status: { enum: ['ready', 'unavailable'] },
    checks: { type: 'object', additionalProperties: closed({ ok: bool, error: str }, ['error']) },
  }),
};

const problemResponse = (description: string) => ({ description, content: { 'application/problem+json': { schema: ref('Problem') } } });

/** Answers shared by many operations; each operation refers to them by name. */
export const componentResponses: Record<string, Schema> = {
  BadRequest: problemResponse('Malformed JSON, a body over TPC_BODY_LIMIT, or a path with malformed percent-encoding (malformed-url)'),
  Unauthorized: problemResponse('No token, or not a valid one (when TPC_API_TOKENS is set)'),
  Forbidden: problemResponse('The token lacks the scope (forbidden), or may not use a resource involved (forbidden-resource)'),
  NotFound: problemResponse('Unknown transaction'),
  Invalid: problemResponse('The body or query breaks the contract (validation): `errors` lists every issue'),
  Unavailable: problemResponse('The log database is unreachable: nothing was done'),
};

export const securitySchemes = {
  bearer: {
    type: 'http',
    scheme: 'bearer',
    description:
      'A token from TPC_API_TOKENS; its scopes (submit, read, operate) and resources limit what it may do. ' +
      'With no tokens configured (loopback only) every request is allowed.',
  },
};
