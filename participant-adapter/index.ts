export { Branch, type PrepareResult, type StatementResult } from './branch.ts';
export { DirectParticipant, type DirectParticipantOptions } from './direct-participant.ts';
export { ParticipantError, toParticipantError } from './errors.ts';
export { GID_PATTERN, assertValidGid, isNamespaceGid, namespacePrefix } from './gid.ts';
export { HttpParticipant, type HttpParticipantOptions } from './http-participant.ts';
export type {
  BranchSession,
  OpenBranchOptions,
  Participant,
  ParticipantHealth,
  PreparedBranchInfo,
  PreparedBranchState,
  XactStatus,
} from './participant.ts';
export { ParticipantRouterError, participantRouter, type ParticipantRouterOptions } from './participant-router.ts';
export { assertStatementAllowed, statementRefusal } from './statement-guard.ts';
export { prepareBranch, type PrepareBranchOptions } from './prepare-branch.ts';
export { DANGEROUS_MEMBERSHIPS, type RolePowers } from './role-powers.ts';
export { SESSION_SETTINGS, sessionConnection, startupOptions } from './session-settings.ts';
