/**
 * Who the cluster's own connections log in as, and how long their queries may
 * take. Health checks use a node's health_check_* settings (its per-node
 * override, else the defaults), falling back to sr_check_user; the primary
 * search and the sr check use sr_check_user. Passwords left empty come from
 * pool_passwd, re-read when the file changes.
 */
import { PoolPasswdCache } from '../auth/credentials.js';
import type { Config, HealthCheckConfig } from '../config/types.js';
import { type CheckCredentials, credentials, srCheckCredentials } from './conn.js';

/** Per-query bound of the primary search and the sr check: connect_timeout, within 1..10 s. */
export function srQueryTimeoutMs(cfg: Config): number {
  return Math.max(1000, Math.min(cfg.connect_timeout > 0 ? cfg.connect_timeout : 10_000, 10_000));
}

export function healthCheckConfig(cfg: Config, id: number): HealthCheckConfig {
  return cfg.health_check_per_node[id] ?? cfg.health_check;
}

export class CheckAccess {
  private readonly passwd = new PoolPasswdCache();

  constructor(private readonly getConfig: () => Config) {}

  healthConfig(id: number): HealthCheckConfig {
    return healthCheckConfig(this.getConfig(), id);
  }

  healthCredentials(hc: HealthCheckConfig): CheckCredentials {
    const cfg = this.getConfig();
    const user = hc.user || cfg.sr_check_user || 'postgres';
    const password = hc.user ? hc.password : cfg.sr_check_password;
    return credentials(cfg, user, password, hc.database, this.passwd.get(cfg));
  }

  srCredentials(cfg: Config): CheckCredentials {
    return srCheckCredentials(cfg, this.passwd.get(cfg));
  }
}
