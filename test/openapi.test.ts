import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWorld, transfer, type HttpAnswer, type World } from './harness/world.ts';

/*
 * The document at GET /openapi.json against the running coordinator: it is valid OpenAPI 3.1, it
 * names exactly the routes the express app has (read from the app's router stack, so a route added
 * without documentation fails here), and real answers validate against the schemas it documents.
 */

// Mounted UIs, not API: the operator console's static files, the Bull Board and the API's own
// documentation page. Any other mount fails the test.
const UI_MOUNTS = ['/console', '/queues', '/docs'];
const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace'];

interface Layer {
  rawPath?: unknown;
  route?: { path: string; methods: Record<string, boolean> };
  handle?: { stack?: Layer[] };
}

/** "METHOD /path/{param}" for every route of an express 5 router, recursing into mounted routers; mount points collected apart. */
function routesOf(stack: Layer[], prefix = '', mounts = new Set<string>()): { routes: Set<string>; mounts: Set<string> } {
  const routes = new Set<string>();
  for (const layer of stack) {
    const path = typeof layer.rawPath === 'string' && layer.rawPath !== '/' ? prefix + layer.rawPath : prefix;
    if (layer.route) {
      for (const [method, on] of Object.entries(layer.route.methods)) {
        if (on) routes.add(`${method.toUpperCase()} ${(prefix + layer.route.path).replace(/:(\w+)/g, '{$1}')}`);
      }
    } else if (path !== prefix) {
      mounts.add(path); // middleware or a router under a path of its own: a UI, never descended into
    } else if (layer.handle?.stack) {
      for (const r of routesOf(layer.handle.stack, prefix, mounts).routes) routes.add(r);
    }
  }
  return { routes, mounts };
}

function documentedOperations(doc: any): Set<string> {
  const ops = new Set<string>();
  for (const [path, item] of Object.entries<Record<string, unknown>>(doc.paths)) {
    for (const method of Object.keys(item).filter((k) => METHODS.includes(k))) ops.add(`${method.toUpperCase()} ${path}`);
  }
  return ops;
}

