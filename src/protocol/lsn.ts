/** WAL positions (LSNs) as PostgreSQL writes them in text: `16/B374D848`, two hex halves of a 64-bit number. */

/** Parse `16/B374D848`; undefined for anything else (NULL included). */
export function parseLsn(s: string | null | undefined): bigint | undefined {
  if (!s) return undefined;
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(s.trim());
  if (!m) return undefined;
  return (BigInt(`0x${m[1]}`) << 32n) + BigInt(`0x${m[2]}`);
}

/** An LSN as PostgreSQL writes it. */
export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}
