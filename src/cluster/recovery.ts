/**
 * Online recovery (pgpool's pcp_recovery_node, `PGPOOL RECOVERY NODE n`), as
 * pgpool 4.3 does it in streaming-replication mode:
 *
 *  1. the node must be down and must not be the primary; one recovery at a time;
 *  2. connect to the primary's template1 as recovery_user / recovery_password;
 *  3. `SET statement_timeout To 0`, then run recovery_1st_stage_command on the
 *     primary through the pgpool_recovery extension:
 *     `SELECT pgpool_recovery(script, node host, node data directory,
 *     primary port, node id, node port, primary host)` — PostgreSQL runs
 *     `<primary PGDATA>/<script> <primary PGDATA> <host> <data dir> <primary port>
 *     <node id> <node port> <primary host>`; a script that fails fails the recovery;
 *     recovery_2nd_stage_command belongs to native replication and is not run;
 *  4. `SELECT pgpool_remote_start(node host, node data directory)`: PostgreSQL
 *     runs `<primary PGDATA>/pgpool_remote_start <host> <data dir>`;
 *  5. wait up to recovery_timeout seconds until the node accepts a connection
 *     as recovery_user (database postgres, then template1);
 *  6. attach the node (failback: `waiting`, failback_command runs).
 *
 * A Unix-socket or empty backend_hostname is passed to the scripts as
 * `localhost`, as pgpool does.
 */
import { loadPoolPasswd } from '../auth/credentials.js';
import type { Config } from '../config/types.js';
import type { Logger } from '../log.js';
import { CheckConnection, CheckQueryError, credentials } from './conn.js';
import { isLive, type NodeTable } from './nodes.js';
import { ClusterError } from './operations.js';
import type { ClusterTasks } from './tasks.js';

/** The 1st stage (a base backup) may take long: pgpool puts no limit on it; pgrelay bounds it at 6 h. */
const FIRST_STAGE_LIMIT_MS = 6 * 3600_000;
const CONNECT_TIMEOUT_MS = 10_000;

function sqlLiteral(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

function scriptHost(host: string): string {
  return host === '' || host.startsWith('/') ? 'localhost' : host;
}

export class OnlineRecovery {
  private running = -1;

  constructor(
    private readonly nodes: NodeTable,
    private readonly getConfig: () => Config,
    private readonly log: Logger,
    private readonly tasks: ClusterTasks,
    /** Attach the node once it runs (NodeOperations.attach). */
    private readonly attach: (id: number) => Promise<unknown>,
  ) {}

  get inProgress(): boolean {
    return this.running >= 0;
  }

  async recover(id: number): Promise<void> {
    const node = Number.isInteger(id) ? this.nodes.get(id) : undefined;
    if (!node || node.status === 'unused') throw new ClusterError('NO_SUCH_NODE', `node id ${id} is not valid`);
    if (this.tasks.stopped) throw new ClusterError('STOPPED', 'pgrelay is stopping');
    if (id === this.nodes.primaryId && isLive(node.status))
      throw new ClusterError('INVALID_STATE', 'primary server cannot be recovered by online recovery.');
    if (isLive(node.status)) throw new ClusterError('INVALID_STATE', `node recovery failed, node id: ${id} is alive`);
    if (this.running >= 0)
      throw new ClusterError('INVALID_STATE', 'pgrelay is already processing another recovery request.');
    const primary = this.nodes.primaryNode();
    if (!primary)
      throw new ClusterError('NO_PRIMARY', 'node recovery failed: there is no live primary to recover from');
    this.running = id;
    try {
      const cfg = this.getConfig();
      const cred = credentials(cfg, cfg.recovery_user, cfg.recovery_password, 'template1', loadPoolPasswd(cfg));
      this.log.info({ node: id, primary: primary.id }, 'starting online recovery');
      let conn: CheckConnection;
      try {
        conn = await CheckConnection.open(primary, cred, CONNECT_TIMEOUT_MS, 'pgrelay recovery');
      } catch (e) {
        throw new ClusterError(
          'INVALID_STATE',
          `node recovery failed, unable to connect to primary node ${primary.id} as recovery_user "${cfg.recovery_user}": ${(e as Error).message}`,
        );
      }
      const host = scriptHost(node.host);
      const dataDir = node.config.data_directory;
      try {
        await conn.query('SET statement_timeout To 0', CONNECT_TIMEOUT_MS);
        const script = cfg.recovery_1st_stage_command;
        if (script !== '') {
          const sql = `SELECT pgpool_recovery(${[
            sqlLiteral(script),
            sqlLiteral(host),
            sqlLiteral(dataDir),
            sqlLiteral(String(primary.port)),
            String(id),
            sqlLiteral(String(node.port)),
            sqlLiteral(scriptHost(primary.host)),
          ].join(', ')})`;
          this.log.info({ node: id, command: sql }, 'online recovery: 1st stage');
          await this.run(conn, sql, FIRST_STAGE_LIMIT_MS, `execution of command failed at "1st stage" (${script})`);
          this.log.info({ node: id }, 'online recovery: 1st stage is done');
        } else {
          this.log.warn({ node: id }, 'online recovery: recovery_1st_stage_command is empty, no 1st stage script run');
        }
        const start = `SELECT pgpool_remote_start(${sqlLiteral(host)}, ${sqlLiteral(dataDir)})`;
        this.log.info({ node: id, command: start }, 'online recovery: starting the node');
        await this.run(conn, start, FIRST_STAGE_LIMIT_MS, 'executing remote start failed');
      } finally {
        conn.close();
      }
      await this.waitForNode(id, cfg);
      this.log.info({ node: id }, 'online recovery: node started, attaching it');
      await this.attach(id);
      this.log.info({ node: id }, 'online recovery done');
    } finally {
      this.running = -1;
    }
  }

  private async run(conn: CheckConnection, sql: string, timeoutMs: number, what: string): Promise<void> {
    try {
      await conn.query(sql, timeoutMs);
    } catch (e) {
      if (e instanceof CheckQueryError && e.code === '42883')
        throw new ClusterError(
          'INVALID_STATE',
          `${what}: the pgpool_recovery extension is not installed on the primary (run CREATE EXTENSION pgpool_recovery in its template1 database): ${e.message}`,
        );
      throw new ClusterError('INVALID_STATE', `${what}: ${(e as Error).message}`);
    }
  }

  /** Until the node accepts a connection as recovery_user (postgres, then template1), within recovery_timeout. */
  private async waitForNode(id: number, cfg: Config): Promise<void> {
    const node = this.nodes.get(id)!;
    const deadline = Date.now() + cfg.recovery_timeout * 1000;
    const pw = loadPoolPasswd(cfg);
    let last = '';
    for (;;) {
      for (const db of ['postgres', 'template1']) {
        try {
          const c = await CheckConnection.open(
            node,
            credentials(cfg, cfg.recovery_user, cfg.recovery_password, db, pw),
            Math.max(1000, Math.min(CONNECT_TIMEOUT_MS, deadline - Date.now())),
            'pgrelay recovery',
          );
          c.close();
          return;
        } catch (e) {
          last = (e as Error).message;
        }
      }
      if (this.tasks.stopped) throw new ClusterError('STOPPED', 'pgrelay is stopping');
      if (Date.now() >= deadline)
        throw new ClusterError(
          'TIMEOUT',
          `recovery is checking if postmaster is started: node ${id} (${node.host}:${node.port}) did not accept connections as user "${cfg.recovery_user}" within recovery_timeout (${cfg.recovery_timeout} s): ${last}`,
        );
      await this.tasks.sleep(1000);
    }
  }
}
