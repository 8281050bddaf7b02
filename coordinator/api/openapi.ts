import { z } from 'zod';
import type { SubmitSchema } from './submit-schema.ts';

const problem = { $ref: '#/components/schemas/Problem' };
const problemResponse = (description: string) => ({ description, content: { 'application/problem+json': { schema: problem } } });

/** The OpenAPI 3.1 document served at /openapi.json; the request schema is derived from the zod schema that validates it. */
export function openApiDocument(schema: SubmitSchema): Record<string, unknown> {
  const request = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' }) as Record<string, unknown>;
  delete request.$schema;
  const view = { $ref: '#/components/schemas/Transaction' };
  return {
    openapi: '3.1.0',
    info: { title: 'tpc: two-phase-commit coordinator for PostgreSQL', version: '1' },
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: {
        SubmitRequest: request,
        Problem: {
          type: 'object', required: ['type', 'title', 'status'],
          properties: { type: { type: 'string' }, title: { type: 'string' }, status: { type: 'integer' }, detail: { type: 'string' }, instance: { type: 'string' }, errors: { type: 'array' } },
        },
        JoinedBranch: {
          type: 'object', required: ['index', 'resource', 'gid', 'deadline'],
          properties: { index: { type: 'integer' }, resource: { type: 'string' }, gid: { type: 'string' }, deadline: { type: 'string', format: 'date-time' } },
        },
        TxError: {
          type: ['object', 'null'],
          properties: { resource: { type: ['string', 'null'] }, statement: { type: ['integer', 'null'] }, code: { type: 'string' }, message: { type: 'string' } },
        },
        Transaction: {
          type: 'object', required: ['id', 'status', 'branches', 'error'],
          properties: {
            id: { type: 'string', format: 'uuid' },
            status: { enum: ['active', 'preparing', 'committing', 'aborting', 'committed', 'aborted'] },
            branches: {
              type: 'array',
              items: {
                type: 'object',
                properties: {
                  resource: { type: 'string' },
                  status: { enum: ['active', 'prepared', 'committed', 'aborted'] },
                  readOnly: { type: 'boolean' },
                  results: { type: 'array', items: { type: 'object', properties: { rowCount: { type: 'integer' }, rows: { type: 'array', items: { type: 'object' } } } } },
                },
              },
            },
            error: { $ref: '#/components/schemas/TxError' },
            events: {
              type: 'array',
              items: { type: 'object', properties: { at: { type: 'string', format: 'date-time' }, kind: { type: 'string' }, actor: { type: ['string', 'null'] }, detail: { type: 'object' } } },
            },
          },
        },
      },
    },
    security: [{ bearer: [] }],
    paths: {
      '/v1/transactions': {
        post: {
          summary: 'Run one transaction atomically across several databases',
          parameters: [{ name: 'Idempotency-Key', in: 'header', required: false, schema: { type: 'string', maxLength: 255 } }],
          requestBody: { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/SubmitRequest' } } } },
          responses: {
            201: { description: 'Committed on every database', content: { 'application/json': { schema: view } } },
            202: { description: 'Decided; phase 2 still running', content: { 'application/json': { schema: view } } },
            409: { description: 'Aborted; error says why', content: { 'application/json': { schema: view } } },
            400: problemResponse('Malformed JSON, body too large, bad Idempotency-Key'),
            401: problemResponse('No or unknown token'),
            403: problemResponse('Token lacks the scope or a resource'),
            422: problemResponse('The body breaks the contract, or the Idempotency-Key was used with another body'),
            503: problemResponse('Log database unreachable, or a resource unusable'),
          },
        },
      },
      '/v1/transactions/{id}': {
        get: {
          summary: "The log's view of a transaction, with its audit trail",
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string', format: 'uuid' } }],
          responses: {
            200: { description: 'The transaction', content: { 'application/json': { schema: view } } },
            401: problemResponse('No or unknown token'),
            403: problemResponse('Token lacks the scope or a resource'),
            404: problemResponse('Unknown transaction'),
          },
        },
      },
      '/v1/transactions/{id}/branches': {
        post: {
          summary: 'Add a branch to an active interactive transaction, for another service to prepare under its gid',
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string', format: 'uuid' } }],
          requestBody: {
            required: true,
            content: { 'application/json': { schema: { type: 'object', additionalProperties: false, required: ['resource'], properties: { resource: { type: 'string', minLength: 1, maxLength: 63 } } } } },
          },
          responses: {
            201: { description: 'The new branch', content: { 'application/json': { schema: { $ref: '#/components/schemas/JoinedBranch' } } } },
            200: { description: 'The resource already had a branch in this transaction: that one (a retried join)', content: { 'application/json': { schema: { $ref: '#/components/schemas/JoinedBranch' } } } },
            400: problemResponse('Malformed JSON, body too large'),
            401: problemResponse('No or unknown token'),
            403: problemResponse('Token lacks the scope, the resource, or a resource of the transaction'),
            404: problemResponse('Unknown transaction'),
            409: problemResponse('Not active (type not-active), not interactive (not-interactive), or past its deadline (deadline-passed)'),
            422: problemResponse('The body breaks the contract, or names an unknown resource'),
          },
        },
      },
      '/healthz': { get: { security: [], summary: 'The process is up', responses: { 200: { description: 'up' } } } },
      '/readyz': { get: { security: [], summary: 'Log database and Redis reachable', responses: { 200: { description: 'ready' }, 503: { description: 'not ready' } } } },
      '/metrics': { get: { security: [], summary: 'Prometheus metrics', responses: { 200: { description: 'metrics' } } } },
    },
  };
}
