import { statementRefusal } from '../../participant-adapter/statement-guard.ts';
import type { SubmitRequest } from '../engine/types.ts';
import { problem } from './problem.ts';

/**
 * 422 statement_not_allowed when the statement guard refuses any statement of a submission, before
 * anything is logged or run. The problem names the first refused statement (`branch`, `resource`,
 * `statement`, `reason`) and `errors` lists every one, so a client fixes them all in one go.
 */
export function assertStatementsAllowed(request: SubmitRequest): void {
  const refused: { branch: number; resource: string; statement: number; reason: string }[] = [];
  request.branches.forEach((b, branch) => {
    b.statements.forEach((s, statement) => {
      const reason = statementRefusal(s.sql);
      if (reason !== null) refused.push({ branch, resource: b.resource, statement, reason });
    });
  });
  const first = refused[0];
  if (!first) return;
  throw problem(
    422,
    'statement_not_allowed',
    'Statement not allowed',
    `statement ${first.statement} of branch ${first.branch} (${first.resource}): ${first.reason}` +
      (refused.length > 1 ? ` (and ${refused.length - 1} more)` : ''),
    {
      branch: first.branch,
      resource: first.resource,
      statement: first.statement,
      reason: first.reason,
      errors: refused.map((r) => ({ path: `branches.${r.branch}.statements.${r.statement}`, message: `${r.resource}: ${r.reason}` })),
    },
  );
}
