/**
 * The parameter table: every key of `Config` described the way pgpool-II's
 * src/config/pool_config_variables.c describes it (name, type, code default,
 * range, unit, context, one-line description), plus pgrelay-only keys.
 *
 * Three scopes:
 *  - 'global'       stored at Config[name]
 *  - 'health_check' index-free value stored at Config.health_check[field]; the
 *                   same name with a numeric suffix (health_check_period1) is a
 *                   per-node override resolved into Config.health_check_per_node
 *  - 'backend'      requires the numeric suffix (backend_hostname0); stored in
 *                   Config.backends
 */
import type { BackendConfig, Config, HealthCheckConfig, ParamContext } from './types.js';
import type { ParamUnit } from './units.js';

export type ParamKind = 'bool' | 'int' | 'real' | 'string' | 'enum' | 'list';
export type ParamScope = 'global' | 'health_check' | 'backend';
/**
 * Category of a parameter. 'backend' and 'health_check' are also pgpool's
 * `PGPOOL SHOW <group>` groups; pgpool's 'watchdog' group shows the pgpool
 * parameters of group 'coordination', 'heartbeat' is empty (see SHOW_GROUPS).
 */
export type ParamGroup =
  | 'connection'
  | 'pool'
  | 'backend'
  | 'load_balance'
  | 'streaming_replication'
  | 'health_check'
  | 'failover'
  | 'auth'
  | 'ssl'
  | 'logging'
  | 'admin'
  | 'coordination'
  | 'misc';
export type ParamValue = boolean | number | string | string[];

/** Groups accepted by `PGPOOL SHOW <group>` in pgpool (pool_config_variables.c ConfigureVarGroups). */
export const SHOW_GROUPS = ['backend', 'watchdog', 'heartbeat', 'health_check'] as const;
export type ShowGroup = (typeof SHOW_GROUPS)[number];

/** Highest node id + 1 (pgpool's MAX_NUM_BACKENDS). */
export const MAX_BACKENDS = 128;
export const INT_MAX = 2147483647;

type ScalarKeys<T> = { [K in keyof T]: T[K] extends boolean | number | string | string[] ? K : never }[keyof T];
export type GlobalConfigKey = Exclude<ScalarKeys<Config>, 'config_file'>;
export type BackendField = Exclude<keyof BackendConfig, 'id' | 'allow_to_failover' | 'always_primary'> | 'flag';

export interface ParamDef {
  /** pgpool parameter name (lower case). For per-node params: the name without the index. */
  name: string;
  kind: ParamKind;
  scope: ParamScope;
  default: ParamValue;
  context: ParamContext;
  group: ParamGroup;
  /** One line, printed by PGPOOL SHOW ALL. */
  description: string;
  /** Value printed as '*****'. */
  secret?: boolean;
  /** int/real range (inclusive). */
  min?: number;
  max?: number;
  /** Base unit of an int; values may be written with a unit suffix ('5min', '10MB'). */
  unit?: ParamUnit;
  /** enum: accepted values (matched case-insensitively, stored lower case). */
  values?: readonly string[];
  /** enum: extra accepted spellings mapped to a canonical value. */
  aliases?: Readonly<Record<string, string>>;
  /** list: separator. */
  separator?: ',' | ';';
  /** Relative value resolved against the config file's directory. */
  path?: boolean;
  /** Not a pgpool parameter. */
  pgrelay?: boolean;
  /** scope 'health_check': field of HealthCheckConfig. */
  hcField?: keyof HealthCheckConfig;
  /** scope 'backend': field of BackendConfig ('flag' = allow_to_failover + always_primary). */
  backendField?: BackendField;
}

const S: ParamContext = 'session';
const R: ParamContext = 'reload';
const I: ParamContext = 'restart';

function g(
  name: GlobalConfigKey,
  kind: ParamKind,
  def: ParamValue,
  context: ParamContext,
  group: ParamGroup,
  description: string,
  extra: Partial<ParamDef> = {},
): ParamDef {
  return { name, kind, scope: 'global', default: def, context, group, description, ...extra };
}

