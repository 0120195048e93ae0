/**
 * The query cache commands. pgrelay has no query cache: SHOW pool_cache and
 * PGPOOL SET CACHE DELETE answer as pgpool does when its cache is empty.
 */
import { type AdminResult, rowsResult } from './result.js';

export const POOL_CACHE_COLUMNS = [
  'num_cache_hits',
  'num_selects',
  'cache_hit_ratio',
  'num_hash_entries',
  'used_hash_entries',
  'num_cache_entries',
  'used_cache_entries_size',
  'free_cache_entries_size',
  'fragment_cache_entries_size',
];

export function showPoolCache(): AdminResult {
  return rowsResult(POOL_CACHE_COLUMNS, [['0', '0', '0.00', '0', '0', '0', '0', '0', '0']]);
}

/** pgpool's reply for a query that is not cached. */
export function cacheDelete(query: string): AdminResult {
  return {
    kind: 'command',
    tag: 'SET',
    notices: [{ severity: 'NOTICE', code: '00000', message: `query cache does not exist for query: "${query}"` }],
  };
}
