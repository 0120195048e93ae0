import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import {
  CONTROL_USAGE,
  STOP_WAIT_MS,
  isControlCommand,
  locatePidFile,
  nodeCommand,
  nodeCommandSql,
  nodeTarget,
  parseNodeArgs,
  parseReloadArgs,
  parseStopArgs,
  parseStopMode,
  processAlive,
  readPidFile,
  reloadCommand,
  runControl,
  stopCommand,
  waitForExit,
} from '../../src/cli-control.js';
import { UsageError } from '../../src/cli-args.js';
import { loadConfig } from '../../src/config/load.js';
import { capture } from '../support/control-io.js';

/** A node child that installed `handlers` and said so on stdout. */
async function readyChild(handlers: string): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    ['-e', `${handlers} setInterval(() => {}, 1000); process.stdout.write('ready\\n');`],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('child did not start')), 10_000);
    child.stdout!.once('data', () => {
      clearTimeout(t);
      resolve();
    });
  });
  return child;
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-cli-control-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('parseStopArgs', () => {
  it('defaults to smart with a 60 s wait', () => {
    expect(parseStopArgs([])).toEqual({ mode: 'smart', file: undefined, timeoutMs: 60_000, help: false });
  });
  it('reads -m and -f in any order and spelling', () => {
    expect(parseStopArgs(['-m', 'fast', '-f', '/etc/pgpool.conf'])).toMatchObject({
      mode: 'fast',
      file: '/etc/pgpool.conf',
      timeoutMs: STOP_WAIT_MS.fast,
    });
    expect(parseStopArgs(['-f', 'x.conf', '--mode=immediate'])).toMatchObject({
      mode: 'immediate',
      file: 'x.conf',
      timeoutMs: 10_000,
    });
    expect(parseStopArgs(['-mi', '-fpg.conf'])).toMatchObject({ mode: 'immediate', file: 'pg.conf' });
    expect(parseStopArgs(['--config-file', 'a.conf', '--mode', 's'])).toMatchObject({ mode: 'smart', file: 'a.conf' });
    expect(parseStopArgs(['fast'])).toMatchObject({ mode: 'fast' });
  });
  it('accepts pgpool abbreviations s/f/i, case-insensitive', () => {
    expect(parseStopMode('s')).toBe('smart');
    expect(parseStopMode('F')).toBe('fast');
    expect(parseStopMode('IMMEDIATE')).toBe('immediate');
  });
  it('--timeout overrides the wait', () => {
    expect(parseStopArgs(['--timeout', '5']).timeoutMs).toBe(5000);
    expect(parseStopArgs(['-t', '0.5']).timeoutMs).toBe(500);
  });
  it('rejects bad input with a UsageError', () => {
    expect(() => parseStopArgs(['-m', 'slow'])).toThrow(/invalid shutdown mode "slow"/);
    expect(() => parseStopArgs(['-m'])).toThrow(/option -m needs a value/);
    expect(() => parseStopArgs(['-x'])).toThrow(UsageError);
    expect(() => parseStopArgs(['extra'])).toThrow(/unexpected argument "extra"/);
    expect(() => parseStopArgs(['--timeout', '-1'])).toThrow(/positive number of seconds/);
    expect(() => parseStopArgs(['--timeout', 'abc'])).toThrow(/positive number of seconds/);
  });
  it('--help', () => {
    expect(parseStopArgs(['--help']).help).toBe(true);
    expect(parseStopArgs(['-h']).help).toBe(true);
  });
});

describe('parseReloadArgs', () => {
  it('reads -f', () => {
    expect(parseReloadArgs([])).toEqual({ file: undefined, help: false });
    expect(parseReloadArgs(['-f', 'p.conf'])).toEqual({ file: 'p.conf', help: false });
    expect(parseReloadArgs(['--config-file=p.conf'])).toEqual({ file: 'p.conf', help: false });
  });
  it('rejects anything else', () => {
    expect(() => parseReloadArgs(['-m', 'fast'])).toThrow(/unknown option "-m"/);
    expect(() => parseReloadArgs(['now'])).toThrow(/unexpected argument "now"/);
    expect(() => parseReloadArgs(['-f'])).toThrow(/needs a value/);
  });
});

