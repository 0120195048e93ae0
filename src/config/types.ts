/**
 * Typed configuration. Keys use pgpool-II's parameter names (snake_case) so an
 * operator's pgpool.conf reads straight into this shape; pgrelay-only keys are
 * marked as such. Times are in the unit pgpool documents for that key
 * (seconds, except connect_timeout and delay_threshold_by_time in ms).
 */

export type BackendFlag = 'ALLOW_TO_FAILOVER' | 'DISALLOW_TO_FAILOVER' | 'ALWAYS_PRIMARY';

export interface BackendConfig {
  /** Node id: the N in backend_hostnameN. */
  id: number;
  hostname: string;
  port: number;
  /** Raw weight as written (pgpool normalises over all nodes). */
  weight: number;
  data_directory: string;
  /** True unless DISALLOW_TO_FAILOVER is set. */
  allow_to_failover: boolean;
  /** ALWAYS_PRIMARY: this node is the primary whatever pg_is_in_recovery() says. */
  always_primary: boolean;
  /** Matched against pg_stat_replication.application_name by the sr check. */
  application_name: string;
}

/** Per-node health-check settings after applying the numeric-suffix overrides. */
export interface HealthCheckConfig {
  period: number;
  timeout: number;
  user: string;
  password: string;
  database: string;
  max_retries: number;
  retry_delay: number;
  connect_timeout: number;
}

/**
 * read_your_writes (pgrelay):
 * - off: pgpool's behaviour (a read may run on a standby that has not replayed the session's writes);
 * - session: a read of a session that wrote runs on a standby only once it replayed those writes;
 * - global: every read waits for the newest write any client of this pgrelay was told is done.
 */
/** session: pgpool's pooling (a client owns its backends); transaction: backends per transaction. */
export type PoolMode = 'session' | 'transaction';
export type ReadYourWritesMode = 'off' | 'session' | 'global';
export type DisableLbOnWrite = 'off' | 'transaction' | 'trans_transaction' | 'always' | 'dml_adaptive';
export type LogStandbyDelay = 'none' | 'always' | 'if_over_threshold';
export type LogLevel =
  | 'debug5'
  | 'debug4'
  | 'debug3'
  | 'debug2'
  | 'debug1'
  | 'info'
  | 'notice'
  | 'warning'
  | 'error'
  | 'log'
  | 'fatal'
  | 'panic';

export interface Config {
  /** File the configuration came from ('' when built from defaults/flags only). */
  config_file: string;

  // ---- connections
  listen_addresses: string;
  /** Directories for the Unix-domain socket (pgpool 4.3's name; `socket_dir` before). */
  unix_socket_directories: string[];
  unix_socket_permissions: number;
  port: number;
  /** pgrelay: maximum size of one protocol message from a client, bytes. */
  max_message_size: number;
  allow_replication_connections: boolean;
  num_init_children: number;
  reserved_connections: number;
  /** pgrelay: how long a client waits for a session slot before 53300 (s, 0 = forever). */
  client_queue_timeout: number;
  listen_backlog_multiplier: number;
  authentication_timeout: number;
  /**
   * pgrelay: connections between accept and the end of authentication (refused ones until closed);
   * beyond it a new connection gets 53300. -1 = 4 × num_init_children, 0 = no limit.
   */
  max_unauthenticated_connections: number;

  // ---- backends
  backends: BackendConfig[];

  // ---- transaction pooling (pgrelay)
  pool_mode: PoolMode;
  max_client_conn: number;
  default_pool_size: number;
  max_db_connections: number;
  max_user_connections: number;
  reserve_pool_size: number;
  /** s */
  reserve_pool_timeout: number;
  /** s */
  server_idle_timeout: number;
  idle_transaction_timeout: number;
  query_timeout: number;
  /** s */
  server_lifetime: number;
  /** s */
  query_wait_timeout: number;
  max_prepared_statements: number;
  /** 'name:key=value …, …' (src/pool/pool-settings.ts) */
  database_pool_settings: string;
  user_pool_settings: string;

  // ---- pooling
  max_pool: number;
  connection_cache: boolean;
  reset_query_list: string[];
  client_idle_limit: number;
  connection_life_time: number;
  child_life_time: number;
  child_max_connections: number;
  /** ms */
  connect_timeout: number;

  // ---- load balancing / routing (issue 3)
  load_balance_mode: boolean;
  ignore_leading_white_space: boolean;
  allow_sql_comments: boolean;
  disable_load_balance_on_write: DisableLbOnWrite;
  statement_level_load_balance: boolean;
  write_function_list: string[];
  /** dml_adaptive: 'object:dependent' pairs (writing object makes dependent's reads go to the primary). */
  dml_adaptive_object_relationship_list: string[];
  read_only_function_list: string[];
  primary_routing_query_pattern_list: string[];
  database_redirect_preference_list: string;
  app_name_redirect_preference_list: string;
  user_redirect_preference_list: string;
  check_temp_table: string;
  check_unlogged_table: boolean;
  relcache_expire: number;
  relcache_size: number;

