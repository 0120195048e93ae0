/**
 * Health check of one node (pgpool's health_check.c): connect and authenticate
 * as health_check_user to health_check_database (empty → postgres), no query,
 * close. One attempt is bounded by min(health_check_timeout, connect_timeout);
 * a check is up to 1 + health_check_max_retries attempts, health_check_retry_delay
 * seconds apart. Counters for SHOW pool_health_check_stats.
 */
import type { HealthCheckConfig } from '../config/types.js';
import { CheckConnection, type CheckCredentials } from './conn.js';

/** SHOW pool_health_check_stats counters for one node. Times in ms since epoch, null = never. */
export interface HealthStats {
  total_count: number;
  success_count: number;
  fail_count: number;
  skip_count: number;
  retry_count: number;
  average_retry_count: number;
  max_retry_count: number;
  /** ms */
  max_duration: number;
  /** ms */
  min_duration: number;
  /** ms */
  average_duration: number;
  last_health_check: number | null;
  last_successful_health_check: number | null;
  last_skip_health_check: number | null;
  last_failed_health_check: number | null;
}

export function emptyHealthStats(): HealthStats {
  return {
    total_count: 0,
    success_count: 0,
    fail_count: 0,
    skip_count: 0,
    retry_count: 0,
    average_retry_count: 0,
    max_retry_count: 0,
    max_duration: 0,
    min_duration: 0,
    average_duration: 0,
    last_health_check: null,
    last_successful_health_check: null,
    last_skip_health_check: null,
    last_failed_health_check: null,
  };
}

export class HealthStatsRecorder {
  private s = emptyHealthStats();
  private totalDuration = 0;

  snapshot(): HealthStats {
    return { ...this.s };
  }

  skipped(now = Date.now()): void {
    this.s.total_count++;
    this.s.skip_count++;
    this.s.last_health_check = now;
    this.s.last_skip_health_check = now;
  }

  /** A finished check (all its attempts). */
  checked(ok: boolean, retries: number, durationMs: number, now = Date.now()): void {
    const s = this.s;
    s.total_count++;
    if (ok) {
      s.success_count++;
      s.last_successful_health_check = now;
    } else {
      s.fail_count++;
      s.last_failed_health_check = now;
    }
    s.last_health_check = now;
    s.retry_count += retries;
    s.max_retry_count = Math.max(s.max_retry_count, retries);
    const checks = s.success_count + s.fail_count;
    s.average_retry_count = s.retry_count / checks;
    const d = Math.round(durationMs);
    this.totalDuration += d;
    s.max_duration = Math.max(s.max_duration, d);
    s.min_duration = checks === 1 ? d : Math.min(s.min_duration, d);
    s.average_duration = this.totalDuration / checks;
  }
}

export interface HealthCheckResult {
  ok: boolean;
  /** Attempts after the first. */
  retries: number;
  durationMs: number;
  /** Last attempt's error. */
  error?: string;
  /** The last failure was a timeout (pgpool then requests a full failover). */
  timedOut?: boolean;
}

/** Per-attempt timeout in ms: the smaller of health_check_timeout (s) and connect_timeout (ms); 0 means none. */
export function attemptTimeoutMs(hc: HealthCheckConfig): number {
  const a = hc.timeout > 0 ? hc.timeout * 1000 : Infinity;
  const b = hc.connect_timeout > 0 ? hc.connect_timeout : Infinity;
  const t = Math.min(a, b);
  return Number.isFinite(t) ? t : 60_000;
}

/** One connect + authenticate attempt. */
export async function healthAttempt(
  node: { id: number; host: string; port: number },
  cred: CheckCredentials,
  timeoutMs: number,
): Promise<void> {
  try {
    const c = await CheckConnection.open(node, cred, timeoutMs, 'pgrelay health check');
    c.close();
  } catch (e) {
    // The server answered and is alive, only full (53300 too_many_connections):
    // not a reason to fail the node over (pgpool does; a classic false failover).
    if ((e as { code?: unknown }).code === '53300') return;
    throw e;
  }
}

/**
 * A full check with retries. `shouldContinue` is asked before each retry (stop()
 * or a config change aborts the retries, the result then counts as success so
 * nothing fails over on shutdown).
 */
export async function healthCheckWithRetries(
  node: { id: number; host: string; port: number },
  hc: HealthCheckConfig,
  cred: CheckCredentials,
  shouldContinue: () => boolean,
  sleep: (ms: number) => Promise<void>,
): Promise<HealthCheckResult> {
  const t0 = performance.now();
  const timeout = attemptTimeoutMs(hc);
  let retries = 0;
  let lastErr = '';
  let timedOut = false;
  for (;;) {
    try {
      await healthAttempt(node, cred, timeout);
      return { ok: true, retries, durationMs: performance.now() - t0 };
    } catch (e) {
      lastErr = (e as Error).message;
      timedOut = /timeout/i.test(lastErr);
    }
    if (retries >= hc.max_retries) break;
    await sleep(Math.max(0, hc.retry_delay) * 1000);
    if (!shouldContinue()) return { ok: true, retries, durationMs: performance.now() - t0, error: 'aborted' };
    retries++;
  }
  return { ok: false, retries, durationMs: performance.now() - t0, error: lastErr, timedOut };
}
