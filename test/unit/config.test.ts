import { describe, it, expect } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultConfig } from '../../src/config/defaults.js';
import { diffConfigs } from '../../src/config/diff.js';
import { ConfigError } from '../../src/config/issues.js';
import { parseConfigText } from '../../src/config/lexer.js';
import { loadConfig, loadConfigDetailed, type LoadOptions } from '../../src/config/load.js';
import { formatParam, showParamRows } from '../../src/admin/show-config.js';
import { PARAMS } from '../../src/config/params.js';
import { tempDir } from '../support/temp-dirs.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const SAMPLE = path.join(here, '..', 'fixtures', 'pgpool.conf.sample-stream');

function writeConf(text: string, name = 'pgpool.conf', dir = tempDir('pgrelay-config-')): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

function load(
  text: string,
  extra: Omit<LoadOptions, 'file'> = {},
): { config: ReturnType<typeof loadConfig>; warnings: string[]; file: string } {
  const file = writeConf(text);
  const warnings: string[] = [];
  const config = loadConfig({ ...extra, file, onWarning: (m) => warnings.push(m) });
  return { config, warnings, file };
}

function loadError(text: string, extra: Omit<LoadOptions, 'file'> = {}): { err: ConfigError; file: string } {
  const file = writeConf(text);
  try {
    loadConfig({ ...extra, file });
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return { err: e as ConfigError, file };
  }
  throw new Error('expected ConfigError');
}

const TWO_NODES = `
backend_hostname0 = 'pg0'
backend_port0 = 5432
backend_hostname1 = 'pg1'
backend_port1 = 5433
backend_weight1 = 2
`;

describe('defaults', () => {
  it('match pgpool 4.3 code defaults and pgrelay keys', () => {
    const c = defaultConfig();
    expect(c.port).toBe(9999);
    expect(c.listen_addresses).toBe('localhost');
    expect(c.num_init_children).toBe(32);
    expect(c.max_pool).toBe(4);
    expect(c.child_life_time).toBe(300);
    expect(c.connection_cache).toBe(true);
    expect(c.reset_query_list).toEqual(['ABORT', 'DISCARD ALL']);
    expect(c.load_balance_mode).toBe(true);
    expect(c.disable_load_balance_on_write).toBe('transaction');
    expect(c.sr_check_period).toBe(10);
    expect(c.sr_check_user).toBe('');
    expect(c.sr_check_database).toBe('postgres');
    expect(c.log_standby_delay).toBe('if_over_threshold');
    expect(c.health_check).toEqual({
      period: 0,
      timeout: 20,
      user: '',
      password: '',
      database: 'postgres',
      max_retries: 0,
      retry_delay: 1,
      connect_timeout: 10000,
    });
    expect(c.connect_timeout).toBe(10000);
    expect(c.failover_on_backend_error).toBe(true);
    expect(c.failover_on_backend_shutdown).toBe(false);
    expect(c.search_primary_node_timeout).toBe(300);
    expect(c.auto_failback_interval).toBe(60);
    expect(c.check_temp_table).toBe('catalog');
    expect(c.log_min_messages).toBe('warning');
    expect(c.max_message_size).toBe(268435456);
    expect(c.client_queue_timeout).toBe(60);
    expect(c.admin_users).toEqual([]);
    expect(c.metrics_port).toBe(0);
    expect(c.hba_file).toBe('pool_hba.conf');
    expect(c.pool_passwd).toBe('pool_passwd');
    expect(c.backends).toEqual([]);
    expect(c.config_file).toBe('');
  });

  it('every Config key except structural ones is in PARAMS', () => {
    const c = defaultConfig() as unknown as Record<string, unknown>;
    const structural = new Set(['config_file', 'backends', 'health_check', 'health_check_per_node', 'connect_timeout']);
    const names = new Set(PARAMS.filter((p) => p.scope === 'global').map((p) => p.name));
    for (const k of Object.keys(c)) if (!structural.has(k)) expect(names.has(k), k).toBe(true);
    for (const p of PARAMS) expect(p.description.length, p.name).toBeGreaterThan(0);
  });

  it('loadConfig({}) resolves default paths against cwd', () => {
    const c = loadConfig({});
    expect(c.hba_file).toBe(path.resolve('pool_hba.conf'));
    expect(c.pool_passwd).toBe(path.resolve('pool_passwd'));
  });
});

