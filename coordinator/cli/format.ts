/** Plain-text output: aligned tables and key/value blocks, no dependencies. */

export interface Column<T> {
  header: string;
  value: (row: T) => unknown;
  /** Numbers read better aligned right. */
  align?: 'left' | 'right';
}

/** A cell as text: empty for null/undefined, compact JSON for objects, one line always. */
export function cell(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v.replace(/\s*\n\s*/g, ' ');
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return JSON.stringify(v);
}

export function truncate(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, Math.max(0, max - 1))}…`;
}

/** Columns padded to their widest cell, separated by two spaces; no trailing blanks. */
export function formatTable<T>(columns: readonly Column<T>[], rows: readonly T[]): string {
  const cells = rows.map((r) => columns.map((c) => cell(c.value(r))));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((r) => r[i]!.length)));
  const line = (values: readonly string[]) =>
    values
      .map((v, i) => (columns[i]!.align === 'right' ? v.padStart(widths[i]!) : v.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return `${[line(columns.map((c) => c.header)), ...cells.map(line)].join('\n')}\n`;
}

/** `key: value` lines with the keys padded to one width. */
export function formatFields(fields: readonly (readonly [string, unknown])[]): string {
  const width = Math.max(0, ...fields.map(([k]) => k.length));
  return `${fields.map(([k, v]) => `${`${k}:`.padEnd(width + 1)} ${cell(v)}`.trimEnd()).join('\n')}\n`;
}

/** An ISO time shortened for tables (UTC, to the second). */
export function time(v: unknown): string {
  if (typeof v !== 'string') return '';
  const d = new Date(v);
  return Number.isNaN(d.getTime())
    ? v
    : d
        .toISOString()
        .replace('T', ' ')
        .replace(/\.\d+Z$/, 'Z');
}

/** A compact error column: `code` or `code: message`. */
export function errorText(e: unknown, max = 60): string {
  if (!e) return '';
  if (typeof e !== 'object') return truncate(String(e), max);
  const o = e as { code?: unknown; message?: unknown; resource?: unknown };
  const head = [o.resource, o.code].filter((x) => typeof x === 'string' && x).join(' ');
  return truncate(head || cell(o.message ?? e), max);
}
