/*
 * What an in-process caller (the embedded SDK) tells the coordinator about a transaction it ran:
 * plain types with no imports, so that the SDK's client package can name them without pulling in
 * the engine.
 */

/** A branch of the transaction as the in-process caller knows it. */
export interface CallerBranch {
  resource: string;
  gid: string;
  /** A branch joined for another service: looked up on its database, whatever the caller says. */
  joined: boolean;
  /**
   * Of a branch the caller prepared itself, on its own connection, and saw PREPARE succeed: its
   * xid, or null if it wrote nothing (a prepared read-only branch). Ignored for a joined branch.
   */
  xid: string | null;
}

/** What the caller knows of its transaction besides its branches. */
export interface CallerTransaction {
  branches: CallerBranch[];
  /** The deadline the begin answered (ISO 8601). */
  deadline: string;
}
