/** Minimal types for pg-cursor (no @types/pg-cursor installed). */
declare module 'pg-cursor' {
  import type { Submittable, QueryResultRow, Connection } from 'pg';

  interface CursorQueryConfig {
    rowMode?: 'array';
    types?: unknown;
  }

  class Cursor<Row extends QueryResultRow = QueryResultRow> implements Submittable {
    constructor(text: string, values?: unknown[], config?: CursorQueryConfig);
    submit(connection: Connection): void;
    read(maxRows: number): Promise<Row[]>;
    close(): Promise<void>;
  }

  export default Cursor;
}