describe('parseNodeArgs', () => {
  it('node id positional or -n', () => {
    expect(parseNodeArgs('attach', ['1'])).toMatchObject({
      op: 'attach',
      node: 1,
      gracefully: false,
      switchover: false,
    });
    expect(parseNodeArgs('attach', ['-n', '2'])).toMatchObject({ node: 2 });
    expect(parseNodeArgs('attach', ['-n2'])).toMatchObject({ node: 2 });
    expect(parseNodeArgs('attach', ['--node-id=0'])).toMatchObject({ node: 0 });
  });
  it('connection options', () => {
    expect(
      parseNodeArgs('detach', ['-h', 'db.example', '-p', '9999', '-U', 'admin', '-d', 'app', '3', '-f', 'c.conf']),
    ).toMatchObject({
      op: 'detach',
      node: 3,
      host: 'db.example',
      port: 9999,
      user: 'admin',
      database: 'app',
      file: 'c.conf',
    });
    expect(parseNodeArgs('attach', ['--host=h', '--port=1', '--username=u', '0'])).toMatchObject({
      host: 'h',
      port: 1,
      user: 'u',
    });
    expect(parseNodeArgs('attach', ['-w', '0']).node).toBe(0);
  });
  it('--gracefully only for detach and promote, --switchover only for promote', () => {
    expect(parseNodeArgs('detach', ['1', '--gracefully'])).toMatchObject({ gracefully: true });
    expect(parseNodeArgs('detach', ['-g', '1'])).toMatchObject({ gracefully: true });
    expect(parseNodeArgs('detach', ['1', 'GRACEFULLY'])).toMatchObject({ gracefully: true });
    expect(parseNodeArgs('promote', ['--switchover', '2'])).toMatchObject({ node: 2, switchover: true });
    expect(parseNodeArgs('promote', ['2', '-s'])).toMatchObject({ switchover: true });
    expect(() => parseNodeArgs('attach', ['1', '--gracefully'])).toThrow(/only valid for detach and promote/);
    expect(parseNodeArgs('promote', ['-g', '-s', '2'])).toMatchObject({ node: 2, switchover: true, gracefully: true });
    expect(() => parseNodeArgs('detach', ['1', '--switchover'])).toThrow(/only valid for promote/);
    expect(parseNodeArgs('promote', ['1', 'gracefully'])).toMatchObject({ node: 1, gracefully: true });
    expect(() => parseNodeArgs('promote', ['1', '2'])).toThrow(/NODE_ID given twice/);
  });
  it('rejects missing, bad or repeated node ids and bad ports', () => {
    expect(() => parseNodeArgs('attach', [])).toThrow(/NODE_ID is required/);
    expect(() => parseNodeArgs('attach', ['x'])).toThrow(/non-negative integer, got "x"/);
    expect(() => parseNodeArgs('attach', ['-1'])).toThrow(/non-negative integer, got "-1"/);
    expect(() => parseNodeArgs('attach', ['1.5'])).toThrow(/non-negative integer/);
    expect(() => parseNodeArgs('attach', ['1', '2'])).toThrow(/given twice/);
    expect(() => parseNodeArgs('attach', ['1', '-p', '70000'])).toThrow(/invalid port "70000"/);
    expect(() => parseNodeArgs('attach', ['1', '-p', 'x'])).toThrow(/invalid port/);
    expect(() => parseNodeArgs('attach', ['1', '-h'])).toThrow(/needs a value/);
    expect(() => parseNodeArgs('attach', ['1', '--bogus'])).toThrow(/unknown option "--bogus"/);
    expect(() => parseNodeArgs('attach', ['1', '--gracefully=yes'])).toThrow(UsageError);
  });
  it('help needs no node id', () => {
    expect(parseNodeArgs('promote', ['--help']).help).toBe(true);
  });
});

