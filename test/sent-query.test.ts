import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { sendQuery, sendQueryThen } from '../participant-adapter/sent-query.ts';
import { createDatabase } from './harness/world.ts';

/*
 * sendQuery hands pg a Query it built rather than a config object to copy: what pg read from the
 * copy (a name, the extended protocol, a client-side timeout, the values) must still reach the
 * server, and every answer and error its caller.
 */
describe('a query sent as a built Query', () => {
  let client: pg.Client;
  let url: string;

  beforeAll(async () => {
    url = await createDatabase(inject('clusterB'), `sq_${Math.random().toString(36).slice(2, 8)}`);
    client = new pg.Client({ connectionString: url });
    await client.connect();
  });
  afterAll(() => client?.end());

  it('binds its values and answers its rows', async () => {
    const r = await sendQuery<{ sum: number }>(client, { text: 'SELECT $1::int + $2::int AS sum', values: [2, 3] });
    expect(r.rows).toEqual([{ sum: 5 }]);
    expect(r.command).toBe('SELECT');
  });

  it('is prepared once per connection under its name, and runs again by it', async () => {
    for (const n of [1, 2]) {
      const r = await sendQuery(client, { name: 'sq_twice', text: 'SELECT $1::int AS n', values: [n] });
      expect(r.rows).toEqual([{ n }]);
    }
    const named = await client.query(`SELECT count(*)::int AS c FROM pg_prepared_statements WHERE name = 'sq_twice'`);
    expect(named.rows[0].c).toBe(1);
  });

  it('goes by the extended protocol when asked, which refuses two statements in one text', async () => {
    await expect(sendQuery(client, { text: 'SELECT 1; SELECT 2', extended: true })).rejects.toMatchObject({ code: '42601' });
    // The simple protocol runs both.
    expect(await sendQuery(client, { text: 'SELECT 1; SELECT 2' })).toHaveLength(2);
  });

  it("fails its caller with the server's error, and the connection serves the next", async () => {
    await expect(sendQuery(client, { text: 'SELECT 1/0' })).rejects.toMatchObject({ code: '22012' });
    expect((await sendQuery(client, { text: 'SELECT 7 AS n' })).rows).toEqual([{ n: 7 }]);
  });

  it('with a callback: called once, with the result or with the error', async () => {
    const calls: [Error | null, pg.QueryResult | undefined][] = [];
    const answered = () =>
      new Promise<void>((resolve) => {
        sendQueryThen(client, { text: 'SELECT $1::int * 2 AS n', values: [21] }, (err, r) => {
          calls.push([err, r]);
          sendQueryThen(client, { text: 'SELECT 1/0' }, (err2, r2) => {
            calls.push([err2, r2]);
            resolve();
          });
        });
      });
    await answered();
    expect(calls).toHaveLength(2);
    expect(calls[0]![0]).toBeNull();
    expect(calls[0]![1]!.rows).toEqual([{ n: 42 }]);
    expect(calls[1]![0]).toMatchObject({ code: '22012' });
    expect(calls[1]![1]).toBeUndefined();
  });

  it('with a callback and a client-side timeout: the timeout answers once, the late result never', async () => {
    const slow = new pg.Client({ connectionString: url });
    await slow.connect();
    slow.on('error', () => {});
    try {
      const calls: (Error | null)[] = [];
      sendQueryThen(slow, { text: 'SELECT pg_sleep(0.4)', timeoutMs: 100 }, (err) => calls.push(err));
      // Past both the timeout and the statement's own end.
      await new Promise((r) => setTimeout(r, 800));
      expect(calls).toHaveLength(1);
      expect(calls[0]?.message).toMatch(/Query read timeout/);
    } finally {
      await slow.end().catch(() => {});
    }
  });

  it('gives up at its client-side timeout', async () => {
    // A connection of its own: the timed-out query is still running on it.
    const slow = new pg.Client({ connectionString: url });
    await slow.connect();
    slow.on('error', () => {});
    try {
      await expect(sendQuery(slow, { text: 'SELECT pg_sleep(5)', timeoutMs: 100 })).rejects.toThrow(/Query read timeout/);
    } finally {
      await slow.end().catch(() => {});
    }
  });
});