describe('parser', () => {
  it('handles =, optional =, comments, quotes, case-insensitive keys', () => {
    const r = parseConfigText(
      [
        '# comment',
        '',
        'port = 5433  # trailing',
        'NUM_INIT_CHILDREN 10',
        "listen_addresses='*'",
        "failover_command = '/bin/fo.sh %d # not a comment'",
        "sr_check_user = 'o''brien'",
        "write_function_list = 'nextval\\(.*\\),set\\'x'",
        '   load_balance_mode=off',
        "x = ''",
      ].join('\n'),
      'f.conf',
    );
    expect(r.errors).toEqual([]);
    expect(r.entries).toEqual([
      { key: 'port', value: '5433', line: 3 },
      { key: 'num_init_children', value: '10', line: 4 },
      { key: 'listen_addresses', value: '*', line: 5 },
      { key: 'failover_command', value: '/bin/fo.sh %d # not a comment', line: 6 },
      { key: 'sr_check_user', value: "o'brien", line: 7 },
      { key: 'write_function_list', value: "nextval\\(.*\\),set\\'x", line: 8 },
      { key: 'load_balance_mode', value: 'off', line: 9 },
      { key: 'x', value: '', line: 10 },
    ]);
  });

  it('later lines override earlier ones; CRLF accepted', () => {
    const { config } = load('port = 1111\r\nport = 2222\r\n');
    expect(config.port).toBe(2222);
  });

  it('reports syntax errors with line and key', () => {
    const r = parseConfigText("port = 'abc\n= 5\nmax_pool 1 2\nfoo =\n", 'p.conf');
    expect(r.errors.map((e) => [e.line, e.key])).toEqual([
      [1, 'port'],
      [2, ''],
      [3, 'max_pool'],
      [4, 'foo'],
    ]);
    expect(r.errors[0]!.message).toMatch(/unterminated quoted string/);
  });

  it('accepts units on unit-bearing params, like pgpool', () => {
    const { config } = load(
      "authentication_timeout = 1min\nchild_life_time = '5min'\nconnect_timeout = 2s\ndelay_threshold = 10MB\nmax_message_size = 1GB\nhealth_check_period = 30s\n",
    );
    expect(config.authentication_timeout).toBe(60);
    expect(config.child_life_time).toBe(300);
    expect(config.connect_timeout).toBe(2000);
    expect(config.health_check.connect_timeout).toBe(2000);
    expect(config.delay_threshold).toBe(10 * 1024 * 1024);
    expect(config.max_message_size).toBe(1024 ** 3);
    expect(config.health_check.period).toBe(30);
  });

  it('parses bool spellings, enums case-insensitively and lists', () => {
    const { config } = load(
      [
        'connection_cache = no',
        'log_connections = YES',
        'ssl = 1',
        "disable_load_balance_on_write = 'ALWAYS'",
        'check_temp_table = off',
        'log_min_messages = debug',
        "reset_query_list = 'ABORT; DISCARD ALL;; '",
        "read_only_function_list = 'f1, f2 ,,f3'",
        "primary_routing_query_pattern_list = 'SELECT \\* FROM t1\\;;.*t2.*;it\\'s'",
        "admin_users = 'alice, bob'",
      ].join('\n'),
    );
    expect(config.connection_cache).toBe(false);
    expect(config.log_connections).toBe(true);
    expect(config.ssl).toBe(true);
    expect(config.disable_load_balance_on_write).toBe('always');
    expect(config.check_temp_table).toBe('none');
    expect(config.log_min_messages).toBe('debug2');
    expect(config.reset_query_list).toEqual(['ABORT', 'DISCARD ALL']);
    expect(config.read_only_function_list).toEqual(['f1', 'f2', 'f3']);
    expect(config.primary_routing_query_pattern_list).toEqual(['SELECT \\* FROM t1\\;', '.*t2.*', "it's"]);
    expect(config.admin_users).toEqual(['alice', 'bob']);
  });
});

