import { pino, type Logger } from 'pino';
import { traceFields } from './tracing.ts';

/**
 * JSON logs. Connection strings and statement text never reach the log at info: they may carry
 * passwords and customer data. Redaction is the backstop for fields that slip through.
 */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: 'tpc-coordinator' },
    // Inside a traced request, each line names its trace and span.
    mixin: traceFields,
    redact: {
      paths: ['*.connectionString', '*.url', '*.sql', '*.params', 'req.headers.authorization', 'config.resources', 'config.databaseUrl'],
      censor: '[redacted]',
    },
  });
}

/** Strips the password from a connection string for messages an operator may read. */
export function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    // A log URL listing several hosts (h1:5432,h2:5432) is no WHATWG URL, yet names what failed.
    const multiHost = /^(postgres(?:ql)?:\/\/)(?:([^:@/?#]*)(:[^@/?#]*)?@)?([^/?#]*,[^/?#]*)([^?#]*)/.exec(url);
    if (multiHost) {
      const [, scheme, user, password, hosts, path] = multiHost;
      return `${scheme}${user === undefined ? '' : `${user}${password ? ':***' : ''}@`}${hosts}${path}`;
    }
    return '[unparseable url]';
  }
}
