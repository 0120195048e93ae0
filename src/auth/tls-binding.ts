/**
 * SCRAM channel binding type `tls-server-end-point` (RFC 5929 §4.1): the hash
 * of the server's DER certificate, where the hash is the certificate's
 * signature hash, except that MD5 and SHA-1 are replaced by SHA-256.
 *
 * Node 20's X509Certificate does not expose the signature algorithm, so it is
 * read from the outer `signatureAlgorithm` AlgorithmIdentifier of the DER:
 *   Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
 */
import { createHash, X509Certificate } from 'node:crypto';

/** Signature algorithm OID -> hash used for tls-server-end-point. */
const SIG_OID_HASH: Record<string, string> = {
  '1.2.840.113549.1.1.4': 'sha256', // md5WithRSAEncryption -> SHA-256
  '1.2.840.113549.1.1.5': 'sha256', // sha1WithRSAEncryption -> SHA-256
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
  '1.2.840.113549.1.1.14': 'sha224',
  '1.2.840.10045.4.1': 'sha256', // ecdsa-with-SHA1 -> SHA-256
  '1.2.840.10045.4.3.1': 'sha224',
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
  '1.2.840.10040.4.3': 'sha256', // dsa-with-sha1 -> SHA-256
  '2.16.840.1.101.3.4.3.1': 'sha224', // dsa-with-sha224
  '2.16.840.1.101.3.4.3.2': 'sha256', // dsa-with-sha256
};

interface Tlv {
  tag: number;
  start: number; // offset of the content
  end: number; // offset after the content
}

function readTlv(buf: Buffer, pos: number): Tlv {
  if (pos + 2 > buf.length) throw new Error('truncated DER');
  const tag = buf[pos]!;
  let len = buf[pos + 1]!;
  let p = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || p + n > buf.length) throw new Error('bad DER length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p + i]!;
    p += n;
  }
  if (p + len > buf.length) throw new Error('truncated DER');
  return { tag, start: p, end: p + len };
}

function decodeOid(b: Buffer): string {
  if (b.length === 0) throw new Error('empty OID');
  const parts: number[] = [];
  const first = b[0]!;
  parts.push(first < 80 ? Math.floor(first / 40) : 2, first < 80 ? first % 40 : first - 80);
  let v = 0;
  for (let i = 1; i < b.length; i++) {
    const c = b[i]!;
    v = v * 128 + (c & 0x7f);
    if (!(c & 0x80)) {
      parts.push(v);
      v = 0;
    }
  }
  return parts.join('.');
}

/** The dotted OID of the certificate's signature algorithm. */
export function certificateSignatureOid(der: Buffer): string {
  const cert = readTlv(der, 0);
  if (cert.tag !== 0x30) throw new Error('certificate is not a DER SEQUENCE');
  const tbs = readTlv(der, cert.start);
  const algId = readTlv(der, tbs.end);
  if (algId.tag !== 0x30) throw new Error('bad signatureAlgorithm');
  const oid = readTlv(der, algId.start);
  if (oid.tag !== 0x06) throw new Error('bad signatureAlgorithm OID');
  return decodeOid(der.subarray(oid.start, oid.end));
}

/** Hash name used by tls-server-end-point for this certificate (throws for e.g. Ed25519 or RSA-PSS, as PostgreSQL does). */
export function endPointHashName(cert: X509Certificate | Buffer): string {
  const der = Buffer.isBuffer(cert) ? cert : cert.raw;
  const oid = certificateSignatureOid(der);
  const h = SIG_OID_HASH[oid];
  if (!h) throw new Error(`could not find digest for signature algorithm ${oid}`);
  return h;
}

/**
 * tls-server-end-point channel binding data for a certificate given as an
 * X509Certificate, DER bytes, or PEM text.
 */
export function tlsServerEndPoint(cert: X509Certificate | Buffer | string): Buffer {
  const der = typeof cert === 'string' ? new X509Certificate(cert).raw : Buffer.isBuffer(cert) ? cert : cert.raw;
  return createHash(endPointHashName(der)).update(der).digest();
}
