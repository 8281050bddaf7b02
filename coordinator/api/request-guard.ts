import type { Server } from 'node:http';
import type { RequestHandler } from 'express';
import { problem, problemType } from './problem.ts';

/**
 * Runs before routing: a path whose percent-encoding is malformed (`/v1/transactions/%ZZ`) is a
 * client's mistake, answered 400 here. Left to the router, express's parameter decoding throws a
 * URIError that surfaced as a 500 with a stack trace at error level, before authentication, so
 * anyone could fill the error log and page an operator with one request.
 */
export function rejectMalformedUrl(): RequestHandler {
  return (req, _res, next) => {
    // Only a percent sign can make the decoding fail.
    if (!req.path.includes('%')) {
      next();
      return;
    }
    try {
      decodeURIComponent(req.path);
    } catch {
      throw problem(400, 'malformed-url', 'Bad request', 'the path has malformed percent-encoding');
    }
    next();
  };
}

// Node's HTTP parser refuses these before express sees a request; the status says which limit.
const CLIENT_ERROR_STATUS: Record<string, number> = {
  HPE_HEADER_OVERFLOW: 431,
  ERR_HTTP_REQUEST_TIMEOUT: 408,
  HPE_CHUNK_EXTENSIONS_OVERFLOW: 413,
};

/**
 * Requests Node's parser rejects (a header with a control character, a bad Content-Length, an
 * unknown method) get the same problem+json as every other refusal, instead of Node's bare 400.
 * Nothing is logged: such a request is a broken or hostile client, never our fault.
 */
export function answerClientErrors(server: Server): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    // A client that went away (or already has an answer on the way) gets nothing more.
    const answering = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true;
    if (err.code === 'ECONNRESET' || !socket.writable || answering) {
      socket.destroy();
      return;
    }
    const status = CLIENT_ERROR_STATUS[err.code ?? ''] ?? 400;
    const title = status === 431 ? 'Request header fields too large' : status === 408 ? 'Request timeout' : 'Bad request';
    const body = JSON.stringify({
      type: problemType(status === 400 ? 'malformed-request' : 'request-refused'),
      title,
      status,
      detail: 'the HTTP request could not be parsed',
    });
    socket.end(
      `HTTP/1.1 ${status} ${title}\r\nContent-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
}