function hc(
  name: string,
  hcField: keyof HealthCheckConfig,
  kind: 'int' | 'string',
  def: number | string,
  description: string,
  extra: Partial<ParamDef> = {},
): ParamDef {
  return {
    name,
    kind,
    scope: 'health_check',
    default: def,
    context: R,
    group: 'health_check',
    description,
    hcField,
    ...(kind === 'int' ? { min: 0, max: INT_MAX } : {}),
    ...extra,
  };
}

function be(
  name: string,
  backendField: BackendField,
  kind: ParamKind,
  def: ParamValue,
  description: string,
  extra: Partial<ParamDef> = {},
): ParamDef {
  return {
    name,
    kind,
    scope: 'backend',
    default: def,
    context: R,
    group: 'backend',
    description,
    backendField,
    ...extra,
  };
}

export const LOG_LEVELS = [
  'debug5',
  'debug4',
  'debug3',
  'debug2',
  'debug1',
  'info',
  'notice',
  'warning',
  'error',
  'log',
  'fatal',
  'panic',
] as const;

/**
 * Order: backend group, health_check group, then the rest roughly as in
 * pgpool.conf.sample. PGPOOL SHOW ALL lists in this order.
 */
export const PARAMS: readonly ParamDef[] = [
  // ---- backend group (per node, index required)
  be('backend_hostname', 'hostname', 'string', '', 'hostname or IP address of PostgreSQL backend.'),
  be('backend_port', 'port', 'int', 5432, 'port number of PostgreSQL backend.', { min: 1, max: 65535 }),
  be('backend_weight', 'weight', 'real', 1, 'load balance weight of backend.', { min: 0, max: 100000000 }),
  be('backend_data_directory', 'data_directory', 'string', '', 'data directory of the backend.'),
  be('backend_application_name', 'application_name', 'string', '', 'application_name of the backend.'),
  be('backend_flag', 'flag', 'string', 'ALLOW_TO_FAILOVER', 'Controls various backend behavior.'),

  // ---- health_check group (index-free default + per-node override)
  hc('health_check_period', 'period', 'int', 0, 'Time interval in seconds between the health checks.', { unit: 's' }),
  hc('health_check_timeout', 'timeout', 'int', 20, 'Backend node health check timeout value in seconds.', {
    unit: 's',
  }),
  hc(
    'health_check_user',
    'user',
    'string',
    '',
    "User name for PostgreSQL backend health check (pgpool 4.3's code default is 'nobody'; pgrelay uses '' as newer pgpool).",
  ),
  hc('health_check_password', 'password', 'string', '', 'Password for PostgreSQL backend health check database user.', {
    secret: true,
  }),
  hc(
    'health_check_database',
    'database',
    'string',
    'postgres',
    "The database name to be used to perform PostgreSQL backend health check ('' means postgres, as in pgpool).",
  ),
  hc(
    'health_check_max_retries',
    'max_retries',
    'int',
    0,
    'The maximum number of times to retry a failed health check before giving up and initiating failover.',
  ),
  hc(
    'health_check_retry_delay',
    'retry_delay',
    'int',
    1,
    'The amount of time in seconds to wait between failed health check retries.',
    { unit: 's' },
  ),
  hc(
    'connect_timeout',
    'connect_timeout',
    'int',
    10000,
    'Timeout in milliseconds before giving up connecting to backend.',
    { unit: 'ms' },
  ),

  // ---- connections
  g(
    'listen_addresses',
    'string',
    'localhost',
    I,
    'connection',
    'hostname(s) or IP address(es) on which pgpool will listen on.',
  ),
  g(
    'unix_socket_directories',
    'list',
    ['/tmp'],
    I,
    'connection',
    "directories for the Unix-domain socket .s.PGSQL.<port> ('' = none)",
    { separator: ',' },
  ),
  g(
    'unix_socket_permissions',
    'int',
    0o777,
    I,
    'connection',
    'permissions of the Unix-domain socket (octal, e.g. 0770)',
    { min: 0, max: 0o777 },
  ),
  g('port', 'int', 9999, I, 'connection', 'tcp/IP port number on which pgpool will listen on.', { min: 1, max: 65535 }),
  g('num_init_children', 'int', 32, I, 'pool', 'Maximim number of child processs to handle client connections.', {
    min: 1,
    max: INT_MAX,
  }),
  g('reserved_connections', 'int', 0, I, 'pool', 'Number of reserved connections.', { min: 0, max: INT_MAX }),
  g('listen_backlog_multiplier', 'int', 2, I, 'connection', 'length of connection queue from frontend to pgpool-II', {
    min: 1,
    max: INT_MAX,
  }),
  g('authentication_timeout', 'int', 60, I, 'connection', 'Time out value in seconds for client authentication.', {
    min: 0,
    max: INT_MAX,
    unit: 's',
  }),
  g(
    'max_unauthenticated_connections',
    'int',
    -1,
    R,
    'connection',
    'pgrelay: connections still starting up or authenticating; beyond it 53300 (-1 = 4 x num_init_children, 0 = no limit).',
    { min: -1, max: INT_MAX, pgrelay: true },
  ),
  g(
    'max_message_size',
    'int',
    268435456,
    R,
    'connection',
    'pgrelay: maximum size in bytes of one protocol message from a client.',
    { min: 1024, max: 1073741824, unit: 'B', pgrelay: true },
  ),
  g(
    'client_queue_timeout',
    'int',
    60,
    R,
    'pool',
    'pgrelay: seconds a client waits for a free session slot before 53300 (0 = wait forever).',
    { min: 0, max: INT_MAX, unit: 's', pgrelay: true },
  ),

  // ---- transaction pooling (pgrelay; PgBouncer's names)
  g(
    'pool_mode',
    'enum',
    'session',
    I,
    'pool',
    'pgrelay: session = a client keeps its backend connections for its whole session (pgpool); transaction = only from the start of a transaction (or autocommit statement, or extended-protocol batch up to Sync) to its end.',
    { values: ['session', 'transaction'], pgrelay: true },
  ),
  g(
    'max_client_conn',
    'int',
    100,
    R,
    'pool',
    'pgrelay (PgBouncer): with pool_mode = transaction, the most client connections at once (num_init_children then limits nothing).',
    { min: 1, max: INT_MAX, pgrelay: true },
  ),
  g(
    'default_pool_size',
    'int',
    20,
    R,
    'pool',
    'pgrelay (PgBouncer): with pool_mode = transaction, backend connections per node for each user, database and start-up parameters.',
    { min: 1, max: INT_MAX, pgrelay: true },
  ),
  g(
    'max_db_connections',
    'int',
    0,
    R,
    'pool',
    'pgrelay (PgBouncer): with pool_mode = transaction, backend connections per node for one database, all users together (0 = no limit).',
    { min: 0, max: INT_MAX, pgrelay: true },
  ),
  g(
    'max_user_connections',
    'int',
    0,
    R,
    'pool',
    'pgrelay (PgBouncer): with pool_mode = transaction, backend connections per node for one user, all databases together (0 = no limit).',
    { min: 0, max: INT_MAX, pgrelay: true },
  ),
  g(
    'reserve_pool_size',
    'int',
    0,
    R,
    'pool',
    'pgrelay (PgBouncer): extra backend connections a pool may open for a client that waited reserve_pool_timeout.',
    { min: 0, max: INT_MAX, pgrelay: true },
  ),
  g(
    'reserve_pool_timeout',
    'int',
    5,
    R,
    'pool',
    'pgrelay (PgBouncer): seconds a client waits before the reserve pool may serve it.',
    { min: 0, max: INT_MAX, unit: 's', pgrelay: true },
  ),
  g(
    'server_idle_timeout',
    'int',
    600,
    R,
    'pool',
    'pgrelay (PgBouncer): seconds an idle pooled backend connection is kept (0 = forever).',
    { min: 0, max: INT_MAX, unit: 's', pgrelay: true },
  ),
  g(
    'server_lifetime',
    'int',
    3600,
    R,
    'pool',
    'pgrelay (PgBouncer): a pooled backend connection older than this many seconds is closed when released (0 = no limit).',
    { min: 0, max: INT_MAX, unit: 's', pgrelay: true },
  ),
  g(
    'idle_transaction_timeout',
    'int',
    0,
    R,
    'pool',
    'pgrelay (PgBouncer): a client idle inside a transaction longer than this many seconds is disconnected with FATAL 25P03, its transaction rolled back (0 = never).',
    { min: 0, max: INT_MAX, unit: 's', pgrelay: true },
  ),
  g(
    'query_timeout',
    'int',
    0,
    R,
    'pool',
    'pgrelay (PgBouncer): a client whose request has been outstanding this many seconds (nothing came back complete, nothing more came from it) is disconnected with FATAL 57014, its backend connections closed (0 = never).',
    { min: 0, max: INT_MAX, unit: 's', pgrelay: true },
  ),
  g(
    'query_wait_timeout',
    'int',
    120,
    R,
    'pool',
    'pgrelay (PgBouncer): seconds a client waits for a pooled backend connection before FATAL 53300 (0 = forever).',
    { min: 0, max: INT_MAX, unit: 's', pgrelay: true },
  ),
  g(
    'database_pool_settings',
    'string',
    '',
    R,
    'pool',
    "pgrelay (PgBouncer's [databases]): per-database pool settings, 'name:key=value key=value, …' with keys pool_mode (new sessions), pool_size, reserve_pool_size, max_db_connections.",
    { pgrelay: true },
  ),
  g(
    'user_pool_settings',
    'string',
    '',
    R,
    'pool',
    "pgrelay (PgBouncer's [users]): per-user pool settings, 'name:key=value …, …' with keys pool_mode (new sessions), pool_size, reserve_pool_size, max_user_connections; over the database's.",
    { pgrelay: true },
  ),
  g(
    'max_prepared_statements',
    'int',
    200,
    R,
    'pool',
    'pgrelay (PgBouncer): with pool_mode = transaction, protocol-level prepared statements kept per backend connection (0 = not tracked: named statements do not follow clients).',
    { min: 0, max: INT_MAX, pgrelay: true },
  ),

  // ---- pooling
  g('max_pool', 'int', 4, I, 'pool', 'Maximum number of connection pools per child process.', { min: 0, max: INT_MAX }),
  g('connection_cache', 'bool', true, I, 'pool', 'Caches connections to backends.'),
  g(
    'reset_query_list',
    'list',
    ['ABORT', 'DISCARD ALL'],
    R,
    'pool',
    'list of commands sent to reset the backend connection when user session exits.',
    { separator: ';' },
  ),
  g('client_idle_limit', 'int', 0, S, 'pool', 'idle time in seconds to disconnects a client.', {
    min: 0,
    max: INT_MAX,
    unit: 's',
  }),
  g('connection_life_time', 'int', 0, I, 'pool', 'Cached connections expiration time in seconds.', {
    min: 0,
    max: INT_MAX,
    unit: 's',
  }),
  g('child_life_time', 'int', 300, I, 'pool', 'pgpool-II child process life time in seconds.', {
    min: 0,
    max: INT_MAX,
    unit: 's',
  }),
  g(
    'child_max_connections',
    'int',
    0,
    I,
    'pool',
    'A pgpool-II child process will be terminated after this many connections from clients.',
    { min: 0, max: INT_MAX },
  ),

  // ---- load balancing
  g('load_balance_mode', 'bool', true, I, 'load_balance', 'Enables load balancing of queries.'),
  g(
    'ignore_leading_white_space',
    'bool',
    true,
    R,
    'load_balance',
    'Ignores leading white spaces of each query string.',
  ),
  g(
    'allow_sql_comments',
    'bool',
    false,
    S,
    'load_balance',
    'Ignore SQL comments, while judging if load balance or query cache is possible.',
  ),
  g(
    'disable_load_balance_on_write',
    'enum',
    'transaction',
    R,
    'load_balance',
    'Load balance behavior when write query is received.',
    { values: ['off', 'transaction', 'trans_transaction', 'always', 'dml_adaptive'] },
  ),
  g('statement_level_load_balance', 'bool', false, R, 'load_balance', 'Enables statement level load balancing'),
  g('write_function_list', 'list', [], R, 'load_balance', 'list of functions that writes to database.', {
    separator: ',',
  }),
  g(
    'dml_adaptive_object_relationship_list',
    'list',
    [],
    R,
    'load_balance',
    "with dml_adaptive: 'object:dependent' pairs; writing the object also sends reads of the dependent (table or function) to the primary",
    { separator: ',' },
  ),
  g('read_only_function_list', 'list', [], R, 'load_balance', 'list of functions that does not writes to database.', {
    separator: ',',
  }),
  g(
    'primary_routing_query_pattern_list',
    'list',
    [],
    R,
    'load_balance',
    'list of query patterns that should be sent to primary node.',
    { separator: ';' },
  ),
  g('database_redirect_preference_list', 'string', '', R, 'load_balance', 'redirect by database name.'),
  g('app_name_redirect_preference_list', 'string', '', R, 'load_balance', 'redirect by application name.'),
  g('user_redirect_preference_list', 'string', '', R, 'load_balance', 'redirect by user name.'),
  g('check_temp_table', 'enum', 'catalog', R, 'misc', 'Enables temporary table check.', {
    values: ['catalog', 'trace', 'none'],
    aliases: { on: 'catalog', off: 'none' },
  }),
  g('check_unlogged_table', 'bool', true, S, 'misc', 'Enables unlogged table check.'),
  g('relcache_expire', 'int', 0, I, 'misc', 'Relation cache expiration time in seconds.', {
    min: 0,
    max: INT_MAX,
    unit: 's',
  }),
  g('relcache_size', 'int', 256, I, 'misc', 'Number of relation cache entry.', { min: 0, max: INT_MAX }),

  // ---- streaming replication check
  g(
    'sr_check_period',
    'int',
    10,
    R,
    'streaming_replication',
    'Time interval in seconds between the streaming replication delay checks.',
    { min: 0, max: INT_MAX, unit: 's' },
  ),
  g(
    'sr_check_user',
    'string',
    '',
    R,
    'streaming_replication',
    "The User name to perform streaming replication delay check (pgpool 4.3's code default is 'nobody'; pgrelay uses '' as newer pgpool).",
  ),
  g(
    'sr_check_password',
    'string',
    '',
    R,
    'streaming_replication',
    'The password for user to perform streaming replication delay check.',
    { secret: true },
  ),
  g(
    'sr_check_database',
    'string',
    'postgres',
    R,
    'streaming_replication',
    'The database name to perform streaming replication delay check.',
  ),
  g('delay_threshold', 'int', 0, R, 'streaming_replication', 'standby delay threshold in bytes.', {
    min: 0,
    max: Number.MAX_SAFE_INTEGER,
    unit: 'B',
  }),
  g(
    'delay_threshold_by_time',
    'int',
    0,
    R,
    'streaming_replication',
    'standby delay threshold by time in milliseconds.',
    { min: 0, max: INT_MAX, unit: 'ms' },
  ),
  g(
    'prefer_lower_delay_standby',
    'bool',
    false,
    R,
    'streaming_replication',
    'If the load balance node is delayed over delay_threshold on SR, pgpool find another standby node which is lower delayed.',
  ),
  g('log_standby_delay', 'enum', 'if_over_threshold', R, 'streaming_replication', 'When to log standby delay.', {
    values: ['always', 'if_over_threshold', 'none'],
  }),
  g(
    'read_your_writes',
    'enum',
    'session',
    R,
    'load_balance',
    'pgrelay: a load-balanced read runs on a standby only once it replayed the writes the session (session) or any client (global) was told are done; off as pgpool.',
    { values: ['off', 'session', 'global'], pgrelay: true },
  ),
  g(
    'read_your_writes_wait',
    'int',
    10,
    R,
    'load_balance',
    'pgrelay: how long a read waits for a standby to replay what it must see before it runs on the primary.',
    { min: 0, max: 60_000, unit: 'ms', pgrelay: true },
  ),

  // ---- failover
  g('failover_command', 'string', '', R, 'failover', 'Command to execute when backend node is detached.'),
  g(
    'follow_primary_command',
    'string',
    '',
    R,
    'failover',
    'Command to execute in streaming replication mode after a primary node failover.',
  ),
  g('failback_command', 'string', '', R, 'failover', 'Command to execute when backend node is attached.'),
  g(
    'failover_on_backend_error',
    'bool',
    true,
    R,
    'failover',
    'Triggers fail over when reading/writing to backend socket fails.',
  ),
  g('failover_on_backend_shutdown', 'bool', false, R, 'failover', 'Triggers fail over when backend is shutdown.'),
  g(
    'search_primary_node_timeout',
    'int',
    300,
    R,
    'failover',
    'Max time in seconds to search for primary node after failover.',
    { min: 0, max: INT_MAX, unit: 's' },
  ),
  g('detach_false_primary', 'bool', false, R, 'failover', 'Automatically detaches false primary node.'),
  g(
    'auto_failback',
    'bool',
    false,
    R,
    'failover',
    'Enables nodes automatically reattach, when detached node continue streaming replication.',
  ),
  g('auto_failback_interval', 'int', 60, R, 'failover', 'min interval of executing auto_failback in seconds', {
    min: 0,
    max: INT_MAX,
    unit: 's',
  }),

  // ---- coordination of several instances (etcd) and pgpool's watchdog names for what it shares
  g(
    'coordination',
    'enum',
    'off',
    I,
    'coordination',
    'pgrelay: how several pgrelay instances share one node state and one failover decision: off (each decides alone) or etcd.',
    { values: ['off', 'etcd'], pgrelay: true },
  ),
  g(
    'cluster_name',
    'string',
    'pgrelay',
    I,
    'coordination',
    'pgrelay: name of the pgrelay cluster; instances with the same name (and etcd_prefix) coordinate.',
    { pgrelay: true },
  ),
  g(
    'instance_name',
    'string',
    '',
    I,
    'coordination',
    "pgrelay: this instance's name among the coordinated instances ('' = <host name>:<port>).",
    { pgrelay: true },
  ),
  g('etcd_endpoints', 'list', [], I, 'coordination', 'pgrelay: etcd client URLs (http://host:2379, https://...).', {
    separator: ',',
    pgrelay: true,
  }),
  g(
    'etcd_prefix',
    'string',
    '',
    I,
    'coordination',
    "pgrelay: etcd key prefix of this cluster ('' = /pgrelay/<cluster_name>/).",
    { pgrelay: true },
  ),
  g('etcd_user', 'string', '', I, 'coordination', 'pgrelay: etcd user name (etcd authentication).', {
    pgrelay: true,
  }),
  g('etcd_password', 'string', '', I, 'coordination', 'pgrelay: etcd password.', { pgrelay: true, secret: true }),
  g('etcd_cacert', 'string', '', I, 'coordination', 'pgrelay: CA certificate verifying the etcd servers (https).', {
    path: true,
    pgrelay: true,
  }),
  g('etcd_cert', 'string', '', I, 'coordination', 'pgrelay: client certificate presented to etcd.', {
    path: true,
    pgrelay: true,
  }),
  g('etcd_key', 'string', '', I, 'coordination', 'pgrelay: private key of etcd_cert.', {
    path: true,
    pgrelay: true,
  }),
  g(
    'etcd_lease_ttl',
    'int',
    10,
    I,
    'coordination',
    'pgrelay: seconds an instance stays a member (and the leader stays leader) without reaching etcd.',
    { min: 2, max: 3600, unit: 's', pgrelay: true },
  ),
  g(
    'etcd_unreachable_grace',
    'int',
    30,
    R,
    'coordination',
    'pgrelay: seconds without etcd after which /readyz reports not ready (the instance keeps serving).',
    { min: 0, max: INT_MAX, unit: 's', pgrelay: true },
  ),
  g(
    'failover_when_quorum_exists',
    'bool',
    true,
    R,
    'coordination',
    'Do failover only when the cluster has the quorum (with etcd: only the elected leader, holding its lease, decides).',
  ),
  g(
    'failover_require_consensus',
    'bool',
    true,
    R,
    'coordination',
    'Only do failover when a majority of the live instances find the node down.',
  ),
  g(
    'enable_consensus_with_half_votes',
    'bool',
    false,
    R,
    'coordination',
    'Half of the live instances (instead of a majority) suffice for the consensus.',
  ),
  g('delegate_ip', 'string', '', R, 'coordination', 'Delegate IP address held by the leader ($_IP_$ of if_up_cmd).'),
  g(
    'if_up_cmd',
    'string',
    '',
    R,
    'coordination',
    'Command run by the instance that becomes the leader (pgrelay runs it as given; $_IP_$ = delegate_ip).',
  ),
  g('if_down_cmd', 'string', '', R, 'coordination', 'Command run by the leader that gives up its leadership.'),
  g('arping_cmd', 'string', '', R, 'coordination', 'Command run after if_up_cmd (announces the delegate IP).'),

  // ---- authentication / TLS
  g('enable_pool_hba', 'bool', false, R, 'auth', 'Use pool_hba.conf for client authentication.'),
  g(
    'hba_file',
    'string',
    'pool_hba.conf',
    R,
    'auth',
    'pgrelay: path of pool_hba.conf (relative to the configuration file directory).',
    { path: true, pgrelay: true },
  ),
  g('pool_passwd', 'string', 'pool_passwd', I, 'auth', 'File name of pool_passwd for md5 authentication.', {
    path: true,
    secret: true,
  }),
  g(
    'allow_replication_connections',
    'bool',
    true,
    R,
    'connection',
    'pgrelay: pass replication connections (replication=true|database) through to the primary, untouched; off refuses them before authentication.',
    { pgrelay: true },
  ),
  g(
    'allow_clear_text_frontend_auth',
    'bool',
    false,
    R,
    'auth',
    'allow to use clear text password authentication with clients, when pool_passwd does not contain the user password.',
  ),
  g('ssl', 'bool', false, I, 'ssl', 'Enables SSL support for frontend and backend connections'),
  g('ssl_key', 'string', '', I, 'ssl', 'SSL private key file.', { path: true }),
  g('ssl_cert', 'string', '', I, 'ssl', 'SSL public certificate file.', { path: true }),
  g('ssl_ca_cert', 'string', '', I, 'ssl', 'Single PEM format file containing CA root certificate(s).', { path: true }),
  g('ssl_crl_file', 'string', '', I, 'ssl', 'SSL certificate revocation list file', { path: true }),
  g('ssl_ciphers', 'string', 'HIGH:MEDIUM:+3DES:!aNULL', I, 'ssl', 'Allowed SSL ciphers.'),
  g(
    'ssl_prefer_server_ciphers',
    'bool',
    false,
    I,
    'ssl',
    "Use server's SSL cipher preferences, rather than the client's",
  ),
  g('ssl_ecdh_curve', 'string', 'prime256v1', I, 'ssl', 'The curve to use in ECDH key exchange.'),
  g('ssl_dh_params_file', 'string', '', I, 'ssl', 'Path to the Diffie-Hellman parameters contained file', {
    path: true,
  }),
  g('ssl_passphrase_command', 'string', '', I, 'ssl', 'Command to obtain passphrases for SSL private key files.'),
  g('ssl_min_protocol_version', 'enum', 'tlsv1.2', I, 'ssl', 'Minimum SSL/TLS protocol version to use.', {
    values: ['tlsv1', 'tlsv1.1', 'tlsv1.2', 'tlsv1.3'],
  }),
  g('ssl_max_protocol_version', 'enum', '', I, 'ssl', "Maximum SSL/TLS protocol version to use ('' = no limit).", {
    values: ['', 'tlsv1', 'tlsv1.1', 'tlsv1.2', 'tlsv1.3'],
  }),
  g(
    'backend_ssl_mode',
    'enum',
    'prefer',
    I,
    'ssl',
    'pgrelay: TLS to the backends (libpq sslmode): disable, prefer (TLS when ssl = on and the server accepts it), require, verify-ca, verify-full.',
    { values: ['disable', 'prefer', 'require', 'verify-ca', 'verify-full'], pgrelay: true },
  ),
  g(
    'backend_ssl_root_cert',
    'string',
    '',
    I,
    'ssl',
    "pgrelay: CA certificate file verifying the backends' certificates (verify-ca / verify-full; '' = system CAs).",
    { path: true, pgrelay: true },
  ),
  g(
    'pool_key_file',
    'string',
    '',
    I,
    'auth',
    'pgrelay: AES key file for pool_passwd entries (pgpool -k); empty = $PGPOOLKEYFILE or ~/.pgpoolkey.',
    { path: true, pgrelay: true },
  ),

  // ---- admin / metrics / logging
  g(
    'admin_users',
    'list',
    [],
    R,
    'admin',
    'pgrelay: users allowed to run SHOW pool_* / PGPOOL SHOW|SET (empty = everyone, as pgpool).',
    { separator: ',', pgrelay: true },
  ),
  g('metrics_port', 'int', 0, I, 'admin', 'pgrelay: port of the Prometheus /metrics HTTP endpoint (0 = off).', {
    min: 0,
    max: 65535,
    pgrelay: true,
  }),
  g(
    'metrics_listen_address',
    'string',
    'localhost',
    I,
    'admin',
    "pgrelay: address of the metrics/dashboard HTTP endpoint ('localhost', '*' = all, an address or host name).",
    { pgrelay: true },
  ),
  g('dashboard', 'bool', false, I, 'admin', 'pgrelay: serve the web dashboard on metrics_port.', { pgrelay: true }),
  g('pid_file_name', 'string', '/var/run/pgpool/pgpool.pid', I, 'misc', 'Path to store pgpool-II pid file.', {
    path: true,
  }),
  g('logdir', 'string', '/tmp', I, 'logging', 'PgPool status file logging directory.', { path: true }),
  g(
    'log_destination',
    'string',
    'stdout',
    R,
    'logging',
    "where JSON logs go: stdout (pgrelay's default; pgpool's is stderr), stderr, or file = <logdir>/pgrelay.log",
  ),
  g('log_min_messages', 'enum', 'warning', S, 'logging', 'Which messages should be emitted to server log.', {
    values: LOG_LEVELS,
    aliases: { debug: 'debug2' },
  }),
  g('log_connections', 'bool', false, R, 'logging', 'Logs each successful connection.'),
  g('log_disconnections', 'bool', false, R, 'logging', 'Logs end of a session.'),
  g('log_hostname', 'bool', false, R, 'logging', 'Logs the host name in the connection logs.'),
  g('log_statement', 'bool', false, S, 'logging', 'Logs all statements in the pgpool logs.'),
  g('log_per_node_statement', 'bool', false, S, 'logging', 'Logs per node detailed SQL statements.'),
  g(
    'notice_per_node_statement',
    'bool',
    false,
    S,
    'logging',
    'Logs per node detailed SQL statements as notice messages.',
  ),

  // ---- PCP and online recovery
  g(
    'pcp_listen_addresses',
    'string',
    'localhost',
    I,
    'connection',
    'hostname(s) or IP address(es) on which pcp will listen on.',
  ),
  g('pcp_port', 'int', 9898, I, 'connection', 'tcp/ip pcp port number (pgrelay: 0 = no PCP listener).', {
    min: 0,
    max: 65535,
  }),
  g(
    'pcp_socket_dir',
    'list',
    ['/tmp'],
    I,
    'connection',
    'The directory to create the UNIX domain socket for accepting pgpool-II PCP connections.',
    {
      separator: ',',
    },
  ),
  g('recovery_user', 'string', 'nobody', R, 'misc', 'User name for online recovery.'),
  g('recovery_password', 'string', '', R, 'misc', 'Password for online recovery.', { secret: true }),
  g('recovery_1st_stage_command', 'string', '', R, 'misc', 'Command to execute in first stage recovery.'),
  g(
    'recovery_2nd_stage_command',
    'string',
    '',
    R,
    'misc',
    'Command to execute in second stage recovery (not used in streaming replication mode).',
  ),
  g(
    'recovery_timeout',
    'int',
    90,
    R,
    'misc',
    'Maximum time in seconds to wait for the recovering PostgreSQL node, and for sessions to end before a graceful detach or promote.',
    {
      min: 0,
      max: INT_MAX,
      unit: 's',
    },
  ),
];

const BY_NAME = new Map<string, ParamDef>(PARAMS.map((p) => [p.name, p]));

/** Look up a parameter by its (index-free) pgpool name, case-insensitively. */
export function findParamDef(name: string): ParamDef | undefined {
  return BY_NAME.get(name.toLowerCase());
}

/**
 * Split `backend_port3` into its definition and index. Returns undefined when
 * the name is not a known parameter. index is -1 for an index-free name.
 */
export function resolveParamName(name: string): { def: ParamDef; index: number } | undefined {
  const lower = name.toLowerCase();
  const direct = BY_NAME.get(lower);
  if (direct) return { def: direct, index: -1 };
  const m = /^([a-z_]+?)(\d+)$/.exec(lower);
  if (!m) return undefined;
  const def = BY_NAME.get(m[1]!);
  if (!def || def.scope === 'global') return undefined;
  return { def, index: Number(m[2]) };
}
