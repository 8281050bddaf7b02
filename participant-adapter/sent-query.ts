import pg from 'pg';

export interface QueryShape {
  text: string;
  values?: readonly unknown[];
  /** A named prepared statement: parsed and planned once per connection. */
  name?: string;
  /** The extended protocol even without parameters or a name (one statement, typed results). */
  extended?: boolean;
  /** Client-side bound, as pg's `query_timeout` (the pool's own applies without it). */
  timeoutMs?: number;
}

type Settable = pg.Query & { name?: string; queryMode?: 'extended'; query_timeout?: number };

/**
 * `client.query(shape)` without pg's copy of the config object: given an object, pg first
 * re-creates it property by property (`cloneQueryConfig`: `Object.getOwnPropertyDescriptors` and
 * `defineProperties`), about 2 µs here against 10 ns for a text, on every statement of the hot
 * path (the branches' statements, phase 2, the log's writes): 3 % of the coordinator's CPU under
 * load. The Query is made from the text and given the few fields pg would have read from the copy;
 * pg sends a Query it is handed as it is.
 */
export function sendQuery<R extends pg.QueryResultRow = pg.QueryResultRow>(client: pg.ClientBase, shape: QueryShape): Promise<pg.QueryResult<R>> {
  return new Promise<pg.QueryResult<R>>((resolve, reject) => {
    sendQueryThen<R>(client, shape, (err, result) => (err ? reject(err) : resolve(result!)));
  });
}

/**
 * sendQuery with a callback instead of a promise: for a caller that settles a promise of its own
 * with the answer (phase 2's shared connection), one promise less per query. The callback is
 * called once, with the error or the result; a query pg refuses before sending it throws here.
 */
export function sendQueryThen<R extends pg.QueryResultRow = pg.QueryResultRow>(
  client: pg.ClientBase,
  shape: QueryShape,
  callback: (err: Error | null, result: pg.QueryResult<R> | undefined) => void,
): void {
  const query = new pg.Query<R>(shape.text, shape.values as unknown[] | undefined) as Settable;
  if (shape.name !== undefined) query.name = shape.name;
  if (shape.extended) query.queryMode = 'extended';
  if (shape.timeoutMs !== undefined) query.query_timeout = shape.timeoutMs;
  (query as { callback?: (err: Error | null, result: pg.QueryResult<R>) => void }).callback = callback;
  client.query(query);
}
