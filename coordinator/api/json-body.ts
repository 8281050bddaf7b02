import express, { type RequestHandler } from 'express';

/*
 * The request body parser. body-parser (express.json) cost ≈ 0.09 ms of CPU per request here
 * (bench/http-floor.ts: 0.30 ms per POST with it, 0.19 ms with the body read directly), most of a
 * plain node:http server's whole exchange. The common body, a UTF-8 JSON document of declared
 * length and no content coding, is read and parsed here; everything else (gzip or deflate,
 * another charset, chunked, over the limit) is left to body-parser, configured as before. The
 * errors made here are body-parser's (status 400, `type` entity.parse.failed or request.aborted,
 * the same messages), so problem.ts answers them alike.
 */

const UNITS: Record<string, number> = { b: 1, kb: 1024, mb: 1024 * 1024 };

/** TPC_BODY_LIMIT's form (1mb, 512kb, 100b) in bytes, as body-parser's `bytes` reads it. */
export function limitBytes(limit: string): number {
  const m = /^(\d+)(b|kb|mb)$/i.exec(limit);
  if (!m) throw new Error(`not a body size: ${limit}`);
  return Number(m[1]) * UNITS[m[2]!.toLowerCase()]!;
}

const UTF8_CHARSET = /;\s*charset\s*=\s*"?utf-8"?\s*(;|$)/i;
const DECLARED_LENGTH = /^\d+$/;
// JSON's whitespace (RFC 8259): what body-parser skips before the first character.
const FIRST_NON_WHITESPACE = /^[ \t\n\r]*([^ \t\n\r])/;

function plainUtf8(contentType: string | undefined): boolean {
  if (contentType === undefined || !/charset/i.test(contentType)) return true;
  return UTF8_CHARSET.test(contentType);
}

function bodyError(status: number, type: string, message: string, body?: string): Error {
  return Object.assign(new Error(message), { status, statusCode: status, expose: true, type, body });
}

/** body-parser's error for a strict-mode violation: the native SyntaxError a JSON.parse of the text up to that character gives. */
function strictViolation(text: string): Error {
  const first = FIRST_NON_WHITESPACE.exec(text)?.[1];
  const index = first === undefined ? -1 : text.indexOf(first);
  const partial = index === -1 ? '' : text.substring(0, index) + '#'.repeat(text.length - index);
  let message = 'strict violation';
  try {
    JSON.parse(partial);
  } catch (e) {
    message = (e as Error).message.replace(/#+/g, (placeholder) => text.substring(index, index + placeholder.length));
  }
  return bodyError(400, 'entity.parse.failed', message, text);
}

function parse(text: string): unknown {
  if (text.length === 0) return {}; // as body-parser: an empty body is {}
  const first = text[0];
  if (first !== '{' && first !== '[') {
    const c = FIRST_NON_WHITESPACE.exec(text)?.[1];
    if (c !== '{' && c !== '[') throw strictViolation(text);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw bodyError(400, 'entity.parse.failed', (e as Error).message, text);
  }
}

/**
 * Strict JSON (objects and arrays only), any content type, at most `limit` (TPC_BODY_LIMIT's form).
 * Sets req.body as express.json does; a request without a body keeps req.body undefined.
 */
export function jsonBody(limit: string): RequestHandler {
  const max = limitBytes(limit);
  const fallback = express.json({ limit, strict: true, type: () => true });
  return (req, res, next) => {
    const h = req.headers;
    const length = h['content-length'];
    const coding = h['content-encoding'];
    if (
      length === undefined ||
      !DECLARED_LENGTH.test(length) ||
      Number(length) > max ||
      h['transfer-encoding'] !== undefined ||
      (coding !== undefined && coding.toLowerCase() !== 'identity') ||
      !plainUtf8(h['content-type'])
    ) {
      fallback(req, res, next);
      return;
    }
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (err: Error | null) => {
      if (done) return;
      done = true;
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('aborted', onAborted);
      req.off('error', onError);
      if (err) {
        next(err);
        return;
      }
      let text = chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8');
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // body-parser's decoder drops a byte order mark
      try {
        req.body = parse(text);
      } catch (e) {
        next(e);
        return;
      }
      next();
    };
    const onData = (c: Buffer) => chunks.push(c);
    const onEnd = () => finish(null);
    const onAborted = () => finish(bodyError(400, 'request.aborted', 'request aborted'));
    const onError = (e: Error) => finish(bodyError(400, 'request.aborted', e.message));
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('aborted', onAborted);
    req.on('error', onError);
  };
}
