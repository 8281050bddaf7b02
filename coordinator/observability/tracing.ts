import { context, propagation, SpanStatusCode, trace, type Attributes, type Context, type Span } from '@opentelemetry/api';

/*
 * OpenTelemetry spans through @opentelemetry/api alone: without an SDK registered (main.ts starts
 * one only when OTEL_* variables ask for an exporter) every call here is the API's no-op, so the
 * hot path pays nothing for them. A transaction's span carries its id, its children are its phases
 * and its branches, and its parent is the caller's (W3C traceparent, see contextOf).
 */
const tracer = trace.getTracer('tpc-coordinator');

/** The caller's trace context from request headers (traceparent, tracestate): the parent of what the request does. */
export function contextOf(headers: Record<string, string | string[] | undefined>): Context {
  return propagation.extract(context.active(), headers);
}

/**
 * Runs `fn` in a new span under `parent` (default: the active context); ends it, marking errors.
 * A span that records nothing (no SDK, or not sampled) is handed to `fn` and nothing more: about
 * ten spans per transaction, each wrapped in an async function and a context switch, were a cost
 * on the hot path for no trace at all.
 */
export function inSpan<T>(name: string, attributes: Attributes, fn: (span: Span) => Promise<T>, parent: Context = context.active()): Promise<T> {
  const span = tracer.startSpan(name, { attributes }, parent);
  if (!span.isRecording()) return fn(span);
  return context.with(trace.setSpan(parent, span), async () => {
    try {
      return await fn(span);
    } catch (err) {
      span.recordException(err instanceof Error ? err : String(err));
      span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
      throw err;
    } finally {
      span.end();
    }
  });
}

/** Runs `fn` with `parent` as the active context (a request's trace context around the engine's work). */
export function withContext<T>(parent: Context, fn: () => T): T {
  return context.with(parent, fn);
}

/** The active span's ids for a log line, so a log search and a trace lead to each other; nothing without an SDK. */
export function traceFields(): Record<string, string> {
  const span = trace.getActiveSpan();
  if (!span) return {};
  const { traceId, spanId } = span.spanContext();
  return { trace_id: traceId, span_id: spanId };
}
