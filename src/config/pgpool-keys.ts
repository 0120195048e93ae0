/**
 * pgpool.conf keys that are not rows of the parameter table: deprecated
 * spellings that set a parameter under its new name, and pgpool features
 * pgrelay does not have, whose keys are accepted and ignored so that a
 * pgpool.conf loads unchanged; and the clustering-mode keys, which may only
 * say what pgrelay does anyway (streaming replication).
 */
import { parseBool } from './values.js';

/**
 * Deprecated/renamed pgpool keys and the parameter they now set.
 * (fail_over_on_backend_error is pgpool's own pre-4.0 spelling.)
 */
export const ALIASES: Readonly<Record<string, string>> = {
  black_function_list: 'write_function_list',
  white_function_list: 'read_only_function_list',
  black_query_pattern_list: 'primary_routing_query_pattern_list',
  follow_master_command: 'follow_primary_command',
  fail_over_on_backend_error: 'failover_on_backend_error',
  socket_dir: 'unix_socket_directories',
};

/**
 * Known pgpool-II keys that pgrelay accepts and ignores (watchdog, query cache,
 * online recovery, PCP, log collector, process management, native replication,
 * UNIX sockets, ...). Exact names; see also IGNORED_PREFIXES / IGNORED_INDEXED.
 */
export const IGNORED_KEYS: ReadonlySet<string> = new Set([
  // connections / sockets / PCP
  'backend_socket_dir',
  'unix_socket_group',
  'pcp_timeout',
  'serialize_accept',
  'allow_inet_domain_socket',
  // process management (4.4+)
  'process_management_mode',
  'process_management_strategy',
  'min_spare_children',
  'max_spare_children',
  // logging features not implemented
  'log_line_prefix',
  'log_error_verbosity',
  'client_min_messages',
  'log_client_messages',
  'log_backend_messages',
  'logging_collector',
  'log_directory',
  'log_filename',
  'log_file_mode',
  'log_truncate_on_rotation',
  'log_rotation_age',
  'log_rotation_size',
  'debug_level',
  // native replication mode / other clustering features
  'replicate_select',
  'insert_lock',
  'lobj_lock_table',
  'replication_stop_on_mismatch',
  'failover_if_affected_tuples_mismatch',
  'relcache_query_target',
  'enable_shared_relcache',
  'parallel_mode',
  'enable_query_cache',
  'replication_delay_source_cmd',
  // SSL bits not implemented
  'ssl_ca_cert_dir',
  // query cache
  'memory_cache_enabled',
  'cache_safe_memqcache_table_list',
  'cache_unsafe_memqcache_table_list',
  'white_memqcache_table_list',
  'black_memqcache_table_list',
  // online recovery
  'client_idle_limit_in_recovery',
  // watchdog
  'use_watchdog',
  'trusted_servers',
  'trusted_server_command',
  'ping_path',
  'if_cmd_path',
  'arping_path',
  'ifconfig_path',
  'clear_memqcache_on_escalation',
  'allow_multiple_failover_requests_from_node',
  'health_check_test',
  'pgpool_node_id',
  // ancient (pgpool 3.x) system DB
  'system_db_hostname',
  'system_db_port',
  'system_db_dbname',
  'system_db_schema',
  'system_db_user',
  'system_db_password',
]);

export const IGNORED_PREFIXES: readonly string[] = [
  'wd_',
  'heartbeat_',
  'other_pgpool_',
  'other_wd_',
  'memqcache_',
  'pcp_',
  'syslog_',
  'recovery_',
  'process_management_',
  'log_rotation_',
];

/** Watchdog per-node keys: hostname0, wd_port0, pgpool_port0, ... */
const IGNORED_INDEXED =
  /^(hostname|wd_port|pgpool_port|heartbeat_hostname|heartbeat_port|heartbeat_device|heartbeat_destination|heartbeat_destination_port|other_pgpool_hostname|other_pgpool_port|other_wd_port)\d+$/;

/**
 * pgpool's default values of the ignored keys that switch a feature on or
 * change behaviour, and what pgrelay does instead. A file that sets one of them
 * to anything else gets a warning naming file:line, so that an operator never
 * loses a feature without a word. Keys absent here (wd_*, heartbeat_*,
 * memqcache_*, ...) are settings of a feature whose switch is listed: they say
 * nothing while the switch is off.
 */
