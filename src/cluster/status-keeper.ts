/**
 * Keeps <logdir>/pgpool_status in step with the node table: read once at start
 * (nodes saved as down stay down, unless -D), written on every status change.
 * A write failure is logged once and never stops the cluster code. The file
 * format is status-file.ts.
 */
import type { Logger } from '../log.js';
import type { NodeTable } from './nodes.js';
import { readStatusFile, writeStatusFile } from './status-file.js';

export class StatusKeeper {
  private writeWarned = false;

  constructor(
    private readonly file: string,
    private readonly nodes: NodeTable,
    private readonly log: Logger,
  ) {}

  /** At start: apply the saved statuses (or discard them), then save the current ones. */
  load(discard: boolean): void {
    if (discard) {
      this.log.info({ file: this.file }, 'discarding the pgpool_status file (-D)');
    } else {
      const st = readStatusFile(this.file);
      if (st) {
        st.forEach((s, id) => {
          if (s === 'down' && this.nodes.get(id))
            this.nodes.setStatus(id, 'down', `down in ${this.file} (attach it, or start with -D to discard the file)`);
        });
      }
    }
    this.save();
  }

  save(): void {
    try {
      writeStatusFile(
        this.file,
        this.nodes.all().map((n) => n.status),
      );
    } catch (e) {
      if (!this.writeWarned)
        this.log.warn({ file: this.file, err: (e as Error).message }, 'could not write the pgpool_status file');
      this.writeWarned = true;
    }
  }
}
