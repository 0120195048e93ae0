import { describe, expect, it } from 'vitest';
import { decodeParameterStatus, parameterStatus, readyForQuery } from '../../src/protocol/messages.js';
import { ReportedSettings, filterReports } from '../../src/session/reported-settings.js';

describe('ReportedSettings', () => {
  it('tells a value once, then again only when it changes (names in any case)', () => {
    const r = new ReportedSettings();
    r.told('TimeZone', 'Etc/UTC');
    expect(r.tells('TimeZone', 'Etc/UTC')).toBe(false);
    expect(r.tells('timezone', 'Asia/Tokyo')).toBe(true);
    expect(r.tells('TimeZone', 'Asia/Tokyo')).toBe(false);
    expect(r.tells('TimeZone', 'Etc/UTC')).toBe(true);
    expect(r.tells('application_name', '')).toBe(true);
  });
});

describe('filterReports', () => {
  const C = Buffer.from([0x43, 0, 0, 0, 7, 0x53, 0x45, 0]); // CommandComplete "SE"
  it('drops the reports the filter refuses, rewrites those it tells otherwise, keeps every other message in order', () => {
    const bytes = Buffer.concat([
      C,
      parameterStatus('a', '1'),
      parameterStatus('b', '2'),
      parameterStatus('c', ''),
      readyForQuery(0x49),
    ]);
    const seen: string[] = [];
    const out = filterReports(bytes, (k, v) => {
      seen.push(`${k}=${v}`);
      return k === 'a' ? undefined : k === 'c' ? 'start-up' : v;
    });
    expect(seen).toEqual(['a=1', 'b=2', 'c=']);
    expect(out).toEqual(
      Buffer.concat([C, parameterStatus('b', '2'), parameterStatus('c', 'start-up'), readyForQuery(0x49)]),
    );
  });

  it('returns the same buffer when nothing changes', () => {
    const bytes = Buffer.concat([parameterStatus('a', '1'), readyForQuery(0x49)]);
    expect(filterReports(bytes, (_k, v) => v)).toBe(bytes);
  });

  it('reads a report', () => {
    const m = parameterStatus('DateStyle', 'ISO, MDY');
    expect(decodeParameterStatus(m, 5, m.length)).toEqual(['DateStyle', 'ISO, MDY']);
    expect(decodeParameterStatus(Buffer.from('x'), 0, 1)).toBeUndefined();
  });
});
