import { execFile } from 'node:child_process';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import pg from 'pg';
import { findPostgresBinDir, startPostgresCluster, type PostgresCluster } from '../../coordinator/embedded/postgres-cluster.ts';

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;
/** Server tools refuse to run as root: as root they run as the postgres user, as the clusters do. */
const asServerUser = (bin: string, args: string[]) => (isRoot ? run('runuser', ['-u', 'postgres', '--', bin, ...args]) : run(bin, args));

/*
 * Every server of the pair, whichever role it has now. synchronous_standby_names is deliberately
 * not among them: a -c setting outranks ALTER SYSTEM, and the pair changes it at each promotion.
 * fsync stays off as on the suite's other throwaway clusters: the failure tested is a process
 * killed (SIGKILL), after which WAL still recovers; the OS page cache survives it.
 */
const SETTINGS = { wal_level: 'replica', max_wal_senders: 8, fsync: 'off', full_page_writes: 'off' };

/**
 * A log primary with a synchronous standby streaming from it (`pg_basebackup -R`,
 * `synchronous_standby_names = '*'`): a commit is acknowledged only once the standby has flushed
 * it, so a forced log write survives the primary's death. `primary` and `standby` follow failovers.
 */
export interface ReplicatedLog {
  readonly primary: PostgresCluster;
  /** Null between a failover and the next rebuildStandby. */
  readonly standby: PostgresCluster | null;
  /**
   * SIGKILLs the primary (a power cut, as far as its clients can tell) and promotes the standby.
   * The promoted server then stops requiring a synchronous standby, as Patroni's non-strict
   * synchronous mode does: otherwise every commit would wait for a standby that no longer exists.
   */
  failover(): Promise<{ killedAt: number; promotedAt: number }>;
  /** A new synchronous standby from the current primary; the dead former primary's files are removed. */
  rebuildStandby(): Promise<void>;
  destroy(): Promise<void>;
}

export async function startReplicatedLog(options: { binDir?: string } = {}): Promise<ReplicatedLog> {
  const binDir = findPostgresBinDir(options.binDir ?? process.env.TPC_PG_BINDIR);
  // initdb's default pg_hba trusts local replication connections, which pg_basebackup and the standby use.
  let primary = await startPostgresCluster({ binDir, settings: SETTINGS });
  let standby: PostgresCluster | null = null;
  let retired: PostgresCluster | null = null;

  const superuser = async <T>(cluster: PostgresCluster, fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const c = new pg.Client({ connectionString: cluster.url() });
    c.on('error', () => {});
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  };

  const setSynchronous = (cluster: PostgresCluster, names: string | null) =>
    superuser(cluster, async (c) => {
      await c.query(names === null ? 'ALTER SYSTEM RESET synchronous_standby_names' : `ALTER SYSTEM SET synchronous_standby_names = ${c.escapeLiteral(names)}`);
      await c.query('SELECT pg_reload_conf()');
    });

  /** Removes a server's files whatever its state (a standby's directory is "kept" by the cluster helper, so destroy alone would leave it). */
  const discard = async (cluster: PostgresCluster) => {
    await cluster.destroy().catch(() => {});
    await rm(cluster.dataDir, { recursive: true, force: true });
  };

  async function rebuildStandby(): Promise<void> {
    if (standby) throw new Error('the pair already has a standby');
    if (retired) {
      await discard(retired);
      retired = null;
    }
    const dir = await mkdtemp(join(tmpdir(), 'tpc-standby-'));
    if (isRoot) {
      const { stdout: uid } = await run('id', ['-u', 'postgres']);
      const { stdout: gid } = await run('id', ['-g', 'postgres']);
      await chown(dir, Number(uid), Number(gid));
    }
    await asServerUser(join(binDir, 'pg_basebackup'), [
      '-h',
      primary.host,
      '-p',
      String(primary.port),
      '-U',
      'postgres',
      '-D',
      dir,
      '-R',
      '-X',
      'stream',
      '--checkpoint=fast',
      '--no-sync',
    ]);
    standby = await startPostgresCluster({ binDir, dataDir: dir, settings: SETTINGS });
    await setSynchronous(primary, '*');
    // Synchronous only once the primary counts it so: before that, a commit would not wait for it.
    for (let i = 0; ; i++) {
      const state = await superuser(primary, (c) => c.query<{ sync_state: string }>('SELECT sync_state FROM pg_stat_replication'));
      if (state.rows.some((r) => r.sync_state === 'sync')) break;
      if (i > 300) throw new Error(`the standby never became synchronous: ${JSON.stringify(state.rows)}`);
      await sleep(50);
    }
  }

  await rebuildStandby();

  return {
    get primary() {
      return primary;
    },
    get standby() {
      return standby;
    },
    async failover() {
      if (!standby) throw new Error('no standby to promote');
      const killedAt = Date.now();
      await primary.crash();
      await asServerUser(join(binDir, 'pg_ctl'), ['-D', standby.dataDir, '-w', '-t', '60', 'promote']);
      const promotedAt = Date.now();
      await setSynchronous(standby, null);
      retired = primary;
      primary = standby;
      standby = null;
      return { killedAt, promotedAt };
    },
    rebuildStandby,
    async destroy() {
      await Promise.allSettled([primary, standby, retired].filter((c) => c !== null).map(discard));
    },
  };
}
