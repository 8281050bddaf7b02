import type { ApiClient } from './api-client.ts';
import type { TransactionPage } from './api-types.ts';
import { UsageError } from './errors.ts';
import { formatTable, time } from './format.ts';

const FULL_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// The API's idPrefix: hex digits, dashes where the operator kept them.
const PREFIX = /^(?:[0-9a-f]-?){1,32}$/i;
// Enough candidates to pick the right one from, few enough to read; more only say "give more digits".
const CANDIDATES = 10;

/**
 * The full id of the transaction `id` names: a full id as it is, or the start of one, such as the
 * 8 digits the console shows, when exactly one transaction's id starts with it.
 *
 * @throws UsageError (exit 2) listing the candidates when several ids start with it, or when `id`
 *   is not hex digits; Error (exit 1) when none does.
 */
export async function resolveTransactionId(api: ApiClient, id: string): Promise<string> {
  if (FULL_ID.test(id)) return id.toLowerCase();
  if (!PREFIX.test(id)) throw new UsageError(`"${id}" is not a transaction id, nor the start of one (hex digits, as the console shows them)`);
  const page = await api.get<TransactionPage>('/v1/transactions', { idPrefix: id, limit: CANDIDATES });
  const [only, ...others] = page.items;
  if (only && others.length === 0) return only.id;
  if (!only) throw new Error(`no transaction's id starts with ${id}`);
  const table = formatTable(
    [
      { header: 'ID', value: (t) => t.id },
      { header: 'STATUS', value: (t) => t.status },
      { header: 'CREATED', value: (t) => time(t.createdAt) },
    ],
    page.items,
  );
  const more = page.next ? `\n(and more: give more digits)` : '';
  throw new UsageError(
    `${id} is ambiguous: ${page.next ? `more than ${page.items.length}` : page.items.length} transactions start with it\n${table.trimEnd()}${more}`,
  );
}