describe('OpenAPI document', () => {
  let world: World;
  let doc: any;
  let resolved: any;
  const ajv = new Ajv2020({ allErrors: true, strict: true });
  addFormats.default(ajv);

  beforeAll(async () => {
    world = await createWorld();
    const res = await world.request('GET', '/openapi.json', undefined, { token: null });
    expect(res.status).toBe(200);
    doc = res.body;
    const validator = new Validator();
    const valid = await validator.validate(doc);
    expect(valid.errors, JSON.stringify(valid.errors)).toBeUndefined();
    expect(valid.valid).toBe(true);
    expect(validator.version).toBe('3.1');
    // Inlined $refs, so each schema below compiles on its own.
    resolved = validator.resolveRefs();
  });
  afterAll(async () => {
    await world?.close();
  });

  /** The schema documented for this answer; fails if the status or content type is undocumented. */
  function documented(path: string, method: string, res: HttpAnswer): object {
    const responses = resolved.paths[path]?.[method.toLowerCase()]?.responses;
    const content = responses?.[String(res.status)]?.content;
    expect(content, `${method} ${path} ${res.status} is not documented`).toBeDefined();
    const type = res.headers.get('content-type')!.split(';')[0]!;
    expect(Object.keys(content), `${method} ${path} ${res.status}`).toContain(type);
    return content[type].schema;
  }

  function expectDocumented(path: string, method: string, res: HttpAnswer): void {
    const validate = ajv.compile(documented(path, method, res));
    expect(validate(res.body), `${method} ${path} ${res.status}: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(res.body)}`).toBe(true);
  }

  it('is valid OpenAPI 3.1 whose every schema is valid JSON Schema 2020-12', () => {
    // strict: an unknown keyword or a misspelt one is an error, not a silently ignored annotation.
    for (const [name, schema] of Object.entries<object>(resolved.components.schemas)) {
      expect(() => ajv.compile(schema), name).not.toThrow();
    }
    expect(doc.paths['/healthz'].get.security).toEqual([]);
    expect(doc.paths['/v1/transactions'].post.security).toEqual([{ bearer: ['submit'] }]);
  });

  it('documents every route the app has, and nothing else', () => {
    const app = world.service.app as unknown as { router: { stack: Layer[] } };
    const { routes, mounts } = routesOf(app.router.stack);
    expect([...mounts].sort()).toEqual([...UI_MOUNTS].sort());
    expect([...documentedOperations(doc)].sort()).toEqual([...routes].sort());
    // The walk found the routes of every router, not only the app's own.
    expect(routes).toContain('POST /v1/transactions/{id}/resolve');
    expect(routes).toContain('GET /readyz');
  });

  it('generates request schemas from the zod schemas that validate them', () => {
    const body = ajv.compile(resolved.paths['/v1/transactions'].post.requestBody.content['application/json'].schema);
    expect(body(transfer('bank_a', 'bank_b', 1))).toBe(true);
    expect(body({ interactive: true, branches: [{ resource: 'bank_a' }] })).toBe(true);
    expect(body({ branches: [] })).toBe(false);
    expect(body({ ...transfer('bank_a', 'bank_b', 1), interactive: true })).toBe(false);
    // A statement is raw SQL or a template's name, exactly one of the two.
    expect(body({ branches: [{ resource: 'bank_a', statements: [{ statement: 'debit', params: [1, 2] }] }] })).toBe(true);
    expect(body({ branches: [{ resource: 'bank_a', statements: [{ statement: 'debit', sql: 'SELECT 1' }] }] })).toBe(false);
    expect(body({ branches: [{ resource: 'bank_a', statements: [{ params: [] }] }] })).toBe(false);
    const params = doc.paths['/v1/transactions'].get.parameters.map((p: { name: string }) => p.name);
    expect(params).toEqual(['status', 'inDoubt', 'resource', 'idPrefix', 'since', 'before', 'cursor', 'limit']);
  });

  it('real answers validate against the documented schemas', async () => {
    const committed = await world.submit(transfer('bank_a', 'bank_b', 10));
    expect(committed.status).toBe(201);
    expectDocumented('/v1/transactions', 'POST', committed);

    const aborted = await world.submit(transfer('bank_a', 'bank_b', 1_000_000));
    expect(aborted.status).toBe(409);
    expectDocumented('/v1/transactions', 'POST', aborted);

    const invalid = await world.submit({ branches: [] });
    expect(invalid.status).toBe(422);
    expectDocumented('/v1/transactions', 'POST', invalid);

    const refused = await world.submit({ branches: [{ resource: 'bank_a', statements: [{ sql: 'COMMIT' }, { sql: 'SELECT pg_advisory_lock(1)' }] }] });
    expect(refused.body).toMatchObject({ status: 422, type: 'urn:tpc:problem:statement_not_allowed', branch: 0, statement: 0 });
    expectDocumented('/v1/transactions', 'POST', refused);

    const unauthorized = await world.request('GET', '/v1/transactions', undefined, { token: null });
    expect(unauthorized.status).toBe(401);
    expectDocumented('/v1/transactions', 'GET', unauthorized);

    const begun = await world.submit({ interactive: true, branches: [{ resource: 'bank_a' }, { resource: 'bank_c' }], timeoutMs: 10_000 });
    expect(begun.status).toBe(201);
    expectDocumented('/v1/transactions', 'POST', begun);
    const abort = await world.request('POST', `/v1/transactions/${begun.body.id}/abort`);
    expect(abort.status).toBe(200);
    expectDocumented('/v1/transactions/{id}/abort', 'POST', abort);

    const list = await world.request('GET', '/v1/transactions?limit=2');
    expect(list.status).toBe(200);
    expect(list.body.items).toHaveLength(2);
    expectDocumented('/v1/transactions', 'GET', list);

    const detail = await world.request('GET', `/v1/transactions/${committed.body.id}`);
    expect(detail.status).toBe(200);
    expectDocumented('/v1/transactions/{id}', 'GET', detail);

    for (const path of ['/v1/resources', '/v1/orphans', '/healthz', '/readyz']) {
      const res = await world.request('GET', path);
      expect(res.status, path).toBe(200);
      expectDocumented(path, 'GET', res);
    }
  });
});