describe('nodeCommandSql / nodeTarget', () => {
  it('builds the PGPOOL statement', () => {
    expect(nodeCommandSql({ op: 'attach', node: 1, gracefully: false, switchover: false })).toBe(
      'PGPOOL ATTACH NODE 1',
    );
    expect(nodeCommandSql({ op: 'detach', node: 2, gracefully: true, switchover: false })).toBe(
      'PGPOOL DETACH NODE 2 GRACEFULLY',
    );
    expect(nodeCommandSql({ op: 'detach', node: 2, gracefully: false, switchover: false })).toBe(
      'PGPOOL DETACH NODE 2',
    );
    expect(nodeCommandSql({ op: 'promote', node: 0, gracefully: false, switchover: true })).toBe(
      'PGPOOL PROMOTE NODE 0 SWITCHOVER',
    );
  });
  it('defaults host/port from the configuration', () => {
    const a = parseNodeArgs('attach', ['1']);
    expect(nodeTarget(a, undefined)).toEqual({ host: '127.0.0.1', port: 9999 });
    const cfg = loadConfig({
      set: [
        ['listen_addresses', '10.0.0.5,127.0.0.1'],
        ['port', '6543'],
      ],
    });
    expect(nodeTarget(a, cfg)).toEqual({ host: '10.0.0.5', port: 6543 });
    const star = loadConfig({
      set: [
        ['listen_addresses', '*'],
        ['port', '7000'],
      ],
    });
    expect(nodeTarget(a, star)).toEqual({ host: '127.0.0.1', port: 7000 });
    expect(nodeTarget(parseNodeArgs('attach', ['1', '-h', 'x', '-p', '5']), star)).toEqual({ host: 'x', port: 5 });
    // listen_addresses = '': no TCP; the Unix-domain socket.
    const unix = loadConfig({
      set: [
        ['listen_addresses', ''],
        ['unix_socket_directories', '/run/pgrelay,/tmp'],
      ],
    });
    expect(nodeTarget(a, unix)).toEqual({ host: '/run/pgrelay', port: 9999 });
  });
  it('runControl rejects an unknown command with exit code 2', async () => {
    const write = process.stderr.write;
    let err = '';
    process.stderr.write = ((s: string) => {
      err += s;
      return true;
    }) as typeof process.stderr.write;
    try {
      expect(await runControl('frob', [])).toBe(2);
    } finally {
      process.stderr.write = write;
    }
    expect(err).toContain('unknown command "frob"');
  });
  it('isControlCommand', () => {
    for (const c of ['stop', 'reload', 'attach', 'detach', 'promote']) expect(isControlCommand(c)).toBe(true);
    expect(isControlCommand('md5')).toBe(false);
    expect(isControlCommand(undefined)).toBe(false);
    expect(CONTROL_USAGE).toMatch(/pgrelay stop \[-m smart\|fast\|immediate\]/);
  });
});

