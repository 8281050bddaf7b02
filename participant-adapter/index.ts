export { Branch, type PrepareResult, type StatementResult } from './branch.ts';
export { ParticipantError, toParticipantError } from './errors.ts';
export { GID_PATTERN, assertValidGid } from './gid.ts';
export {
  Participant,
  type OpenBranchOptions,
  type ParticipantHealth,
  type ParticipantOptions,
  type PreparedBranchInfo,
  type XactStatus,
} from './participant.ts';
export { assertStatementAllowed } from './statement-guard.ts';