  // ---- streaming replication check
  sr_check_period: number;
  sr_check_user: string;
  sr_check_password: string;
  sr_check_database: string;
  delay_threshold: number;
  /** ms */
  delay_threshold_by_time: number;
  prefer_lower_delay_standby: boolean;
  log_standby_delay: LogStandbyDelay;
  /** pgrelay: read-your-writes consistency of load-balanced reads. */
  read_your_writes: ReadYourWritesMode;
  /** ms: how long a read waits for a standby to replay what it must see before it runs on the primary. */
  read_your_writes_wait: number;

  // ---- health check and failover (issue 4)
  health_check: HealthCheckConfig;
  /** Per-node overrides resolved: index = node id. */
  health_check_per_node: HealthCheckConfig[];
  failover_command: string;
  follow_primary_command: string;
  failback_command: string;
  failover_on_backend_error: boolean;
  failover_on_backend_shutdown: boolean;
  search_primary_node_timeout: number;
  detach_false_primary: boolean;
  auto_failback: boolean;
  auto_failback_interval: number;

  // ---- coordination of several instances (issue 17)
  coordination: 'off' | 'etcd';
  cluster_name: string;
  instance_name: string;
  etcd_endpoints: string[];
  etcd_prefix: string;
  etcd_user: string;
  etcd_password: string;
  etcd_cacert: string;
  etcd_cert: string;
  etcd_key: string;
  /** seconds */
  etcd_lease_ttl: number;
  /** seconds */
  etcd_unreachable_grace: number;
  failover_when_quorum_exists: boolean;
  failover_require_consensus: boolean;
  enable_consensus_with_half_votes: boolean;
  delegate_ip: string;
  if_up_cmd: string;
  if_down_cmd: string;
  arping_cmd: string;

  // ---- authentication and TLS (issue 5)
  enable_pool_hba: boolean;
  hba_file: string;
  pool_passwd: string;
  allow_clear_text_frontend_auth: boolean;
  ssl: boolean;
  ssl_key: string;
  ssl_cert: string;
  ssl_ca_cert: string;
  ssl_crl_file: string;
  ssl_ciphers: string;
  ssl_prefer_server_ciphers: boolean;
  ssl_ecdh_curve: string;
  ssl_dh_params_file: string;
  ssl_passphrase_command: string;
  /** Lowest TLS version accepted from clients: 'tlsv1' | 'tlsv1.1' | 'tlsv1.2' | 'tlsv1.3' (pgpool 4.4+ / PostgreSQL). */
  ssl_min_protocol_version: string;
  /** Highest TLS version ('' = no limit). */
  ssl_max_protocol_version: string;
  /** pgrelay: TLS to the backends: disable | prefer | require | verify-ca | verify-full (libpq sslmode). */
  backend_ssl_mode: string;
  /** pgrelay: CA certificate(s) that verify the backends' certificates (verify-ca / verify-full). */
  backend_ssl_root_cert: string;
  /** pgrelay: AES key file for pool_passwd (pgpool -k); '' = $PGPOOLKEYFILE or ~/.pgpoolkey. */
  pool_key_file: string;

  // ---- admin / metrics / logs (issue 6)
  admin_users: string[];
  metrics_port: number;
  /** pgrelay: address of the metrics/dashboard HTTP endpoint ('localhost', '*', an IP address or host name). */
  metrics_listen_address: string;
  /** pgrelay: serve the web dashboard on metrics_port. */
  dashboard: boolean;
  pid_file_name: string;
  logdir: string;
  log_destination: string;
  log_min_messages: LogLevel;
  log_connections: boolean;
  log_disconnections: boolean;
  log_hostname: boolean;
  log_statement: boolean;
  log_per_node_statement: boolean;
  notice_per_node_statement: boolean;

  // ---- PCP (pgpool's control port) and online recovery (issue 15)
  /** Addresses the PCP port listens on ('' = none, '*' = all). */
  pcp_listen_addresses: string;
  /** 0 = no PCP listener (pgrelay extension). */
  pcp_port: number;
  /** Directories for the PCP Unix-domain socket .s.PGSQL.<pcp_port> ('' = none). */
  pcp_socket_dir: string[];
  recovery_user: string;
  recovery_password: string;
  recovery_1st_stage_command: string;
  recovery_2nd_stage_command: string;
  /** Seconds online recovery waits for the recovered node to accept connections. */
  recovery_timeout: number;
}

/** Where a parameter may be changed: restart only, by reload, or also per session (PGPOOL SET). */
export type ParamContext = 'restart' | 'reload' | 'session';
