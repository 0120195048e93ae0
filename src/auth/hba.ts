/**
 * pool_hba.conf: parsing and matching, following pgpool-II's pool_hba.c (which
 * follows PostgreSQL's hba.c), plus `+role` / `samerole` through a role hook.
 *
 *   local      DATABASE USER         METHOD [name=value ...]
 *   host       DATABASE USER ADDRESS METHOD [name=value ...]
 *   hostssl    DATABASE USER ADDRESS METHOD [...]
 *   hostnossl  DATABASE USER ADDRESS METHOD [...]
 *   host…      DATABASE USER IP-ADDRESS IP-MASK METHOD [...]
 *
 * Tokenising as PostgreSQL: fields split on blanks, '#' starts a comment,
 * double quotes group (a quoted keyword is a plain name), comma lists, `@file`
 * includes (relative to the including file's directory). First match wins; no
 * match (or a `reject` line) is reported with noEntryMessage(), SQLSTATE 28000.
 */
import { promises as dnsPromises } from 'node:dns';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { dirname, isAbsolute, resolve } from 'node:path';

export type HbaConnType = 'local' | 'host' | 'hostssl' | 'hostnossl';
export type HbaMethod = 'trust' | 'reject' | 'password' | 'md5' | 'scram-sha-256' | 'cert';

export interface HbaToken {
  value: string;
  quoted: boolean;
}

export type HbaAddress =
  | { kind: 'all' }
  | { kind: 'samehost' }
  | { kind: 'samenet' }
  | { kind: 'cidr'; family: 4 | 6; addr: Buffer; mask: Buffer; text: string }
  | { kind: 'hostname'; name: string };

export interface HbaRule {
  file: string;
  line: number;
  /** The line as written. */
  raw: string;
  type: HbaConnType;
  databases: HbaToken[];
  users: HbaToken[];
  /** undefined for `local`. */
  address?: HbaAddress;
  method: HbaMethod;
  /** name=value options after the method (e.g. clientcert, map). */
  options: Record<string, string>;
}

export interface HbaIssue {
  file: string;
  line: number;
  message: string;
}

export interface HbaParseResult {
  rules: HbaRule[];
  errors: HbaIssue[];
  /** Lines that load but cannot match (e.g. hostssl with ssl off). */
  warnings: HbaIssue[];
}

export interface HbaParseOptions {
  /** Read an `@file` include (absolute path). Throws when it cannot. */
  readInclude(path: string): string;
  /** Server TLS enabled; when false, hostssl lines get a warning (pgpool: "hostssl record cannot match because SSL is disabled"). */
  ssl?: boolean;
}

const MAX_LINE = 8192;
const MAX_TOKEN = 256;
const MAX_INCLUDE_DEPTH = 10;
const METHODS: readonly string[] = ['trust', 'reject', 'password', 'md5', 'scram-sha-256', 'cert'];
/** Methods PostgreSQL/pgpool know but pgrelay does not implement. */
const UNSUPPORTED_METHODS: readonly string[] = [
  'pam',
  'ldap',
  'gss',
  'sspi',
  'ident',
  'peer',
  'radius',
  'bsd',
  'krb5',
  'crypt',
];

// ---------------------------------------------------------------- tokenizer

class TokenError extends Error {}

interface RawToken extends HbaToken {
  /** Field ended with a comma: the next token belongs to the same field. */
  comma: boolean;
}

/** One token from `line` starting at `pos` (PostgreSQL's next_token). */
function nextToken(line: string, pos: number): { token: RawToken | undefined; pos: number } {
  let i = pos;
  while (i < line.length && (line[i] === ' ' || line[i] === '\t' || line[i] === '\r' || line[i] === ',')) i++;
  let buf = '';
  let inQuote = false;
  let wasQuote = false;
  let sawQuote = false;
  let initialQuote = false;
  let comma = false;
  while (i < line.length) {
    const c = line[i]!;
    if (!inQuote && (c === ' ' || c === '\t' || c === '\r')) break;
    i++;
    if (c === '#' && !inQuote) {
      i = line.length;
      break;
    }
    if (buf.length >= MAX_TOKEN - 1) {
      throw new TokenError(`authentication file token too long, skipping: "${buf}"`);
    }
    if (c === ',' && !inQuote) {
      comma = true;
      break;
    }
    if (c !== '"' || wasQuote) buf += c;
    if (inQuote && c === '"') wasQuote = !wasQuote;
    else wasQuote = false;
    if (c === '"') {
      inQuote = !inQuote;
      sawQuote = true;
      if (buf.length === 0) initialQuote = true;
    }
  }
  if (!sawQuote && buf.length === 0) return { token: undefined, pos: i };
  return { token: { value: buf, quoted: initialQuote, comma }, pos: i };
}

