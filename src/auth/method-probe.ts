/**
 * pool_hba off: which authentication method the primary asks for, learned by a
 * probe login (src/pool/connector.ts probeAuthMethod) that stops at the first
 * Authentication request. Every unauthenticated client needs the answer before
 * pgrelay can ask it for anything, so this is bounded:
 *
 *  - One probe per user: clients waiting for the same user share the probe in
 *    flight and its cached answer, whatever database they name.
 *  - At most MAX_CONCURRENT_PROBES probes are open at the primary at once; the
 *    rest wait in order. A probe nobody waits for any more (its clients left or
 *    timed out) is dropped before it starts.
 *  - Answers are cached for ANSWER_TTL_MS, at most MAX_CACHED answers.
 *
 * What is safe to share: PostgreSQL's pg_hba.conf matches on the database as well
 * as the user (and on pgrelay's own address and TLS, the same for every probe).
 * A password method (password, md5, scram-sha-256) found for one database is used
 * for all the user's databases: whichever is asked, the client proves the same
 * pool_passwd password to pgrelay, and PostgreSQL still applies its own rules to
 * every connection pgrelay opens. "trust" is not shared: a client would skip
 * authentication for a database whose rule wants a password, and could be given
 * a cached connection another client authenticated. Nor is a refusal by
 * pg_hba.conf (SQLSTATE class 28). Those apply to the (user, database) probed;
 * a client naming another database gets a probe of its own (per (user, database),
 * shared and cached the same way). Failures to reach the primary at all apply to
 * every waiter. (So if pg_hba.conf gives one user different password methods per
 * database, that user's clients are asked for the method of whichever database
 * was probed: use enable_pool_hba = on to choose methods per database.)
 *
 * "Database" here is what pg_hba.conf matches: the database name, except for a
 * physical replication start-up (replication=true), which only the `replication`
 * keyword matches, whatever database it names; a logical one (replication=database)
 * matches by name like any connection.
 */
import type { PgError } from '../protocol/messages.js';
import type { BackendAuthMethod } from './backend.js';

/** How many probe logins may be open at the primary at once. */
export const MAX_CONCURRENT_PROBES = 4;
/** How long an answer is trusted. */
export const ANSWER_TTL_MS = 30_000;
/** Cached answers at most (oldest dropped first): clients choose user and database names. */
const MAX_CACHED = 10_000;

/** Rejects with the probe's PgError (the server's refusal, or why it could not be reached). */
export type ProbeFn = (params: Map<string, string>) => Promise<BackendAuthMethod>;

/**
 * A waiting client's departure (its socket closing): cheaper than an AbortSignal,
 * which costs an object and, when aborted, an exception with a stack per client.
 */
export interface Departure {
  gone(): boolean;
  /** Call `leave` once if the client goes away; returns a function that stops watching. */
  onLeave(leave: () => void): () => void;
}

/** A waiting client gave up (closed, timed out) before its answer came. */
export class ProbeAbandoned extends Error {
  constructor() {
    super('client left while its authentication method was being learned');
  }
}

type Outcome = { method: BackendAuthMethod } | { error: unknown };

interface Flight {
  key: string;
  /** What pg_hba.conf matches the probe's database against (hbaDatabase). */
  target: string;
  params: Map<string, string>;
  /** Clients waiting for it. */
  waiters: number;
  started: boolean;
  done: Promise<Outcome>;
  settle(o: Outcome): void;
}

interface Answer {
  method: BackendAuthMethod;
  at: number;
}

const PASSWORD_METHODS: ReadonlySet<BackendAuthMethod> = new Set(['password', 'md5', 'scram-sha-256']);

/** Not a database name (they cannot contain NUL): physical replication start-ups. */
const PHYSICAL_REPLICATION = '\u0000replication';

/**
 * The database pg_hba.conf matches a start-up against: its name, or, for physical
 * replication (PostgreSQL parses `replication` as a boolean, `database` meaning
 * logical), the `replication` keyword only.
 */
export function hbaDatabase(params: ReadonlyMap<string, string>): string {
  const user = params.get('user') ?? '';
  const replication = params.get('replication')?.toLowerCase();
  const physical =
    replication !== undefined && replication !== 'database' && !['false', 'off', 'no', '0'].includes(replication);
  return physical ? PHYSICAL_REPLICATION : (params.get('database') ?? user);
}

/** A refusal that depends on the database named (pg_hba.conf: no entry, reject), not on the primary's state. */
function databaseSpecific(e: unknown): boolean {
  const code = (e as Partial<PgError> | undefined)?.code;
  return typeof code === 'string' && code.startsWith('28');
}

export interface MethodProbesOptions {
  probe: ProbeFn;
  maxConcurrent?: number;
  ttlMs?: number;
  now?: () => number;
}

