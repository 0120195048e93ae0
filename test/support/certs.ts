/**
 * Test certificates made at run time with openssl (from PATH) in a directory
 * the caller owns: certificate authorities, server certificates with chosen
 * subjectAltNames, client certificates with a chosen CN. EC P-256 keys, because
 * RSA key generation is slow on a loaded 2-core machine.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface CertFiles {
  cert: string;
  key: string;
}

/** A CA: its certificate signs leaves made with leaf(). */
export interface CertAuthority extends CertFiles {
  name: string;
}

const OPENSSL_TIMEOUT_MS = 30_000;

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'], timeout: OPENSSL_TIMEOUT_MS });
  } catch (e) {
    const err = e as Error & { stderr?: Buffer };
    throw new Error(`openssl ${args.join(' ')} failed: ${err.message}\n${err.stderr?.toString() ?? ''}`);
  }
}

const KEY_ARGS = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** A self-signed CA certificate `<name>.crt` / `<name>.key` in dir. */
export function makeCa(dir: string, name: string): CertAuthority {
  openssl(
    [
      'req',
      '-x509',
      ...KEY_ARGS,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.crt`,
      '-days',
      '2',
      '-subj',
      `/CN=pgrelay test CA ${name}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  fs.chmodSync(path.join(dir, `${name}.key`), 0o600);
  return { name, cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
}

export interface LeafOptions {
  /** Subject CN (for client certificates: the user name PostgreSQL and pgrelay compare). */
  cn: string;
  /** subjectAltName entries, e.g. ['DNS:localhost', 'IP:127.0.0.1']; none when omitted. */
  san?: string[];
}

/** A certificate `<name>.crt` / `<name>.key` in dir, signed by ca. The key is mode 0600. */
export function makeLeaf(dir: string, name: string, ca: CertAuthority, o: LeafOptions): CertFiles {
  openssl(['req', ...KEY_ARGS, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${o.cn}`], dir);
  const ext = path.join(dir, `${name}.ext`);
  const lines = ['basicConstraints=CA:FALSE'];
  if (o.san && o.san.length > 0) lines.push(`subjectAltName=${o.san.join(',')}`);
  fs.writeFileSync(ext, `${lines.join('\n')}\n`);
  openssl(
    [
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      ca.cert,
      '-CAkey',
      ca.key,
      '-CAcreateserial',
      '-out',
      `${name}.crt`,
      '-days',
      '2',
      '-extfile',
      ext,
    ],
    dir,
  );
  fs.chmodSync(path.join(dir, `${name}.key`), 0o600);
  return { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
}

/**
 * Copy a certificate and key into a PostgreSQL data directory as `<prefix>.crt`
 * / `<prefix>.key`, owned by the data directory's owner with mode 0600 (the
 * server refuses a key readable by others); returns the file names relative to
 * the data directory, as ssl_cert_file / ssl_key_file take them.
 */
export function installInDataDir(dataDir: string, files: CertFiles, prefix: string): { cert: string; key: string } {
  const st = fs.statSync(dataDir);
  const out = { cert: `${prefix}.crt`, key: `${prefix}.key` };
  for (const [src, dst] of [
    [files.cert, out.cert],
    [files.key, out.key],
  ] as const) {
    const target = path.join(dataDir, dst);
    fs.copyFileSync(src, target);
    fs.chmodSync(target, 0o600);
    fs.chownSync(target, st.uid, st.gid);
  }
  return out;
}

/** Copy a CA certificate into a data directory (readable by the server); returns the relative name. */
export function installCaInDataDir(dataDir: string, ca: CertAuthority, name: string): string {
  const st = fs.statSync(dataDir);
  const target = path.join(dataDir, name);
  fs.copyFileSync(ca.cert, target);
  fs.chmodSync(target, 0o644);
  fs.chownSync(target, st.uid, st.gid);
  return name;
}