interface TokenizedLine {
  line: number;
  raw: string;
  fields: HbaToken[][];
  error?: string;
}

function tokenizeText(text: string, fileName: string, opts: HbaParseOptions, depth: number): TokenizedLine[] {
  const out: TokenizedLine[] = [];
  const lines = text.split('\n');
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  lines.forEach((rawLine, idx) => {
    const lineNo = idx + 1;
    const raw = rawLine.replace(/[\r\n]+$/, '');
    if (raw.length >= MAX_LINE - 1) {
      out.push({ line: lineNo, raw, fields: [], error: 'authentication file line too long' });
      return;
    }
    const fields: HbaToken[][] = [];
    let pos = 0;
    try {
      while (pos < raw.length) {
        const field: HbaToken[] = [];
        let more = true;
        while (more) {
          const r = nextToken(raw, pos);
          pos = r.pos;
          const t = r.token;
          if (!t) break;
          if (!t.quoted && t.value.startsWith('@') && t.value.length > 1) {
            field.push(...includeTokens(t.value.slice(1), fileName, opts, depth + 1));
          } else {
            field.push({ value: t.value, quoted: t.quoted });
          }
          more = t.comma;
        }
        if (field.length) fields.push(field);
      }
    } catch (e) {
      if (e instanceof TokenError) {
        out.push({ line: lineNo, raw, fields, error: e.message });
        return;
      }
      throw e;
    }
    if (fields.length) out.push({ line: lineNo, raw, fields });
  });
  return out;
}

function includeTokens(incName: string, outerFile: string, opts: HbaParseOptions, depth: number): HbaToken[] {
  const full = isAbsolute(incName) ? incName : resolve(dirname(outerFile), incName);
  if (depth > MAX_INCLUDE_DEPTH) {
    throw new TokenError(
      `could not open secondary authentication file "@${incName}" as "${full}": too many levels of inclusion`,
    );
  }
  let text: string;
  try {
    text = opts.readInclude(full);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const reason =
      err.code === 'ENOENT' ? 'No such file or directory' : err.code === 'EACCES' ? 'Permission denied' : err.message;
    throw new TokenError(`could not open secondary authentication file "@${incName}" as "${full}": ${reason}`);
  }
  const tokens: HbaToken[] = [];
  for (const l of tokenizeText(text, full, opts, depth)) {
    if (l.error) throw new TokenError(l.error);
    for (const f of l.fields) tokens.push(...f);
  }
  return tokens;
}

// ---------------------------------------------------------------- addresses

/** Parse a numeric IPv4/IPv6 address (zone id dropped) into bytes; undefined if not numeric. */
export function parseIp(text: string): { family: 4 | 6; bytes: Buffer } | undefined {
  const s = text.includes('%') ? text.slice(0, text.indexOf('%')) : text;
  const fam = isIP(s);
  if (fam === 4) return { family: 4, bytes: Buffer.from(s.split('.').map((x) => Number(x))) };
  if (fam !== 6) return undefined;
  let head = s;
  let v4tail: number[] = [];
  const lastColon = s.lastIndexOf(':');
  if (s.slice(lastColon + 1).includes('.')) {
    v4tail = s
      .slice(lastColon + 1)
      .split('.')
      .map((x) => Number(x));
    head = `${s.slice(0, lastColon + 1)}0:0`;
  }
  const [left, right] = head.includes('::') ? (head.split('::') as [string, string]) : [head, undefined];
  const parseGroups = (p: string): number[] => (p === '' ? [] : p.split(':').map((g) => parseInt(g, 16)));
  const l = parseGroups(left);
  const r = right === undefined ? [] : parseGroups(right);
  const groups = right === undefined ? l : [...l, ...new Array<number>(8 - l.length - r.length).fill(0), ...r];
  const bytes = Buffer.alloc(16);
  for (let i = 0; i < groups.length; i++) bytes.writeUInt16BE(groups[i], i * 2);
  if (v4tail.length === 4) for (let i = 0; i < 4; i++) bytes[12 + i] = v4tail[i];
  return { family: 6, bytes };
}

