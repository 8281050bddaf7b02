/*
 * The caller's trace context for the coordinator (W3C traceparent), without a dependency: the
 * client package depends on pg and kysely only. @opentelemetry/api keeps what an application's SDK
 * registered (its context manager and propagator) on a global under a well-known symbol; when
 * there is none, nothing is added and nothing is loaded.
 */
const OTEL_GLOBAL = Symbol.for('opentelemetry.js.api.1');

interface OtelGlobal {
  context?: { active(): unknown };
  propagation?: {
    inject(context: unknown, carrier: Record<string, string>, setter: { set(carrier: Record<string, string>, key: string, value: string): void }): void;
  };
}

const SETTER = {
  set: (carrier: Record<string, string>, key: string, value: string) => {
    carrier[key] = value;
  },
};

/** `headers` plus the active trace context's headers (traceparent, tracestate), when the application traces. */
export function withTraceContext(headers: Record<string, string>): Record<string, string> {
  const otel = (globalThis as Record<symbol, OtelGlobal | undefined>)[OTEL_GLOBAL];
  if (!otel?.propagation || !otel.context) return headers;
  const carrier: Record<string, string> = { ...headers };
  try {
    otel.propagation.inject(otel.context.active(), carrier, SETTER);
  } catch {
    return headers; // a broken propagator must never cost the transaction
  }
  return carrier;
}
