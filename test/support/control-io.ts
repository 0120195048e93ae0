/** A ControlIO (src/cli-control.ts) that records what a command prints. */
import type { ControlIO } from '../../src/cli-control.js';

export function capture(): ControlIO & { stdout: string; stderr: string } {
  const io = {
    stdout: '',
    stderr: '',
    out(s: string) {
      io.stdout += s;
    },
    err(s: string) {
      io.stderr += s;
    },
  };
  return io;
}
