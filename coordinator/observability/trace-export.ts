/*
 * Exporting traces is the operator's choice, made with OpenTelemetry's own variables: with
 * OTEL_TRACES_EXPORTER (otlp, console, zipkin, none) or an OTLP endpoint set, the Node SDK is
 * started before the service and configures itself from OTEL_* (endpoint, headers, sampler,
 * resource attributes); with none set, it is not even loaded, and the spans stay the API's no-op.
 */
const CONFIGURING = ['OTEL_TRACES_EXPORTER', 'OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'];

export interface TraceExport {
  /** Sends what is still buffered; at shutdown. */
  shutdown(): Promise<void>;
}

/** Starts the SDK when the environment asks for traces; null when it does not. */
export async function startTraceExport(env: Record<string, string | undefined>): Promise<TraceExport | null> {
  const exporter = env.OTEL_TRACES_EXPORTER?.trim();
  if (!CONFIGURING.some((v) => env[v]?.trim()) || exporter === 'none' || env.OTEL_SDK_DISABLED === 'true') return null;
  const { NodeSDK } = await import('@opentelemetry/sdk-node');
  // No automatic instrumentation: the coordinator's own spans (a transaction, its phases, its
  // branches) say what a 2PC operator needs, without a span for every pg query and HTTP hop.
  const sdk = new NodeSDK({ serviceName: env.OTEL_SERVICE_NAME || 'tpc-coordinator', instrumentations: [] });
  sdk.start();
  return { shutdown: () => sdk.shutdown() };
}
