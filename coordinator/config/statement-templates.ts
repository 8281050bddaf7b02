import { readFileSync } from 'node:fs';
import { statementRefusal } from '../../participant-adapter/statement-guard.ts';

/*
 * Statement templates (TPC_STATEMENTS_FILE): named SQL with $n parameters, for operators who want
 * clients to send no SQL of their own. A submission names a template (`{ "statement": "debit",
 * "params": [...] }`) and the service runs the template's SQL; a token with `"sql": false` may do
 * nothing else. Every template is judged by the statement guard at start, so a file that holds a
 * refused statement never lets the service start.
 *
 * The file is one JSON object: `{ "debit": "UPDATE accounts SET …", "credit": { "sql": "…" } }`.
 * The object form leaves room for later fields (a description, a fixed expectation…).
 */

/** A name a client may send: letters, digits, "_" and "-". */
export const TEMPLATE_NAME = /^[A-Za-z0-9_-]{1,100}$/;
/** The same bound as a submitted statement's SQL. */
const MAX_TEMPLATE_SQL = 100_000;

/** A problem with the templates file; the config module turns it into a ConfigError naming the variable. */
export class TemplateFileError extends Error {
  override readonly name = 'TemplateFileError';
}

function sqlOf(name: string, value: unknown): string {
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const keys = Object.keys(value);
    const unknown = keys.filter((k) => k !== 'sql');
    if (unknown.length) throw new TemplateFileError(`template "${name}": unknown field "${unknown[0]}" (a template is "<sql>" or { "sql": "<sql>" })`);
    const sql = (value as { sql?: unknown }).sql;
    if (typeof sql === 'string') return sql;
  }
  throw new TemplateFileError(`template "${name}": must be "<sql>" or { "sql": "<sql>" }`);
}

/** Parses and checks the templates file's text: name → SQL. Throws TemplateFileError naming the template at fault. */
export function parseStatementTemplates(text: string): ReadonlyMap<string, string> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new TemplateFileError(`not valid JSON (${(err as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new TemplateFileError('must be a JSON object mapping template names to SQL');
  }
  // A Map, not the parsed object: a template named "__proto__" or "constructor" is only a name.
  const templates = new Map<string, string>();
  for (const [name, value] of Object.entries(json)) {
    if (!TEMPLATE_NAME.test(name)) {
      throw new TemplateFileError(`template ${JSON.stringify(name.slice(0, 120))}: a name is 1 to 100 letters, digits, "_" or "-"`);
    }
    const sql = sqlOf(name, value);
    if (sql.length > MAX_TEMPLATE_SQL) throw new TemplateFileError(`template "${name}": longer than ${MAX_TEMPLATE_SQL} characters`);
    const refusal = statementRefusal(sql);
    if (refusal !== null) throw new TemplateFileError(`template "${name}": ${refusal}`);
    templates.set(name, sql);
  }
  return templates;
}

/** Reads the templates file at `path`; throws TemplateFileError when it cannot be read or is not valid. */
export function loadStatementTemplates(path: string): ReadonlyMap<string, string> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new TemplateFileError(`cannot read ${path} (${(err as Error).message})`);
  }
  return parseStatementTemplates(text);
}
