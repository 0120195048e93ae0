/**
 * Session-level settings (SET/RESET that ran outside a transaction), kept to be
 * replayed on a node the session connects to later, so that its settings read the
 * same wherever a statement runs. DISCARD ALL forgets them.
 */
import { TxStatus } from '../protocol/constants.js';
import { settingsKey } from '../pool/startup-settings.js';
import type { MultiSetting } from '../router/classifier.js';
import type { Classification } from '../router/router.js';
import type { TxCommand } from '../router/classifier.js';

/** SET / RESET of client_encoding (or SET NAMES): see clientEncoding. */
const RESET_ENCODING =
  /^\s*(?:reset\s+(?:client_encoding|all)\b|set\s+(?:session\s+)?(?:client_encoding|names)\s*(?:=|\bto\b|\s)\s*default\b)/i;
const SET_ENCODING = /^\s*set\s+(?:session\s+)?(?:client_encoding|names)\s*(?:=|\bto\b|\s)\s*(['"]?)([^'";\s]*)\1/i;

/** Settings RESET ALL leaves as they are (PostgreSQL's GUC_NO_RESET_ALL). */
const KEPT_BY_RESET_ALL: ReadonlySet<string> = new Set(['role', 'session_authorization']);

/** Beyond this many, the session stops connecting to new nodes mid-session (its reads go to the primary). */
const MAX_REPLAY = 64;

export class SettingsReplay {
  private readonly list: string[] = [];
  /** The setting each statement of `list` changes, when known (see `apply`). */
  private readonly names: Array<string | undefined> = [];
  /**
   * pool_mode = transaction: the client's start-up settings replayed before the statements
   * (lower-case name → value, see pool/startup-settings.ts). RESET ALL, DISCARD ALL and
   * the like keep them, as on a direct connection: they are set again right behind such a
   * statement (startupRestore). Never changed in place (connections share it: see
   * Backends.applySettings).
   */
  startup: ReadonlyMap<string, string> = new Map();
  /**
   * The SET/RESET statements of the open transaction block and its savepoints, in order:
   * they last if it commits (PostgreSQL undoes them at ROLLBACK, ROLLBACK TO SAVEPOINT).
   */
  private block: Array<BlockSet | { savepoint: string }> | undefined;
  /** A statement of the open transaction block failed: its COMMIT rolls back. */
  private blockFailed = false;
  /** More settings than MAX_REPLAY: replaying is no longer possible. */
  overflow = false;
  /** A statement changed settings that are not recorded (see `record`). */
  onUnknown: (() => void) | undefined;
  /**
   * Recorded settings changed that the connections held did not all follow as recorded (a
   * SET among several statements, the SETs of a transaction block at its COMMIT): bring
   * each to the list before anything else runs there.
   */
  onResync: (() => void) | undefined;
  /** The list stopped being replayable. */
  onOverflow: (() => void) | undefined;
  /**
   * May the functions a statement called have changed settings in their bodies
   * (Router.mayChangeSettings)? Unset: none is followed.
   */
  functionsMayChangeSettings: ((fns: readonly string[]) => boolean) | undefined;

  get statements(): readonly string[] {
    return this.list;
  }

  /** All the client's settings as one string (start-up values, then the SET statements): equal for equal settings. */
  fingerprint(): string {
    return `${settingsKey(this.startup)}\u0002${this.list.join('\u0001')}`;
  }

  /**
   * The client's encoding as its settings make it (lower case; '' when it never chose one):
   * its start-up `client_encoding`, then the last `SET client_encoding` / `SET NAMES`
   * (RESET, `DEFAULT`, RESET ALL: back to the start-up's). The same bytes are another text
   * in another encoding.
   */
  clientEncoding(): string {
    const startup = this.startup.get('client_encoding') ?? '';
    let value = startup;
    for (const sql of this.list) {
      if (RESET_ENCODING.test(sql)) value = startup;
      else {
        const m = SET_ENCODING.exec(sql);
        if (m) value = m[2] ?? '';
      }
    }
    return value.toLowerCase();
  }

  /**
   * Record a statement run on both nodes (after it completed with `ok` and transaction
   * status `status`): a SET/RESET outside a transaction block lasts at once, one inside
   * when its transaction commits (savepoints followed). Settings changed in a way that is
   * not recorded (a SET among several statements inside a transaction block) make the
   * connections' settings unknown (onUnknown).
   */
  record(sql: string, cls: Classification, ok: boolean, status: number): void {
    // A DO block, a procedure or a function the statement called may have changed settings
    // in its body: the connections are reset before their next use (what it set does not
    // last, nor reach another client).
    if (ok && (cls.runsCode === true || (cls.functions.length > 0 && this.functionsMayChangeSettings?.(cls.functions))))
      this.onUnknown?.();
    if (cls.statementCount === 1 && cls.tx !== undefined) {
      this.transactionCommand(cls.tx, cls.name, ok, status);
      return;
    }
    // DISCARD ALL cannot run inside a transaction block: one that ran lasts, whatever the
    // pipeline began after it (its status).
    if (ok && cls.statementCount === 1 && cls.kind === 'discard' && cls.resetsAll === true) {
      this.apply(sql, cls);
      return;
    }
    if (status === TxStatus.Idle) {
      if (this.block !== undefined) {
        // The transaction block ended some other way (a COMMIT or ROLLBACK among several
        // statements…): whether its SETs last is not known.
        this.block = undefined;
        this.onUnknown?.();
      }
      this.blockFailed = false;
    }
    const changes =
      cls.kind === 'set' || cls.kind === 'reset' || (cls.kind === 'multi' && /\b(set|reset)\b/i.test(sql));
    if (!ok) {
      if (status !== TxStatus.Idle) this.blockFailed = true;
      return;
    }
    if (status !== TxStatus.Idle && cls.statementCount === 1 && changes) {
      // set_config(…, $3): whether it lasts is known only from the bound value.
      if (cls.settingScope === 'unknown') this.onUnknown?.();
      // Inside a transaction block: kept if the transaction commits (SET LOCAL,
      // set_config(…, true), SET TRANSACTION and SET CONSTRAINTS never are).
      else if (cls.settingScope !== 'local') {
        this.block ??= [];
        this.block.push({ sql, cls });
      }
      return;
    }
    if (status === TxStatus.Idle && cls.kind === 'multi' && cls.multiSettings) {
      // Several statements outside a transaction block, all done: their SET/RESET last, as
      // one by one. They ran on the primary alone, and no start-up setting was set again
      // behind a RESET there: every connection held is brought to the list at once.
      for (const m of cls.multiSettings) this.apply(m.sql, m);
      this.onResync?.();
      return;
    }
    if (status !== TxStatus.Idle || cls.statementCount > 1) {
      const known = !changes || cls.settingScope === 'local' || /^\s*set\s+local\b/i.test(sql);
      if (!known) this.onUnknown?.();
      return;
    }
    this.apply(sql, cls);
  }

  /** The open transaction block SET or RESET settings that last if it commits. */
  get blockChangesSettings(): boolean {
    return this.block?.some((x) => !('savepoint' in x)) === true;
  }

  /** pgrelay aborted the open transaction block (a statement failed on another node): its COMMIT rolls back. */
  transactionAborted(): void {
    this.blockFailed = true;
  }

  /** BEGIN, SAVEPOINT, COMMIT…: what becomes of the SETs of the transaction block. */
  private transactionCommand(tx: TxCommand, name: string | undefined, ok: boolean, status: number): void {
    const block = this.block;
    // A COMMIT or ROLLBACK the server skipped after an error before it (or refused): the
    // transaction goes on, failed, and so does its block (a ROLLBACK TO may recover it).
    if (!ok && status === TxStatus.Failed) {
      this.blockFailed = true;
      return;
    }
    switch (tx) {
      case 'savepoint':
        if (ok && name !== undefined) {
          this.block ??= [];
          this.block.push({ savepoint: name });
        }
        break;
      case 'rollback_to':
      case 'release': {
        if (!ok || block === undefined) break;
        let at = -1;
        if (name !== undefined)
          for (let i = block.length - 1; i >= 0 && at < 0; i--) if (savepointOf(block[i]) === name) at = i;
        if (at < 0) {
          // A savepoint pgrelay did not see: what it undid is not known.
          if (tx === 'rollback_to' && block.some((x) => savepointOf(x) === undefined)) {
            this.block = undefined;
            this.onUnknown?.();
          }
          break;
        }
        if (tx === 'rollback_to') {
          // Undoes what followed the savepoint (and the error that led there), keeps the savepoint.
          block.length = at + 1;
          this.blockFailed = false;
        } else this.block = [...block.slice(0, at), ...block.slice(at + 1).filter((x) => savepointOf(x) === undefined)];
        break;
      }
      case 'commit':
      case 'prepare_transaction': {
        // A COMMIT of a failed transaction rolls it back (and says ROLLBACK).
        const sets = block?.filter((x): x is BlockSet => !('savepoint' in x)) ?? [];
        if (ok && !this.blockFailed) for (const x of sets) this.apply(x.sql, x.cls);
        // (COMMIT AND CHAIN: the next transaction starts with nothing of its own.)
        this.block = undefined;
        this.blockFailed = false;
        // They ran on the links held then, perhaps not on every one (a read node's taken
        // after them); and when a statement failed on the primary only, the load-balance
        // node's COMMIT did commit them there.
        if (sets.length > 0) this.onResync?.();
        break;
      }
      case 'rollback':
        this.block = undefined;
        this.blockFailed = false;
        break;
      case 'begin':
        // A fresh block (a BEGIN inside one is a no-op).
        if (ok && status === TxStatus.InTransaction && block === undefined) this.blockFailed = false;
        break;
      default:
        if (status === TxStatus.Idle) {
          this.block = undefined;
          this.blockFailed = false;
        }
    }
  }

  /**
   * A SET, RESET or DISCARD ALL that lasts. The list keeps what replaying needs, not the
   * history: a statement changing a setting by name replaces the earlier ones of that
   * setting, a RESET of it or RESET ALL / DISCARD ALL only removes them (replaying starts
   * from the start-up settings, which is what a RESET gives back), so that a client that
   * SETs the same settings at every request does not grow it.
   */
  private apply(sql: string, cls: MultiSetting | Classification): void {
    if (cls.kind !== 'set' && cls.kind !== 'reset' && cls.kind !== 'discard') return;
    // (SET LOCAL, set_config(…, true) outside a transaction block: nothing lasts.)
    if (cls.settingScope === 'local') return;
    if (cls.resetsAll === true) {
      // RESET ALL keeps the role and the session authorization (DISCARD ALL does not).
      for (let i = this.list.length - 1; i >= 0; i--) {
        if (cls.kind !== 'discard' && KEPT_BY_RESET_ALL.has(this.names[i] ?? '')) continue;
        this.list.splice(i, 1);
        this.names.splice(i, 1);
      }
      this.overflow = false;
      return;
    }
    if (cls.kind === 'discard') return;
    const name = cls.resetsSetting ?? cls.settingName;
    if (name !== undefined) this.forget(name);
    // SET (and RESET) SESSION AUTHORIZATION also take the role back to none.
    if (name === 'session_authorization') this.forget('role');
    if (cls.resetsSetting !== undefined) return;
    // A statement with bind parameters (SELECT set_config($1, $2, false)) cannot be replayed as text.
    if (this.list.length >= MAX_REPLAY || /\$\d/.test(sql)) {
      if (!this.overflow) this.onOverflow?.();
      this.overflow = true;
      return;
    }
    this.list.push(sql);
    this.names.push(name);
  }

  /** Drop the statements of the list that changed `name`. */
  private forget(name: string): void {
    for (let i = this.list.length - 1; i >= 0; i--) {
      if (this.names[i] !== name) continue;
      this.list.splice(i, 1);
      this.names.splice(i, 1);
    }
  }
}

/** A SET or RESET of the open transaction block. */
interface BlockSet {
  readonly sql: string;
  readonly cls: Classification;
}

function savepointOf(x: BlockSet | { savepoint: string }): string | undefined {
  return 'savepoint' in x ? x.savepoint : undefined;
}