export class MethodProbes {
  /** Per user: a password method, shared by every database. */
  private readonly byUser = new Map<string, Answer>();
  /** Per (user, database): any answer, for that database only. */
  private readonly byDatabase = new Map<string, Answer>();
  private readonly flights = new Map<string, Flight>();
  private readonly queue: Flight[] = [];
  private running = 0;
  private readonly maxConcurrent: number;
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(private readonly opts: MethodProbesOptions) {
    this.maxConcurrent = opts.maxConcurrent ?? MAX_CONCURRENT_PROBES;
    this.ttlMs = opts.ttlMs ?? ANSWER_TTL_MS;
    this.now = opts.now ?? Date.now;
  }

  /** Probes open at the primary now. */
  get inFlight(): number {
    return this.running;
  }

  /** Forget every answer (reload: pg_hba.conf may have changed too). */
  clear(): void {
    this.byUser.clear();
    this.byDatabase.clear();
  }

  /**
   * The method for this start-up (user and database set). Rejects with the probe's
   * error, or ProbeAbandoned when the client leaves first.
   */
  async method(params: Map<string, string>, client?: Departure): Promise<BackendAuthMethod> {
    const user = params.get('user') ?? '';
    const database = hbaDatabase(params);
    const pairKey = `${user}\u0000${database}`;
    const known = this.fresh(this.byDatabase, pairKey) ?? this.fresh(this.byUser, user);
    if (known) return known;
    const shared = this.flights.get(user) ?? this.start(user, params);
    const first = await this.wait(shared, client);
    if ('method' in first) {
      if (PASSWORD_METHODS.has(first.method) || shared.target === database) return first.method;
    } else if (!databaseSpecific(first.error) || shared.target === database) {
      throw first.error;
    }
    // The user's probe named another database and its answer does not carry over: probe this one.
    const own = this.flights.get(pairKey) ?? this.start(pairKey, params);
    const out = await this.wait(own, client);
    if ('method' in out) return out.method;
    throw out.error;
  }

  private fresh(cache: Map<string, Answer>, key: string): BackendAuthMethod | undefined {
    const a = cache.get(key);
    if (!a) return undefined;
    if (this.now() - a.at < this.ttlMs) return a.method;
    cache.delete(key);
    return undefined;
  }

  private remember(cache: Map<string, Answer>, key: string, method: BackendAuthMethod): void {
    cache.delete(key);
    if (cache.size >= MAX_CACHED) cache.delete(cache.keys().next().value as string);
    cache.set(key, { method, at: this.now() });
  }

  private start(key: string, params: Map<string, string>): Flight {
    let settle: (o: Outcome) => void = () => undefined;
    const done = new Promise<Outcome>((resolve) => {
      settle = resolve;
    });
    const f: Flight = {
      key,
      target: hbaDatabase(params),
      params,
      waiters: 0,
      started: false,
      done,
      settle,
    };
    this.flights.set(key, f);
    this.queue.push(f);
    // Started on the next turn: the caller registers as a waiter first.
    queueMicrotask(() => this.pump());
    return f;
  }

  private pump(): void {
    while (this.running < this.maxConcurrent && this.queue.length > 0) {
      const f = this.queue.shift() as Flight;
      if (f.waiters === 0) {
        this.finish(f, { error: new ProbeAbandoned() });
        continue;
      }
      f.started = true;
      this.running++;
      this.opts.probe(f.params).then(
        (method) => this.landed(f, { method }),
        (error: unknown) => this.landed(f, { error }),
      );
    }
  }

  private landed(f: Flight, out: Outcome): void {
    this.running--;
    if ('method' in out) {
      const user = f.params.get('user') ?? '';
      this.remember(this.byDatabase, `${user}\u0000${f.target}`, out.method);
      if (PASSWORD_METHODS.has(out.method)) this.remember(this.byUser, user, out.method);
    }
    this.finish(f, out);
    this.pump();
  }

  private finish(f: Flight, out: Outcome): void {
    if (this.flights.get(f.key) === f) this.flights.delete(f.key);
    f.settle(out);
  }

  private wait(f: Flight, client: Departure | undefined): Promise<Outcome> {
    if (client?.gone()) return Promise.reject(new ProbeAbandoned());
    f.waiters++;
    if (!client) return f.done;
    return new Promise<Outcome>((resolve, reject) => {
      let waiting = true;
      const onLeave = (): void => {
        if (!waiting) return;
        waiting = false;
        f.waiters--;
        // Not started and nobody left waiting: it never reaches the primary.
        if (!f.started && f.waiters === 0) {
          const i = this.queue.indexOf(f);
          if (i >= 0) this.queue.splice(i, 1);
          this.finish(f, { error: new ProbeAbandoned() });
        }
        reject(new ProbeAbandoned());
      };
      const stop = client.onLeave(onLeave);
      f.done.then((o) => {
        stop();
        if (!waiting) return;
        waiting = false;
        resolve(o);
      });
    });
  }
}