function cidrMask(bits: number, family: 4 | 6): Buffer {
  const m = Buffer.alloc(family === 4 ? 4 : 16);
  for (let i = 0; i < m.length; i++) {
    const b = Math.max(0, Math.min(8, bits - i * 8));
    m[i] = b === 0 ? 0 : (0xff << (8 - b)) & 0xff;
  }
  return m;
}

const V4_MAPPED_PREFIX = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);

/** IPv4-mapped IPv6 (::ffff:a.b.c.d) to IPv4; anything else unchanged. */
function unmap(ip: { family: 4 | 6; bytes: Buffer }): { family: 4 | 6; bytes: Buffer } {
  if (ip.family === 6 && ip.bytes.subarray(0, 12).equals(V4_MAPPED_PREFIX)) {
    return { family: 4, bytes: Buffer.from(ip.bytes.subarray(12)) };
  }
  return ip;
}

function inRange(client: { family: 4 | 6; bytes: Buffer }, addr: Buffer, mask: Buffer, family: 4 | 6): boolean {
  let c = unmap(client);
  if (c.family !== family) {
    if (c.family === 4 && family === 6) c = { family: 6, bytes: Buffer.concat([V4_MAPPED_PREFIX, c.bytes]) };
    else return false;
  }
  for (let i = 0; i < addr.length; i++) {
    if (((c.bytes[i]! ^ addr[i]!) & mask[i]!) !== 0) return false;
  }
  return true;
}

/** Client address as pgpool shows it (numeric; IPv4-mapped IPv6 shown as IPv4). */
export function displayAddress(address: string): string {
  const ip = parseIp(address);
  if (!ip) return address;
  const u = unmap(ip);
  return u.family === 4 && ip.family === 6 ? Array.from(u.bytes).join('.') : address;
}

// ---------------------------------------------------------------- line parser

class LineError extends Error {}

const KNOWN_OPTIONS = new Set([
  'map',
  'clientcert',
  'clientname',
  'pamservice',
  'pam_use_hostname',
  'backend_use_passwd',
]);