describe('backends', () => {
  it('builds the sorted backend list with defaults and flags', () => {
    const { config } = load(
      TWO_NODES +
        "backend_flag1 = 'DISALLOW_TO_FAILOVER|ALWAYS_PRIMARY'\nbackend_application_name1 = 'server1'\nbackend_data_directory0 = '/data'\nbackend_hostname2 = 'pg2'\n",
    );
    expect(config.backends).toEqual([
      {
        id: 0,
        hostname: 'pg0',
        port: 5432,
        weight: 1,
        data_directory: '/data',
        allow_to_failover: true,
        always_primary: false,
        application_name: '',
      },
      {
        id: 1,
        hostname: 'pg1',
        port: 5433,
        weight: 2,
        data_directory: '',
        allow_to_failover: false,
        always_primary: true,
        application_name: 'server1',
      },
      {
        id: 2,
        hostname: 'pg2',
        port: 5432,
        weight: 1,
        data_directory: '',
        allow_to_failover: true,
        always_primary: false,
        application_name: '',
      },
    ]);
  });

  it('empty hostname means the default socket directory, as pgpool', () => {
    const { config } = load("backend_hostname0 = ''\n");
    expect(config.backends[0]!.hostname).toBe('/tmp');
  });

  it('port/weight without hostname is an error naming the line', () => {
    const { err, file } = loadError("backend_hostname0 = 'a'\n\nbackend_port1 = 5433\nbackend_weight1 = 1\n");
    expect(err.errors).toHaveLength(1);
    expect(err.errors[0]).toMatchObject({ file, line: 3, key: 'backend_port1' });
    expect(err.message).toContain(`${file}:3:`);
  });

  it('ids must be contiguous from 0: reports the first missing id', () => {
    const { err } = loadError("backend_hostname0 = 'a'\nbackend_hostname2 = 'c'\nbackend_hostname4 = 'e'\n");
    expect(err.errors).toHaveLength(1);
    expect(err.errors[0]).toMatchObject({ line: 2, key: 'backend_hostname2' });
    expect(err.errors[0]!.message).toMatch(/backend_hostname1 is missing/);
  });

  it('bad flag / conflicting flags / index out of range / missing index', () => {
    const { err } = loadError(
      "backend_hostname0 = 'a'\nbackend_flag0 = 'FOO'\nbackend_hostname1='b'\nbackend_flag1 = 'ALLOW_TO_FAILOVER|DISALLOW_TO_FAILOVER'\nbackend_port128 = 1\nbackend_port = 5\n",
    );
    expect(err.errors.map((e) => [e.line, e.key])).toEqual([
      [2, 'backend_flag0'],
      [4, 'backend_flag1'],
      [5, 'backend_port128'],
      [6, 'backend_port'],
    ]);
  });

  it('per-node health check overrides fall back to the global value', () => {
    const { config } = load(
      TWO_NODES +
        "health_check_period1 = 5\nhealth_check_period = 10\nhealth_check_user = 'hc'\nhealth_check_password1 = 'pw1'\nconnect_timeout0 = 500\nhealth_check_max_retries7 = 3\n",
    );
    expect(config.health_check.period).toBe(10);
    expect(config.health_check_per_node).toHaveLength(2);
    expect(config.health_check_per_node[0]).toMatchObject({
      period: 10,
      user: 'hc',
      password: '',
      connect_timeout: 500,
    });
    expect(config.health_check_per_node[1]).toMatchObject({
      period: 5,
      user: 'hc',
      password: 'pw1',
      connect_timeout: 10000,
    });
  });
});

