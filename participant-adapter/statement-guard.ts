import { ParticipantError } from './errors.ts';

/*
 * A branch's statements run inside the coordinator's own transaction block. A statement that ends
 * that block (COMMIT, ROLLBACK, PREPARE TRANSACTION…) would commit a branch outside the protocol and
 * break atomicity; one that changes session state (SET without LOCAL, PREPARE, LISTEN…) would leak
 * into the next transaction that borrows the pooled connection. Such statements are refused before
 * anything is sent. Statements always go over the extended protocol, which the server limits to
 * one command each, so the leading keyword is the whole story.
 */
const FORBIDDEN_LEADING = new Set([
  'BEGIN', 'START', 'COMMIT', 'END', 'ABORT', 'ROLLBACK', 'SAVEPOINT', 'RELEASE', 'PREPARE',
  'DEALLOCATE', 'DISCARD', 'LISTEN', 'UNLISTEN', 'RESET', 'COPY', 'VACUUM', 'CHECKPOINT',
]);
const ALLOWED_AFTER_SET = new Set(['LOCAL', 'TRANSACTION', 'CONSTRAINTS']);

/** Skips whitespace and SQL comments (`--` lines and nested `/* *\/` blocks). */
function skipTrivia(sql: string, from: number): number {
  let i = from;
  for (;;) {
    while (i < sql.length && /\s/.test(sql[i]!)) i++;
    if (sql.startsWith('--', i)) {
      // Postgres ends a -- comment at \n or \r: stopping only at \n would let "-- x\rCOMMIT" through.
      const m = /[\r\n]/.exec(sql.slice(i));
      i = m ? i + m.index + 1 : sql.length;
    } else if (sql.startsWith('/*', i)) {
      let depth = 1;
      i += 2;
      while (i < sql.length && depth > 0) {
        if (sql.startsWith('/*', i)) { depth++; i += 2; }
        else if (sql.startsWith('*/', i)) { depth--; i += 2; }
        else i++;
      }
    } else {
      return i;
    }
  }
}

function wordAt(sql: string, from: number): { word: string; end: number } {
  const start = skipTrivia(sql, from);
  const m = /^[A-Za-z_]+/.exec(sql.slice(start, start + 40));
  return { word: (m?.[0] ?? '').toUpperCase(), end: start + (m?.[0].length ?? 0) };
}

/** Throws a non-retryable ParticipantError when a statement would escape the branch's transaction. */
export function assertStatementAllowed(sql: string): void {
  const first = wordAt(sql, 0);
  if (first.word === '') {
    if (skipTrivia(sql, 0) >= sql.length) throw refuse('the statement is empty');
    return; // starts with a parenthesis, a WITH-less literal…: not a command we must stop
  }
  if (FORBIDDEN_LEADING.has(first.word)) {
    throw refuse(`${first.word} is not allowed in a branch: the coordinator owns the transaction and the session`);
  }
  if (first.word === 'SET') {
    const second = wordAt(sql, first.end).word;
    if (!ALLOWED_AFTER_SET.has(second)) {
      throw refuse('only SET LOCAL, SET TRANSACTION and SET CONSTRAINTS are allowed in a branch: a session-wide SET would outlive the transaction');
    }
  }
}

function refuse(message: string): ParticipantError {
  return new ParticipantError('statement_not_allowed', message, { retryable: false });
}