function parseLine(tl: TokenizedLine, file: string, opts: HbaParseOptions, warnings: HbaIssue[]): HbaRule {
  const fields = tl.fields;
  let fi = 0;
  const typeTokens = fields[fi]!;
  if (typeTokens.length > 1) throw new LineError('multiple values specified for connection type');
  const typeStr = typeTokens[0]!.value;
  if (typeStr !== 'local' && typeStr !== 'host' && typeStr !== 'hostssl' && typeStr !== 'hostnossl') {
    throw new LineError(`invalid connection type "${typeStr}"`);
  }
  const type: HbaConnType = typeStr;
  if (type === 'hostssl' && opts.ssl === false) {
    warnings.push({ file, line: tl.line, message: 'hostssl record cannot match because SSL is disabled' });
  }

  fi++;
  const databases = fields[fi];
  if (!databases) throw new LineError('end-of-line before database specification');
  fi++;
  const users = fields[fi];
  if (!users) throw new LineError('end-of-line before role specification');

  let address: HbaAddress | undefined;
  if (type !== 'local') {
    fi++;
    const at = fields[fi];
    if (!at) throw new LineError('end-of-line before IP address specification');
    if (at.length > 1) throw new LineError('multiple values specified for host address');
    const tok = at[0]!;
    const kw = (k: string): boolean => !tok.quoted && tok.value === k;
    if (kw('all')) address = { kind: 'all' };
    else if (kw('samehost')) address = { kind: 'samehost' };
    else if (kw('samenet')) address = { kind: 'samenet' };
    else {
      const slash = tok.value.indexOf('/');
      const host = slash >= 0 ? tok.value.slice(0, slash) : tok.value;
      const ip = parseIp(host);
      if (!ip) {
        if (slash >= 0) throw new LineError(`specifying both host name and CIDR mask is invalid: "${tok.value}"`);
        if (host.length === 0) throw new LineError(`invalid IP address "${host}": Name or service not known`);
        address = { kind: 'hostname', name: host };
      } else if (slash >= 0) {
        const bitsText = tok.value.slice(slash + 1);
        const max = ip.family === 4 ? 32 : 128;
        if (!/^\d+$/.test(bitsText) || Number(bitsText) > max) {
          throw new LineError(`invalid CIDR mask in address "${tok.value}"`);
        }
        address = {
          kind: 'cidr',
          family: ip.family,
          addr: ip.bytes,
          mask: cidrMask(Number(bitsText), ip.family),
          text: tok.value,
        };
      } else {
        fi++;
        const mt = fields[fi];
        if (!mt) throw new LineError('end-of-line before netmask specification');
        if (mt.length > 1) throw new LineError('multiple values specified for netmask');
        const mask = parseIp(mt[0]!.value);
        if (!mask) throw new LineError(`invalid IP mask "${mt[0]!.value}": Name or service not known`);
        if (mask.family !== ip.family) throw new LineError('IP address and mask do not match');
        address = {
          kind: 'cidr',
          family: ip.family,
          addr: ip.bytes,
          mask: mask.bytes,
          text: `${tok.value} ${mt[0]!.value}`,
        };
      }
    }
  }

  fi++;
  const mtoks = fields[fi];
  if (!mtoks) throw new LineError('end-of-line before authentication method');
  if (mtoks.length > 1) throw new LineError('multiple values specified for authentication type');
  const methodStr = mtoks[0]!.value;
  if (!METHODS.includes(methodStr)) {
    if (UNSUPPORTED_METHODS.includes(methodStr)) {
      throw new LineError(
        `authentication method "${methodStr}" is not supported by pgrelay (supported: ${METHODS.join(', ')})`,
      );
    }
    throw new LineError(`invalid authentication method "${methodStr}"`);
  }
  const method = methodStr as HbaMethod;
  if (method === 'cert' && type !== 'hostssl') {
    throw new LineError('cert authentication is only supported on hostssl connections');
  }

  const options: Record<string, string> = {};
  for (fi++; fi < fields.length; fi++) {
    for (const t of fields[fi]!) {
      const eq = t.value.indexOf('=');
      if (eq < 0) throw new LineError(`authentication option not in name=value format: ${t.value}`);
      const name = t.value.slice(0, eq);
      const val = t.value.slice(eq + 1);
      if (!KNOWN_OPTIONS.has(name) && !name.startsWith('ldap')) {
        throw new LineError(`unrecognized authentication option name: "${name}"`);
      }
      if (name === 'clientcert') {
        if (type !== 'hostssl') throw new LineError('clientcert can only be configured for "hostssl" rows');
        if (val !== 'verify-ca' && val !== 'verify-full') throw new LineError(`invalid value for clientcert: "${val}"`);
        if (method === 'cert' && val !== 'verify-full') {
          throw new LineError('clientcert can only be set to "verify-full" when using "cert" authentication');
        }
      }
      if (name === 'pamservice' || name === 'pam_use_hostname') {
        throw new LineError(`${name} authentication option can only be configured for authentication method "pam"`);
      }
      if (name.startsWith('ldap') || name === 'backend_use_passwd') {
        throw new LineError(`authentication option "${name}" is only valid for authentication method "ldap"`);
      }
      options[name] = val;
    }
  }
  if (method === 'cert' && options.clientcert === undefined) options.clientcert = 'verify-full';

  return { file, line: tl.line, raw: tl.raw, type, databases, users, address, method, options };
}

/**
 * Parse pool_hba.conf text. Every bad line is reported (file, line, reason);
 * good lines are still returned, but a caller must not use a file with errors
 * (loadHba() / reloadHba() enforce that).
 */
export function parseHba(text: string, fileName: string, opts: HbaParseOptions): HbaParseResult {
  const rules: HbaRule[] = [];
  const errors: HbaIssue[] = [];
  const warnings: HbaIssue[] = [];
  for (const tl of tokenizeText(text, fileName, opts, 0)) {
    if (tl.error) {
      errors.push({ file: fileName, line: tl.line, message: tl.error });
      continue;
    }
    try {
      rules.push(parseLine(tl, fileName, opts, warnings));
    } catch (e) {
      if (e instanceof LineError) errors.push({ file: fileName, line: tl.line, message: e.message });
      else throw e;
    }
  }
  return { rules, errors, warnings };
}

