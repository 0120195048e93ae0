import { describe, expect, it } from 'vitest';
import { addBackendPid, nodeOwningPids, removeBackendPid } from '../../src/pool/backend-pids.js';

describe('backend pids by node (where a pid given to pg_terminate_backend() lives)', () => {
  it('names the one node owning every pid; none for unknown, mixed or ambiguous pids', () => {
    addBackendPid(900001, 1);
    addBackendPid(900002, 1);
    addBackendPid(900003, 2);
    expect(nodeOwningPids([900001])).toBe(1);
    expect(nodeOwningPids([900001, 900002])).toBe(1);
    expect(nodeOwningPids([900001, 900003])).toBeUndefined();
    expect(nodeOwningPids([900009])).toBeUndefined();
    // The same pid on two nodes (two hosts): no single node.
    addBackendPid(900003, 0);
    expect(nodeOwningPids([900003])).toBeUndefined();
    removeBackendPid(900003, 0);
    expect(nodeOwningPids([900003])).toBe(2);
    for (const [pid, node] of [
      [900001, 1],
      [900002, 1],
      [900003, 2],
    ])
      removeBackendPid(pid, node);
    expect(nodeOwningPids([900001])).toBeUndefined();
    removeBackendPid(900001, 1); // closing twice is harmless
  });
});