describe('aliases, ignored and unknown keys', () => {
  it('renames deprecated keys with a warning', () => {
    const { config, warnings, file } = load(
      "black_function_list = 'nextval,setval'\nwhite_function_list = 'now'\nblack_query_pattern_list = 'a;b'\nfollow_master_command = 'x.sh'\nmaster_slave_mode = on\nmaster_slave_sub_mode = 'stream'\nfail_over_on_backend_error = off\n",
    );
    expect(config.write_function_list).toEqual(['nextval', 'setval']);
    expect(config.read_only_function_list).toEqual(['now']);
    expect(config.primary_routing_query_pattern_list).toEqual(['a', 'b']);
    expect(config.follow_primary_command).toBe('x.sh');
    expect(config.failover_on_backend_error).toBe(false);
    expect(warnings).toHaveLength(7);
    expect(warnings[0]).toBe(
      `${file}:1: parameter "black_function_list" is deprecated, use "write_function_list" instead`,
    );
    expect(warnings[4]).toMatch(/master_slave_mode/);
  });

  it('backend_clustering_mode: streaming_replication only', () => {
    expect(load("backend_clustering_mode = 'streaming_replication'\n").warnings).toEqual([]);
    const { err } = loadError("backend_clustering_mode = 'native_replication'\n");
    expect(err.errors[0]).toMatchObject({ line: 1, key: 'backend_clustering_mode' });
    expect(err.message).toMatch(/streaming_replication only/);
    expect(loadError('replication_mode = on\n').err.message).toMatch(/streaming_replication only/);
  });

  it('unimplemented pgpool keys: silent at their pgpool default, a file:line warning otherwise; unknown keys warn', () => {
    const file = writeConf(
      "use_watchdog = off\nwd_port0 = 9000\nhostname0 = 'x'\nmemqcache_total_size = 64MB\nlog_line_prefix = '%m: %a pid %p: '\nbogus_key = 1\n" +
        "use_watchdog = on\nmemory_cache_enabled = on\nlogging_collector = on\nlog_destination = 'syslog'\nclient_idle_limit_in_recovery = 0\ndebug_level = 1\n",
    );
    const warnings: string[] = [];
    const r = loadConfigDetailed({ file, onWarning: (m) => warnings.push(m) });
    expect(r.ignoredKeys.map((k) => k.key)).toEqual([
      'use_watchdog',
      'wd_port0',
      'hostname0',
      'memqcache_total_size',
      'log_line_prefix',
      'use_watchdog',
      'memory_cache_enabled',
      'logging_collector',
      'client_idle_limit_in_recovery',
      'debug_level',
    ]);
    expect(warnings).toEqual([
      `${file}:6: unrecognized configuration parameter "bogus_key"`,
      `${file}:7: parameter "use_watchdog" = 'on' is not implemented by pgrelay and is ignored: pgrelay has no watchdog: run one pgrelay per client host or behind a TCP load balancer`,
      `${file}:8: parameter "memory_cache_enabled" = 'on' is not implemented by pgrelay and is ignored: pgrelay has no in-memory query cache: every SELECT goes to a backend`,
      `${file}:9: parameter "logging_collector" = 'on' is not implemented by pgrelay and is ignored: pgrelay writes its JSON logs to log_destination (stdout, stderr or <logdir>/pgrelay.log)`,
      `${file}:10: log_destination 'syslog' is not implemented by pgrelay: those logs go to stdout`,
      `${file}:12: parameter "debug_level" = '1' is not implemented by pgrelay and is ignored: use log_min_messages = debug1`,
    ]);
    expect(r.warnings).toEqual(warnings);
  });

  it('PCP and online recovery parameters', () => {
    const c = load(
      "pcp_listen_addresses = '*'\npcp_port = 9899\npcp_socket_dir = '/run/x'\nrecovery_user = 'rec'\nrecovery_password = 'pw'\nrecovery_1st_stage_command = 'recovery_1st_stage'\nrecovery_timeout = 2min\n",
    ).config;
    expect(load("recovery_2nd_stage_command = 'x'\n").warnings[0]).toMatch(
      /:1: recovery_2nd_stage_command is not run in streaming replication mode/,
    );
    expect(c).toMatchObject({
      pcp_listen_addresses: '*',
      pcp_port: 9899,
      pcp_socket_dir: ['/run/x'],
      recovery_user: 'rec',
      recovery_password: 'pw',
      recovery_1st_stage_command: 'recovery_1st_stage',
      recovery_timeout: 120,
    });
    expect(load('').config).toMatchObject({ pcp_port: 9898, pcp_listen_addresses: 'localhost', recovery_timeout: 90 });
  });
});