export class HbaLoadError extends Error {
  readonly errors: HbaIssue[];
  constructor(path: string, errors: HbaIssue[]) {
    super(`invalid pool_hba.conf "${path}":\n${errors.map((e) => `${e.file}:${e.line}: ${e.message}`).join('\n')}`);
    this.name = 'HbaLoadError';
    this.errors = errors;
  }
}

export interface LoadHbaOptions {
  ssl?: boolean;
  /** Receives non-fatal warnings (e.g. hostssl with ssl off). */
  onWarning?: (w: HbaIssue) => void;
}

/** Read and parse a pool_hba.conf; throws HbaLoadError listing every bad line, or when it has no entries. */
export function loadHba(path: string, opts: LoadHbaOptions = {}): HbaRule[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new HbaLoadError(path, [
      { file: path, line: 0, message: `could not open configuration file "${path}": ${(e as Error).message}` },
    ]);
  }
  const r = parseHba(text, path, { readInclude: (p) => readFileSync(p, 'utf8'), ssl: opts.ssl });
  if (r.errors.length) throw new HbaLoadError(path, r.errors);
  if (r.rules.length === 0) {
    throw new HbaLoadError(path, [
      { file: path, line: 0, message: `configuration file "${path}" contains no entries` },
    ]);
  }
  for (const w of r.warnings) opts.onWarning?.(w);
  return r.rules;
}

/** Reload: the new rules, or the current ones plus the errors when the file is bad (as pgpool keeps the old list). */
export function reloadHba(
  path: string,
  current: HbaRule[],
  opts: LoadHbaOptions = {},
): { rules: HbaRule[]; ok: boolean; errors: HbaIssue[] } {
  try {
    return { rules: loadHba(path, opts), ok: true, errors: [] };
  } catch (e) {
    if (e instanceof HbaLoadError) return { rules: current, ok: false, errors: e.errors };
    throw e;
  }
}

// ---------------------------------------------------------------- matching

export interface HbaConn {
  /** Unix-domain socket connection. */
  local: boolean;
  ssl: boolean;
  /** Client IP (Node's remoteAddress; '::ffff:1.2.3.4' is treated as 1.2.3.4). */
  address?: string;
  /** Reverse DNS of the client, called only when a hostname rule is reached. */
  hostname?: () => Promise<string | undefined>;
  database: string;
  user: string;
}

export interface HbaRoles {
  /** Is `user` a (direct or indirect) member of `role`? Resolve from the primary, cached by the caller. */
  isMember(user: string, role: string): Promise<boolean> | boolean;
}

export interface HbaServerAddress {
  address: string;
  netmask: string;
}

export interface HbaMatchEnv {
  /** This host's interface addresses for samehost/samenet (default: os.networkInterfaces()). */
  serverAddresses?: HbaServerAddress[];
  /** Forward lookup to confirm a reverse-resolved name (default: dns.lookup, all addresses). */
  forwardLookup?: (name: string) => Promise<string[]>;
}

function localInterfaces(): HbaServerAddress[] {
  const out: HbaServerAddress[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const i of list ?? []) out.push({ address: i.address, netmask: i.netmask });
  }
  return out;
}

async function defaultForwardLookup(name: string): Promise<string[]> {
  const r = await dnsPromises.lookup(name, { all: true });
  return r.map((a) => a.address);
}

function hostnameMatch(pattern: string, actual: string): boolean {
  const p = pattern.toLowerCase();
  const a = actual.toLowerCase();
  if (p.startsWith('.')) return a.length >= p.length && a.endsWith(p);
  return p === a;
}

async function checkRoleToken(tok: HbaToken, user: string, roles: HbaRoles): Promise<boolean> {
  if (!tok.quoted && tok.value.startsWith('+')) {
    const role = tok.value.slice(1);
    return role === user || (await roles.isMember(user, role));
  }
  return tok.value === user || (!tok.quoted && tok.value === 'all');
}

async function checkDbToken(tok: HbaToken, db: string, user: string, roles: HbaRoles): Promise<boolean> {
  if (!tok.quoted) {
    if (tok.value === 'all') return true;
    if (tok.value === 'sameuser') return db === user;
    if (tok.value === 'samerole' || tok.value === 'samegroup') return db === user || (await roles.isMember(user, db));
    // pgrelay does not proxy replication connections
    if (tok.value === 'replication') return false;
  }
  return tok.value === db;
}

