import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { context, propagation, trace } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { BasicTracerProvider, InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '../coordinator/sdk/index.ts';
import { startCoordinatorProcess } from './harness/coordinator-process.ts';
import { eventually } from './harness/waits.ts';
import { createDatabases, createWorld, httpRequest, TOKENS, transfer, type World } from './harness/world.ts';

/*
 * OpenTelemetry: with an SDK registered (here an in-memory exporter; in production the one
 * main.ts starts from OTEL_* variables), a transaction is one span under the caller's W3C
 * traceparent, with a child per phase and per branch, each carrying the transaction's id; the
 * SDK's own calls carry the caller's context to the coordinator.
 */
const exporter = new InMemorySpanExporter();

const parentId = (s: ReadableSpan) => s.parentSpanContext?.spanId;
const named = (name: string) => exporter.getFinishedSpans().filter((s) => s.name === name);
/**
 * The transaction's own span, once ended: it covers the completion record, which the answer does
 * not wait for, so it can end just after the client has its answer.
 */
const transactionSpan = (id: string) =>
  eventually(
    async () => named('tpc.transaction').find((s) => s.attributes['tpc.transaction.id'] === id),
    (s) => s !== undefined,
    `the span of transaction ${id}`,
    10_000,
  );

describe('traces', () => {
  let world: World;
  beforeAll(async () => {
    trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    world = await createWorld();
  });
  afterAll(async () => {
    await world?.close();
    trace.disable();
    context.disable();
    propagation.disable();
  });

  it('a submitted transaction: one span under the request traceparent, a child per phase and per branch', async () => {
    exporter.reset();
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const callerSpan = '00f067aa0ba902b7';
    const r = await world.submit(transfer('bank_a', 'bank_c', 5), { headers: { traceparent: `00-${traceId}-${callerSpan}-01` } });
    expect(r.status).toBe(201);
    const id = r.body.id as string;

    const tx = await transactionSpan(id);
    expect(tx!.spanContext().traceId).toBe(traceId);
    expect(parentId(tx!)).toBe(callerSpan);
    expect(tx!.attributes).toMatchObject({ 'tpc.transaction.id': id, 'tpc.transaction.status': 'committed', 'tpc.resources': ['bank_a', 'bank_c'] });

    const txSpan = tx!.spanContext().spanId;
    const [prepare] = named('tpc.prepare');
    const [decide] = named('tpc.decide');
    const [complete] = named('tpc.complete');
    for (const phase of [prepare, decide, complete]) expect(parentId(phase!)).toBe(txSpan);
    const work = named('tpc.branch.work');
    expect(work.map((s) => s.attributes['tpc.resource']).sort()).toEqual(['bank_a', 'bank_c']);
    for (const w of work) expect(parentId(w)).toBe(prepare!.spanContext().spanId);
    const finished = named('tpc.branch.complete');
    expect(finished.map((s) => s.attributes['tpc.resource']).sort()).toEqual(['bank_a', 'bank_c']);
    for (const f of finished) expect(parentId(f)).toBe(complete!.spanContext().spanId);
    // Every span of it is in the caller's trace and names the transaction.
    for (const s of [tx!, prepare!, decide!, complete!, ...work, ...finished]) {
      expect(s.spanContext().traceId).toBe(traceId);
      expect(s.attributes['tpc.transaction.id'], s.name).toBe(id);
    }
  });

  it('an aborted one says why on its span', async () => {
    exporter.reset();
    const r = await world.submit(transfer('bank_a', 'bank_c', 5_000_000));
    expect(r.status).toBe(409);
    const tx = await transactionSpan(r.body.id);
    expect(tx!.attributes).toMatchObject({ 'tpc.transaction.id': r.body.id, 'tpc.transaction.status': 'aborted', 'tpc.error.code': 'expectation_failed' });
  });

  it("the SDK carries its caller's context to the coordinator", async () => {
    exporter.reset();
    const pools = { bank_a: new pg.Pool({ connectionString: world.urls.bank_a }), bank_b: new pg.Pool({ connectionString: world.urls.bank_b }) };
    try {
      const tpc = createClient({ url: world.service.url, token: TOKENS.full, resources: pools });
      const caller = trace.getTracer('a-service');
      const { outcome, callerTrace } = await caller.startActiveSpan('place-order', async (span) => {
        try {
          const done = await tpc.transaction(async (tx) => {
            await (await tx.branch<{ accounts: { id: number; balance: number } }>('bank_a'))
              .updateTable('accounts')
              .set((eb) => ({ balance: eb('balance', '-', 1) }))
              .where('id', '=', 6)
              .execute();
            await (await tx.branch<{ accounts: { id: number; balance: number } }>('bank_b'))
              .updateTable('accounts')
              .set((eb) => ({ balance: eb('balance', '+', 1) }))
              .where('id', '=', 6)
              .execute();
          });
          return { ...done, callerTrace: span.spanContext() };
        } finally {
          span.end();
        }
      });
      expect(outcome.status).toBe('committed');
      const [commit] = named('tpc.interactive.commit');
      expect(
        commit,
        exporter
          .getFinishedSpans()
          .map((s) => s.name)
          .join(', '),
      ).toBeDefined();
      expect(commit!.spanContext().traceId).toBe(callerTrace.traceId);
      expect(parentId(commit!)).toBe(callerTrace.spanId);
      expect(commit!.attributes['tpc.transaction.id']).toBe(outcome.id);
    } finally {
      await Promise.all(Object.values(pools).map((p) => p.end()));
    }
  });

  it('npm start exports them over OTLP when OTEL_* variables ask for it, and not otherwise', async () => {
    const received: string[] = [];
    const collector = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => {
        body += d.toString();
      });
      req.on('end', () => {
        received.push(`${req.url} ${body}`);
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
    const endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
    const dbs = await createDatabases();
    const otel = {
      LOG_LEVEL: 'info',
      OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_BSP_SCHEDULE_DELAY: '100',
      OTEL_SERVICE_NAME: 'tpc-test',
    };
    const traced = await startCoordinatorProcess({ ...dbs.env, ...otel });
    try {
      expect(traced.logs.some((l) => l.msg === 'exporting traces (OpenTelemetry)')).toBe(true);
      const r = await httpRequest(traced.url, 'POST', '/v1/transactions', transfer('bank_a', 'bank_b', 1, 7, 7));
      expect(r.status).toBe(201);
      const sent = await eventually(
        async () => received.join('\n'),
        (all) => all.includes(r.body.id),
        'the transaction span at the collector',
        10_000,
      );
      expect(sent).toContain('/v1/traces');
      expect(sent).toContain('tpc.transaction');
      expect(sent).toContain('tpc-test');
    } finally {
      await traced.kill('SIGTERM');
    }
    // Without OTEL_* the SDK is not loaded and nothing is sent.
    received.length = 0;
    const plain = await startCoordinatorProcess({ ...dbs.env, LOG_LEVEL: 'info' });
    try {
      expect(plain.logs.some((l) => l.msg === 'exporting traces (OpenTelemetry)')).toBe(false);
      expect((await httpRequest(plain.url, 'POST', '/v1/transactions', transfer('bank_a', 'bank_b', 1, 8, 8))).status).toBe(201);
      await new Promise((r) => setTimeout(r, 500));
      expect(received).toEqual([]);
    } finally {
      await plain.kill('SIGTERM');
      await dbs.end();
      collector.close();
    }
  });
});
