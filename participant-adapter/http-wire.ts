import { z } from 'zod';

/*
 * What the coordinator and a participant router say to each other. Paths are relative to where the
 * service mounts the router (the resource's `url`). Every answer is JSON; errors are RFC 9457
 * problem+json whose `code` (and `sqlState`, `retryable`) let the client rebuild the error.
 */
export const WIRE_PATHS = {
  health: '/health',
  prepared: '/prepared',
  xacts: '/xacts',
  branches: '/branches',
} as const;

export const statementSchema = z
  .object({
    sql: z.string().min(1).max(1_000_000),
    params: z.array(z.unknown()).max(10_000).default([]),
  })
  .strict();

/** POST /branches/:gid: run the statements in one transaction and prepare it under :gid. */
export const prepareBodySchema = z
  .object({
    statements: z.array(statementSchema).min(1).max(1000),
    statementTimeoutMs: z.number().int().min(1).max(86_400_000),
  })
  .strict();
export type PrepareBody = z.infer<typeof prepareBodySchema>;

export interface WireStatementResult {
  command: string;
  rowCount: number;
  rows: Record<string, unknown>[];
}

export interface WireFailure {
  /** Index of the statement that failed; null when the failure was not a statement's (PREPARE, the connection). */
  statement: number | null;
  code: string;
  sqlState: string | null;
  retryable: boolean;
  message: string;
}

export interface WirePrepareAnswer {
  gid: string;
  prepared: boolean;
  xid: string | null;
  /**
   * The statements' results. Null on a replay that the participant no longer remembers (it
   * restarted after preparing): the branch is prepared, but what the statements returned is lost.
   */
  results: WireStatementResult[] | null;
  failure: WireFailure | null;
}

export interface WireFinishAnswer<T extends string> {
  gid: string;
  outcome: T;
}

export interface WireProblem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  sqlState?: string;
  retryable?: boolean;
}

export const PROBLEM_TYPE_PREFIX = 'urn:tpc:problem:';
