import { describe, expect, it } from 'vitest';
import { toProblem } from '../coordinator/api/problem.ts';
import { StaleStateError } from '../coordinator/errors.ts';

/*
 * Errors that say a database cannot be used right now are 503 (come back later), whatever their
 * shape; everything else unexpected is a 500, which the service logs as a bug.
 */
describe('what an error becomes in the answer', () => {
  it('a lost or unusable database connection is 503, as node-postgres words it', () => {
    for (const message of [
      'Connection terminated unexpectedly',
      'timeout exceeded when trying to connect',
      'Query read timeout',
      'Client has encountered a connection error and is not queryable',
      'Client was closed and is not queryable',
    ]) {
      expect(toProblem(new Error(message)), message).toMatchObject({ status: 503, type: expect.stringContaining('unavailable') });
    }
    expect(toProblem(Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' })).status).toBe(503);
    expect(toProblem(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })).status).toBe(503);
  });

  it('anything else unexpected is 500 and says nothing of its internals', () => {
    expect(toProblem(new Error('Client has already been connected. You cannot reuse a client.'))).toMatchObject({
      status: 500,
      detail: 'an unexpected error occurred; it has been logged',
    });
    expect(toProblem(new StaleStateError('x', 'active', 'committing')).status).toBe(500);
  });
});
