/**
 * Prometheus metrics of coordination (coordination = 'etcd'), read from the
 * coordinator at scrape time: whether this instance leads, how many instances
 * are registered, whether this one holds its lease, the last etcd round trip,
 * and how many times the lease was lost.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { CoordinatorStatus } from './coordinator.js';

export function registerCoordinationMetrics(registry: Registry, status: () => CoordinatorStatus): void {
  const registers = [registry];
  new Gauge({
    name: 'pgrelay_coordination_leader',
    help: 'Whether this instance is the coordination leader (1) or not (0).',
    registers,
    collect() {
      this.set(status().isLeader ? 1 : 0);
    },
  });
  new Gauge({
    name: 'pgrelay_coordination_members',
    help: 'pgrelay instances registered in etcd (as last read).',
    registers,
    collect() {
      this.set(status().members);
    },
  });
  new Gauge({
    name: 'pgrelay_coordination_lease_held',
    help: 'Whether this instance holds its etcd lease (1) or lost it / has not joined (0).',
    registers,
    collect() {
      this.set(status().leaseHeld ? 1 : 0);
    },
  });
  new Gauge({
    name: 'pgrelay_etcd_rtt_seconds',
    help: 'Round-trip time of the last etcd read.',
    registers,
    collect() {
      this.set(status().rttSeconds);
    },
  });
  let seen = 0;
  new Counter({
    name: 'pgrelay_etcd_lease_losses_total',
    help: 'Times this instance lost its etcd lease (could not renew it within etcd_lease_ttl).',
    registers,
    collect() {
      const n = status().leaseLosses;
      if (n > seen) this.inc(n - seen);
      seen = n;
    },
  });
}