describe('pid file handling', () => {
  it('missing pid file: clear error, exit 1', async () => {
    const conf = path.join(tmp, 'missing.conf');
    fs.writeFileSync(conf, `pid_file_name = '${path.join(tmp, 'nope.pid')}'\n`);
    const io = capture();
    expect(await stopCommand(['-f', conf], io)).toBe(1);
    expect(io.stderr).toMatch(/pid file ".*nope\.pid" does not exist: is pgrelay running\?/);
    const io2 = capture();
    expect(await reloadCommand(['-f', conf], io2)).toBe(1);
    expect(io2.stderr).toMatch(/does not exist/);
  });
  it('stale pid file: names the pid, exit 1', async () => {
    // a pid that certainly is not running: a child that already exited
    const child = spawn(process.execPath, ['-e', '0']);
    const pid = child.pid!;
    await new Promise((r) => child.once('exit', r));
    await waitForExit(pid, 2000);
    const pidFile = path.join(tmp, 'stale.pid');
    fs.writeFileSync(pidFile, `${pid}\n`);
    const conf = path.join(tmp, 'stale.conf');
    fs.writeFileSync(conf, `pid_file_name = '${pidFile}'\n`);
    const io = capture();
    expect(await stopCommand(['-f', conf], io)).toBe(1);
    expect(io.stderr).toContain(`stale pid file "${pidFile}": process ${pid} is not running`);
  });
  it('a configuration with errors: pid_file_name is still found, the errors are reported', () => {
    const conf = path.join(tmp, 'broken.conf');
    fs.writeFileSync(conf, `port = 'abc'\npid_file_name = 'run/x.pid'\nthis is broken\n`);
    const loc = locatePidFile(conf);
    expect(loc.pidFile).toBe(path.join(tmp, 'run', 'x.pid'));
    expect(loc.configErrors.join('\n')).toContain(`${conf}:3`);
    const ok = path.join(tmp, 'ok.conf');
    fs.writeFileSync(ok, `pid_file_name = '/run/y.pid'\n`);
    expect(locatePidFile(ok)).toEqual({ pidFile: '/run/y.pid', configErrors: [] });
  });
  it('reload with a broken configuration still signals, then exits 1 with the errors', async () => {
    const child = await readyChild("process.on('SIGHUP', () => process.exit(0));");
    try {
      const pidFile = path.join(tmp, 'hup.pid');
      fs.writeFileSync(pidFile, `${child.pid}\n`);
      const conf = path.join(tmp, 'hup.conf');
      fs.writeFileSync(conf, `pid_file_name = '${pidFile}'\nbogus line here\n`);
      const io = capture();
      expect(await reloadCommand(['-f', conf], io)).toBe(1);
      expect(io.stdout).toContain(`SIGHUP sent to process ${child.pid}`);
      expect(io.stderr).toContain(`${conf}:2`);
      expect(await waitForExit(child.pid!, 5000)).toBe(true);
    } finally {
      child.kill('SIGKILL');
    }
  });
  it('garbage in the pid file', () => {
    const pidFile = path.join(tmp, 'garbage.pid');
    fs.writeFileSync(pidFile, 'hello\n');
    expect(() => readPidFile(pidFile)).toThrow(/does not contain a valid pid \("hello"\)/);
  });
  it('missing configuration file', async () => {
    const io = capture();
    expect(await stopCommand(['-f', path.join(tmp, 'no-such.conf')], io)).toBe(1);
    expect(io.stderr).toMatch(/configuration file ".*no-such\.conf" not found/);
  });
  it('usage errors exit 2', async () => {
    const io = capture();
    expect(await stopCommand(['-m', 'slow'], io)).toBe(2);
    expect(io.stderr).toMatch(/invalid shutdown mode/);
    const io2 = capture();
    expect(await nodeCommand(['attach'], io2)).toBe(2);
    expect(io2.stderr).toMatch(/NODE_ID is required/);
    const io3 = capture();
    expect(await nodeCommand(['frobnicate', '1'], io3)).toBe(2);
  });
  it('stop signals the pid and waits for it to exit', async () => {
    const child = await readyChild("process.on('SIGTERM', () => setTimeout(() => process.exit(0), 200));");
    try {
      const pidFile = path.join(tmp, 'live.pid');
      fs.writeFileSync(pidFile, `${child.pid}\n`);
      const conf = path.join(tmp, 'live.conf');
      fs.writeFileSync(conf, `pid_file_name = '${pidFile}'\n`);
      const io = capture();
      expect(await stopCommand(['-f', conf, '--timeout', '10'], io)).toBe(0);
      expect(io.stdout).toContain(`SIGTERM sent to process ${child.pid}`);
      expect(io.stdout).toContain(`process ${child.pid} has stopped`);
      expect(processAlive(child.pid!)).toBe(false);
    } finally {
      child.kill('SIGKILL');
    }
  });
  it('stop gives up after --timeout when the process ignores the signal', async () => {
    const child = await readyChild("process.on('SIGINT', () => {});");
    try {
      const pidFile = path.join(tmp, 'stubborn.pid');
      fs.writeFileSync(pidFile, `${child.pid}\n`);
      const conf = path.join(tmp, 'stubborn.conf');
      fs.writeFileSync(conf, `pid_file_name = '${pidFile}'\n`);
      const io = capture();
      expect(await stopCommand(['-f', conf, '-m', 'fast', '--timeout', '0.5'], io)).toBe(1);
      expect(io.stdout).toContain(`SIGINT sent to process ${child.pid}`);
      expect(io.stderr).toMatch(/still running after \d+ s .*pgrelay stop -m immediate/);
    } finally {
      child.kill('SIGKILL');
    }
  });
  it('node command against a closed port fails with exit 1', async () => {
    const io = capture();
    expect(await nodeCommand(['attach', '1', '-h', '127.0.0.1', '-p', '1', '--timeout', '5'], io)).toBe(1);
    expect(io.stderr).toMatch(/PGPOOL ATTACH NODE 1: could not connect to pgrelay at 127\.0\.0\.1:1/);
  });
});
