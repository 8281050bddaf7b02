import { afterAll, beforeAll, expect, it } from 'vitest';
import { createWorld, type World } from './harness/world.ts';

let world: World;
beforeAll(async () => { world = await createWorld(); });
afterAll(async () => { await world.close(); });

const upd = (sql: string) => ({ branches: [
  { resource: 'bank_a', statements: [{ sql: 'UPDATE accounts SET balance = balance - 1 WHERE id = 1' }, { sql }] },
  { resource: 'bank_b', statements: [{ sql: 'SELECT 1/0' }] },
], timeoutMs: 2000 });

it('probe', async () => {
  for (const sql of ['-- x\rCOMMIT\n;', '-- x\rSET search_path TO x\n, public', 'SELECT 1\u0000junk', 'SELECT $1::text', 'SELECT set_config(\'search_path\', \'x\', false)']) {
    const r = await world.submit(upd(sql));
    console.log(JSON.stringify(sql), r.status, JSON.stringify(r.body).slice(0, 400));
    console.log('bal', await world.balance('bank_a', 1));
  }
  let r = await world.request('POST', '/v1/transactions', undefined, { raw: `{"branches":[{"resource":"bank_a","statements":[{"sql":"SELECT 1","params":[${'['.repeat(5000)}1${']'.repeat(5000)}]}]}]}` });
  console.log('deep', r.status, JSON.stringify(r.body).slice(0, 300));
  r = await world.request('POST', '/v1/transactions', undefined, { raw: `{"branches":[{"resource":"bank_a","statements":[{"sql":"SELECT 1","params":[${'['.repeat(100)}1${']'.repeat(100)}]}]}]}` });
  console.log('deep100', r.status, JSON.stringify(r.body).slice(0, 300));
  r = await world.request('POST', '/v1/transactions', undefined, { raw: `{"branches":[{"resource":"bank_a","statements":[{"sql":"SELECT 1","params":[${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}]}]}]}` });
  console.log('deepobj', r.status, JSON.stringify(r.body).slice(0, 300));
  r = await world.submit({ branches: [{ resource: 'bank_a', statements: [{ sql: '-- x\rSET search_path TO x\n, public' }] }] });
  console.log('setleak', r.status, JSON.stringify(r.body).slice(0, 300));
  console.log('deep', r.status, JSON.stringify(r.body).slice(0, 300));
  r = await world.submit({ branches: [{ resource: 'bank_a', statements: [{ sql: 'SELECT $1::text', params: ['a\u0000b'] }] }] });
  console.log('nulparam', r.status, JSON.stringify(r.body).slice(0, 300));
  r = await world.request('POST', '/v1/transactions', undefined, { token: null, raw: '{bad' });
  console.log('notoken-bad', r.status, JSON.stringify(r.body).slice(0, 300));
  r = await world.submit({ branches: [{ resource: 'bank_a', statements: [{ sql: 'SELECT 1', params: [1,2] }] }] });
  console.log('extra params', r.status, JSON.stringify(r.body).slice(0, 300));
  for (let i = 0; i < 5; i++) { r = await world.submit({ branches: [{ resource: 'bank_a', statements: [{ sql: 'SELECT count(*) FROM accounts' }] }] }); console.log('after', r.status, JSON.stringify(r.body).slice(0, 300)); }
  expect(1).toBe(1);
});