describe('the pgpool sample file (Debian pgpool2 4.3)', () => {
  it('loads with no warnings', () => {
    const warnings: string[] = [];
    const r = loadConfigDetailed({ file: SAMPLE, onWarning: (m) => warnings.push(m) });
    expect(warnings).toEqual([]);
    expect(r.config.port).toBe(9999);
    expect(r.config.config_file).toBe(path.resolve(SAMPLE));
  });

  it('loads with every commented-out setting enabled, still with no warnings', () => {
    const text = readFileSync(SAMPLE, 'utf8').replace(/^#([a-z_0-9]+ ?=)/gm, '$1');
    const warnings: string[] = [];
    const file = writeConf(text);
    const r = loadConfigDetailed({ file, onWarning: (m) => warnings.push(m) });
    expect(warnings).toEqual([]);
    expect(r.ignoredKeys.length).toBeGreaterThan(50);
    expect(r.config.backends.map((b) => `${b.hostname}:${b.port}`)).toEqual(['host1:5432', 'host2:5433']);
    expect(r.config.search_primary_node_timeout).toBe(300);
    expect(r.config.ssl_key).toBe(path.join(path.dirname(file), 'server.key'));
  });
});

describe('validation errors name file:line:key', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['port = abc', 'port', /invalid value for parameter "port": "abc" \(expected an integer 1\.\.65535\)/],
    ['port = 70000', 'port', /expected an integer 1\.\.65535/],
    ['connection_cache = maybe', 'connection_cache', /expected a boolean/],
    ["log_standby_delay = 'sometimes'", 'log_standby_delay', /expected one of: always, if_over_threshold, none/],
    ['backend_weight0 = -1', 'backend_weight0', /invalid value for parameter "backend_weight0"/],
    ['child_life_time = 5 minutes', 'child_life_time', /syntax error/],
    ['child_life_time = 5parsecs', 'child_life_time', /units us, ms, s, min, h, d accepted/],
    ['num_init_children = 3min', 'num_init_children', /expected an integer 1\.\.2147483647/],
    ["log_destination = 'eventlog'", 'log_destination', /stdout, stderr, file/],
    ["database_redirect_preference_list = 'db:somewhere'", 'database_redirect_preference_list', /regex:node/],
    ["sr_check_user = 'unterminated", 'sr_check_user', /unterminated quoted string/],
    [
      "database_pool_settings = 'app:pool_mode=batch'",
      'database_pool_settings',
      /pool_mode of "app": session or transaction/,
    ],
    ["database_pool_settings = 'app:max_user_connections=3'", 'database_pool_settings', /unknown setting/],
    ["user_pool_settings = 'web:pool_size=0'", 'user_pool_settings', /pool_size of "web": an integer >= 1/],
    ["user_pool_settings = 'web'", 'user_pool_settings', /name:key=value/],
  ];
  for (const [line, key, re] of cases) {
    it(line, () => {
      const { err, file } = loadError(`# header\n${line}\n`);
      expect(err.errors).toHaveLength(1);
      expect(err.errors[0]).toMatchObject({ file, line: 2, key });
      expect(err.message).toMatch(re);
      expect(err.message.startsWith(`${file}:2: `)).toBe(true);
    });
  }

  it('collects all errors', () => {
    const { err } = loadError('port = x\nmax_pool = y\n= 1\n');
    expect(err.errors.map((e) => e.line)).toEqual([3, 1, 2]);
    expect(err.message.split('\n')).toHaveLength(3);
  });

  it('missing file is a ConfigError', () => {
    expect(() => loadConfig({ file: '/nonexistent/pgpool.conf' })).toThrow(ConfigError);
  });
});

