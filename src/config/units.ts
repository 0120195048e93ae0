/**
 * Units of integer parameters, PostgreSQL GUC style: a value may carry a unit
 * suffix ('5min', '10MB') and is stored in the parameter's base unit. The
 * loader (values.ts) reads the suffixes, PGPOOL SHOW (admin/show-config.ts)
 * prints the largest exact one.
 */

/** Base unit of an integer parameter (PostgreSQL GUC style: values may carry a unit suffix). */
export type ParamUnit = 'ms' | 's' | 'min' | 'B' | 'kB';
/** Unit suffixes a value may carry, with their size in ms (time) or bytes (memory). */
export const TIME_UNITS: Readonly<Record<string, number>> = {
  us: 0.001,
  ms: 1,
  s: 1000,
  min: 60000,
  h: 3600000,
  d: 86400000,
};
export const MEMORY_UNITS: Readonly<Record<string, number>> = {
  B: 1,
  kB: 1024,
  MB: 1024 ** 2,
  GB: 1024 ** 3,
  TB: 1024 ** 4,
};
/** Size of the base unit in ms (time) or bytes (memory). */
export const BASE_UNIT_SIZE: Readonly<Record<ParamUnit, number>> = { ms: 1, s: 1000, min: 60000, B: 1, kB: 1024 };
export const isTimeUnit = (u: ParamUnit): boolean => u === 'ms' || u === 's' || u === 'min';

/** The base unit's name in words, for error messages. */
export function unitName(u: ParamUnit): string {
  switch (u) {
    case 'ms':
      return 'milliseconds';
    case 's':
      return 'seconds';
    case 'min':
      return 'minutes';
    case 'B':
      return 'bytes';
    case 'kB':
      return 'kilobytes';
  }
}

/** The suffixes a value of this unit may carry, for error messages. */
export function unitSuffixes(u: ParamUnit): string {
  return Object.keys(isTimeUnit(u) ? TIME_UNITS : MEMORY_UNITS).join(', ');
}