export const IGNORED_DEFAULTS: Readonly<Record<string, { default: string; instead: string }>> = {
  use_watchdog: {
    default: 'off',
    instead: 'pgrelay has no watchdog: run one pgrelay per client host or behind a TCP load balancer',
  },
  memory_cache_enabled: {
    default: 'off',
    instead: 'pgrelay has no in-memory query cache: every SELECT goes to a backend',
  },
  logging_collector: {
    default: 'off',
    instead: 'pgrelay writes its JSON logs to log_destination (stdout, stderr or <logdir>/pgrelay.log)',
  },
  log_line_prefix: { default: '%m: %a pid %p: ', instead: 'pgrelay logs JSON lines with fixed fields' },
  log_error_verbosity: { default: 'default', instead: 'pgrelay logs JSON lines with fixed fields' },
  client_min_messages: { default: 'notice', instead: 'clients get every NOTICE the backends send' },
  log_client_messages: { default: 'off', instead: 'use log_statement / log_per_node_statement' },
  log_backend_messages: { default: 'none', instead: 'use log_per_node_statement' },
  debug_level: { default: '0', instead: 'use log_min_messages = debug1' },
  serialize_accept: { default: 'off', instead: 'pgrelay has one process and no accept contention' },
  process_management_mode: { default: 'static', instead: 'pgrelay has no child processes' },
  client_idle_limit_in_recovery: {
    default: '0',
    instead: 'online recovery in streaming replication mode does not wait for clients',
  },
  replicate_select: { default: 'off', instead: 'native replication mode is not supported' },
  insert_lock: { default: 'off', instead: 'native replication mode is not supported' },
  replication_stop_on_mismatch: { default: 'off', instead: 'native replication mode is not supported' },
  failover_if_affected_tuples_mismatch: { default: 'off', instead: 'native replication mode is not supported' },
  relcache_query_target: { default: 'primary', instead: "pgrelay's relation cache asks the primary" },
  ssl_ca_cert_dir: { default: '', instead: 'use ssl_ca_cert (a file)' },
  unix_socket_group: { default: '', instead: 'the sockets keep the group of the pgrelay process' },
  cache_safe_memqcache_table_list: { default: '', instead: 'pgrelay has no in-memory query cache' },
  cache_unsafe_memqcache_table_list: { default: '', instead: 'pgrelay has no in-memory query cache' },
};

const BOOL_WORDS = /^(on|off|true|false|yes|no|1|0)$/i;

/**
 * The warning for an ignored key set to a value other than pgpool's default
 * (undefined when it is at the default or is a sub-setting of a listed switch).
 */
export function ignoredKeyWarning(key: string, value: string): string | undefined {
  const d = IGNORED_DEFAULTS[key.toLowerCase()];
  if (!d) return undefined;
  const v = value.trim();
  const same =
    BOOL_WORDS.test(d.default) && BOOL_WORDS.test(v) && d.default !== '0'
      ? parseBool(v) === parseBool(d.default)
      : v.toLowerCase() === d.default.trim().toLowerCase();
  if (same) return undefined;
  return `parameter "${key}" = '${v}' is not implemented by pgrelay and is ignored: ${d.instead}`;
}

export function isIgnoredKey(name: string): boolean {
  const lower = name.toLowerCase();
  if (IGNORED_KEYS.has(lower)) return true;
  if (IGNORED_INDEXED.test(lower)) return true;
  return IGNORED_PREFIXES.some((p) => lower.startsWith(p));
}

/** What the loader does with a clustering-mode key: accept it silently, reject it, or warn and ignore it. */
export type ClusteringModeVerdict = { accepted: true } | { error: string } | { warning: string };

/** undefined when `key` is not one of pgpool's clustering-mode keys. */
export function clusteringModeKey(key: string, value: string): ClusteringModeVerdict | undefined {
  if (key === 'backend_clustering_mode') {
    if (value.trim().toLowerCase() === 'streaming_replication') return { accepted: true };
    return {
      error: `invalid value for parameter "backend_clustering_mode": "${value}" (pgrelay supports streaming_replication only)`,
    };
  }
  if (key === 'replication_mode') {
    const b = parseBool(value);
    if (b === undefined)
      return { error: `invalid value for parameter "replication_mode": "${value}" (expected a boolean)` };
    if (b)
      return {
        error:
          'replication_mode = on (native replication) is not supported: pgrelay supports streaming_replication only',
      };
    return { accepted: true };
  }
  if (key === 'master_slave_mode' || key === 'master_slave_sub_mode') {
    const extra =
      key === 'master_slave_sub_mode' && value.trim().toLowerCase() !== 'stream'
        ? ` (value "${value}" ignored: pgrelay supports streaming replication only)`
        : '';
    return {
      warning: `parameter "${key}" is deprecated and ignored; pgrelay always runs in streaming replication mode${extra}`,
    };
  }
  return undefined;
}