describe('overrides', () => {
  it('set applies after the file; errors name the command line', () => {
    const { config } = load('port = 1111\nmax_pool = 2\n', {
      set: [
        ['port', '2222'],
        ['LOG_STATEMENT', 'on'],
      ],
    });
    expect(config.port).toBe(2222);
    expect(config.max_pool).toBe(2);
    expect(config.log_statement).toBe(true);
    try {
      loadConfig({ set: [['port', '0']] });
      throw new Error('no error');
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      expect((e as ConfigError).errors[0]).toMatchObject({ file: 'command line', key: 'port' });
      expect((e as ConfigError).message).toMatch(/^command line: invalid value for parameter "port"/);
    }
  });

  it('backends replaces the file backend list', () => {
    const { config } = load(`${TWO_NODES}backend_hostname5 = 'gap-ignored'\nhealth_check_period1 = 7\n`, {
      backends: [
        { hostname: 'x', port: 6000 },
        { hostname: 'y', port: 6001 },
        { hostname: 'z', port: 6002 },
      ],
    });
    expect(config.backends.map((b) => [b.id, b.hostname, b.port, b.weight])).toEqual([
      [0, 'x', 6000, 1],
      [1, 'y', 6001, 1],
      [2, 'z', 6002, 1],
    ]);
    expect(config.health_check_per_node.map((h) => h.period)).toEqual([0, 7, 0]);
  });

  it('relative paths resolve next to the config file', () => {
    const { config, file } = load("pool_passwd = 'pw/pool_passwd'\nssl_cert = '/abs/server.crt'\n");
    const dir = path.dirname(file);
    expect(config.pool_passwd).toBe(path.join(dir, 'pw', 'pool_passwd'));
    expect(config.hba_file).toBe(path.join(dir, 'pool_hba.conf'));
    expect(config.ssl_cert).toBe('/abs/server.crt');
    expect(config.config_file).toBe(file);
    expect(load("pool_passwd = ''\n").config.pool_passwd).toBe('');
  });
});