/**
 * The first rule matching the connection, or undefined (implicit reject). A
 * returned rule may itself be `reject`. Both cases are reported to the client
 * as FATAL 28000 with noEntryMessage() as the detail, as pgpool does.
 */
export async function matchHba(
  rules: readonly HbaRule[],
  conn: HbaConn,
  roles: HbaRoles,
  env: HbaMatchEnv = {},
): Promise<HbaRule | undefined> {
  const clientIp = conn.address !== undefined ? parseIp(conn.address) : undefined;
  let ifaces: HbaServerAddress[] | undefined;
  let resolvedName: string | undefined | null = null; // null = not looked up yet
  let forwardOk: boolean | undefined;

  const hostnameCheck = async (pattern: string): Promise<boolean> => {
    if (!clientIp || !conn.hostname) return false;
    if (resolvedName === null) {
      try {
        resolvedName = await conn.hostname();
      } catch {
        resolvedName = undefined;
      }
    }
    if (!resolvedName || !hostnameMatch(pattern, resolvedName)) return false;
    if (forwardOk === undefined) {
      try {
        const addrs = await (env.forwardLookup ?? defaultForwardLookup)(resolvedName);
        const c = unmap(clientIp);
        forwardOk = addrs.some((a) => {
          const p = parseIp(a);
          return p !== undefined && unmap(p).family === c.family && unmap(p).bytes.equals(c.bytes);
        });
      } catch {
        forwardOk = false;
      }
    }
    return forwardOk;
  };

  const sameHostOrNet = (net: boolean): boolean => {
    if (!clientIp) return false;
    ifaces ??= env.serverAddresses ?? localInterfaces();
    return ifaces.some((i) => {
      const a = parseIp(i.address);
      if (!a) return false;
      const mask = net ? parseIp(i.netmask) : undefined;
      if (net && (!mask || mask.family !== a.family)) return false;
      return inRange(clientIp, a.bytes, net ? mask!.bytes : cidrMask(a.family === 4 ? 32 : 128, a.family), a.family);
    });
  };

  for (const rule of rules) {
    if (rule.type === 'local') {
      if (!conn.local) continue;
    } else {
      if (conn.local) continue;
      if (conn.ssl && rule.type === 'hostnossl') continue;
      if (!conn.ssl && rule.type === 'hostssl') continue;
      const a = rule.address!;
      switch (a.kind) {
        case 'all':
          break;
        case 'samehost':
        case 'samenet':
          if (!sameHostOrNet(a.kind === 'samenet')) continue;
          break;
        case 'cidr':
          if (!clientIp || !inRange(clientIp, a.addr, a.mask, a.family)) continue;
          break;
        case 'hostname':
          if (!(await hostnameCheck(a.name))) continue;
          break;
      }
    }
    let dbOk = false;
    for (const t of rule.databases)
      if (await checkDbToken(t, conn.database, conn.user, roles)) {
        dbOk = true;
        break;
      }
    if (!dbOk) continue;
    let userOk = false;
    for (const t of rule.users)
      if (await checkRoleToken(t, conn.user, roles)) {
        userOk = true;
        break;
      }
    if (!userOk) continue;
    return rule;
  }
  return undefined;
}

/** pgpool's detail text for a rejected connection. */
export function noEntryMessage(conn: Pick<HbaConn, 'local' | 'ssl' | 'address' | 'database' | 'user'>): string {
  const host = conn.local ? '[local]' : displayAddress(conn.address ?? '');
  return `no pool_hba.conf entry for host "${host}", user "${conn.user}", database "${conn.database}", ${conn.ssl ? 'SSL on' : 'SSL off'}`;
}

/** The full FATAL pgpool sends for no match / reject. */
export function noEntryError(conn: Pick<HbaConn, 'local' | 'ssl' | 'address' | 'database' | 'user'>): {
  code: string;
  message: string;
  detail: string;
  hint: string;
} {
  return {
    code: '28000',
    message: 'client authentication failed',
    detail: noEntryMessage(conn),
    hint: 'see pgpool log for details',
  };
}