describe('formatParam / showParamRows', () => {
  it('formats like PGPOOL SHOW', () => {
    const { config } = load(
      TWO_NODES +
        "sr_check_password = 'secret'\nhealth_check_password = 'x'\nbackend_flag1 = 'DISALLOW_TO_FAILOVER|ALWAYS_PRIMARY'\nwrite_function_list = 'a,b'\nbackend_weight0 = 0.5\n",
    );
    expect(formatParam(config, 'port')).toBe('9999');
    expect(formatParam(config, 'PORT')).toBe('9999');
    expect(formatParam(config, 'connection_cache')).toBe('on');
    expect(formatParam(config, 'allow_sql_comments')).toBe('off');
    expect(formatParam(config, 'reset_query_list')).toBe('ABORT;DISCARD ALL');
    expect(formatParam(config, 'write_function_list')).toBe('a,b');
    expect(formatParam(config, 'child_life_time')).toBe('5min');
    expect(formatParam(config, 'authentication_timeout')).toBe('1min');
    expect(formatParam(config, 'client_idle_limit')).toBe('0');
    expect(formatParam(config, 'max_message_size')).toBe('256MB');
    expect(formatParam(config, 'sr_check_password')).toBe('*****');
    expect(formatParam(config, 'health_check_password')).toBe('*****');
    expect(formatParam(config, 'health_check_password1')).toBe('*****');
    expect(formatParam(config, 'pool_passwd')).toBe('*****');
    expect(formatParam(config, 'backend_hostname1')).toBe('pg1');
    expect(formatParam(config, 'backend_port1')).toBe('5433');
    expect(formatParam(config, 'backend_weight0')).toBe('0.5');
    expect(formatParam(config, 'backend_flag0')).toBe('ALLOW_TO_FAILOVER');
    expect(formatParam(config, 'backend_flag1')).toBe('DISALLOW_TO_FAILOVER|ALWAYS_PRIMARY');
    expect(formatParam(config, 'health_check_timeout1')).toBe('20');
    expect(formatParam(config, 'connect_timeout')).toBe('10000');
    expect(formatParam(config, 'backend_hostname2')).toBeUndefined();
    expect(formatParam(config, 'backend_hostname')).toBeUndefined();
    expect(formatParam(config, 'nosuch')).toBeUndefined();
    expect(formatParam(config, 'port1')).toBeUndefined();
  });

  it('lists rows for ALL, groups and array params', () => {
    const { config } = load(TWO_NODES);
    const all = showParamRows(config, 'all')!;
    expect(all.slice(0, 6).map((r) => r.item)).toEqual([
      'backend_hostname0',
      'backend_port0',
      'backend_weight0',
      'backend_data_directory0',
      'backend_application_name0',
      'backend_flag0',
    ]);
    expect(all.find((r) => r.item === 'port')).toEqual({
      item: 'port',
      value: '9999',
      description: 'tcp/IP port number on which pgpool will listen on.',
    });
    expect(showParamRows(config, 'backend')!).toHaveLength(12);
    expect(showParamRows(config, 'health_check')!).toHaveLength(8 * 3);
    // pgpool's watchdog group: the watchdog parameters pgrelay has (coordination through etcd).
    expect(showParamRows(config, 'watchdog')?.map((r) => r.item)).toEqual([
      'failover_when_quorum_exists',
      'failover_require_consensus',
      'enable_consensus_with_half_votes',
      'delegate_ip',
      'if_up_cmd',
      'if_down_cmd',
      'arping_cmd',
    ]);
    expect(showParamRows(config, 'heartbeat')).toEqual([]);
    expect(showParamRows(config, 'backend_hostname')!.map((r) => r.value)).toEqual(['pg0', 'pg1']);
    expect(showParamRows(config, 'port')).toBeUndefined();
  });
});

describe('diffConfigs', () => {
  // both versions of the file live in the same directory, as on a real reload
  const dir = tempDir('pgrelay-config-');
  let n = 0;
  const cfg = (text: string): ReturnType<typeof loadConfig> =>
    loadConfig({ file: writeConf(text, `pgpool${n++}.conf`, dir) });
  it('reports changed params and which need a restart', () => {
    const a = cfg(`${TWO_NODES}port = 9999\nmax_pool = 4\n`);
    const b = cfg(
      TWO_NODES.replace("'pg1'", "'pg1b'").replace('backend_weight1 = 2', 'backend_weight1 = 3') +
        "port = 9998\nmax_pool = 4\nlog_statement = on\nhealth_check_period1 = 9\nbackend_hostname2 = 'pg2'\n",
    );
    const d = diffConfigs(a, b);
    expect(d.changed.sort()).toEqual(
      [
        'port',
        'log_statement',
        'backend_hostname1',
        'backend_weight1',
        'health_check_period1',
        'backend_hostname2',
        'backend_port2',
        'backend_weight2',
        'backend_data_directory2',
        'backend_application_name2',
        'backend_flag2',
        'health_check_period2',
        'health_check_timeout2',
        'health_check_user2',
        'health_check_password2',
        'health_check_database2',
        'health_check_max_retries2',
        'health_check_retry_delay2',
        'connect_timeout2',
      ].sort(),
    );
    expect(d.restartRequired.sort()).toEqual(['backend_hostname1', 'port']);
    expect(diffConfigs(a, a)).toEqual({ changed: [], restartRequired: [] });
  });

  it('removing a node requires a restart', () => {
    const a = cfg(TWO_NODES);
    const b = cfg("backend_hostname0 = 'pg0'\n");
    const d = diffConfigs(a, b);
    expect(d.restartRequired.sort()).toEqual(['backend_hostname1', 'backend_port1']);
  });
});
