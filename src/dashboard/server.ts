/**
 * The dashboard's HTTP routes, served on metrics_port next to /metrics,
 * /healthz and /readyz (metrics/http.ts hands over every other path):
 *
 *   GET  /  /sessions  /events  /config     server-rendered pages
 *   GET  /login  POST /login  POST /logout   session cookie (auth.ts)
 *   GET  /confirm?action=…&node=N            confirmation of a node operation
 *   POST /actions (form)  POST /api/actions (JSON)   attach | detach | promote
 *   GET  /api/nodes /api/sessions /api/events[?since=SEQ] /api/config /api/history
 *   GET  /assets/…                           dashboard.js/css, uPlot (shipped in dist/)
 *
 * Node operations run through the admin engine (executeAdmin), so they are
 * exactly PGPOOL ATTACH / DETACH NODE n GRACEFULLY / PROMOTE NODE n [SWITCHOVER]
 * with the logged-in user as caller. They need: admin_users set, a session of
 * a user listed there, the session's CSRF token, and an Origin (when the
 * browser sends one) naming this host. Each is logged with the user.
 */
import fs from 'node:fs';
import type http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AdminCommand } from '../admin/commands.js';
import type { AdminContext, ProbeResult } from '../admin/context.js';
import { executeAdmin } from '../admin/engine.js';
import type { AdminService } from '../admin/service.js';
import type { NodeEventRing } from '../cluster/event-ring.js';
import type { Config } from '../config/types.js';
import type { Logger } from '../log.js';
import { configJson, eventsJson, nodesJson, sessionsJson, type WaitingClients } from './api.js';
import { clearedCookie, DashboardAuth, type DashboardSession, sessionCookie } from './auth.js';
import type { StatsHistory } from './history.js';
import {
  confirmPage,
  configPage,
  eventsPage,
  loginPage,
  messagePage,
  type NodeAction,
  overviewPage,
  sessionsPage,
  type Viewer,
} from './pages.js';

export interface DashboardDeps {
  admin: AdminService;
  config(): Config;
  events: NodeEventRing;
  history: StatsHistory;
  waiting(): WaitingClients;
  auth: DashboardAuth;
  version: string;
  log: Logger;
  /** Directory of the static assets (dist/dashboard/assets). */
  assetsDir: string;
  /** How long a POST waits for an operation before answering "still running" (default 5 s). */
  actionWaitMs?: number;
}

const MAX_BODY = 16 * 1024;
const PROBE_CACHE_MS = 5000;
const ASSET_TYPES: Readonly<Record<string, string>> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
};
const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'Content-Security-Policy':
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
  'X-Frame-Options': 'DENY',
  'X-Content-Type-Options': 'nosniff',
  // same-origin, not no-referrer: with no-referrer Chromium sends 'Origin: null' on the pages' own form posts
  'Referrer-Policy': 'same-origin',
};

const LOOPBACK: ReadonlySet<string> = new Set(['localhost', '127.0.0.1', '::1', '[::1]']);

const NODE_ACTIONS: readonly NodeAction[] = ['attach', 'detach', 'promote'];

function isNodeAction(s: string | undefined): s is NodeAction {
  return (NODE_ACTIONS as readonly string[]).includes(s ?? '');
}

/** Where the dashboard's files are in the installed package: next to the compiled server.ts. */
export function defaultAssetsDir(): string {
  return path.join(path.dirname(fileURLToPath(import.meta.url)), 'assets');
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export class Dashboard {
  private readonly assets = new Map<string, { body: Buffer; type: string }>();
  private readonly flashes = new Map<string, { ok: boolean; text: string }>();
  private probeCache = new Map<number, { at: number; result: Promise<ProbeResult> }>();

  constructor(private readonly deps: DashboardDeps) {
    this.loadAssets();
  }

  private loadAssets(): void {
    let names: string[] = [];
    try {
      names = fs.readdirSync(this.deps.assetsDir);
    } catch (e) {
      this.deps.log.error(
        { dir: this.deps.assetsDir, err: (e as Error).message },
        'dashboard assets not found: pages are served without scripts, styles and charts',
      );
      return;
    }
    for (const name of names) {
      const type = ASSET_TYPES[path.extname(name)];
      if (type) this.assets.set(name, { body: fs.readFileSync(path.join(this.deps.assetsDir, name)), type });
    }
  }

  /** The live state for the dashboard: what SHOW pool_nodes etc. read, with node probes cached for 5 s. */
  private context(user: string): AdminContext {
    const ctx = this.deps.admin.context({ user, adminParams: new Map(), lbNodeId: -1 });
    const probe = ctx.probe;
    if (probe) {
      ctx.probe = (id) => {
        const now = Date.now();
        const hit = this.probeCache.get(id);
        if (hit && now - hit.at < PROBE_CACHE_MS) return hit.result;
        const result = probe(id);
        this.probeCache.set(id, { at: now, result });
        return result;
      };
    }
    return ctx;
  }

  private viewer(s: DashboardSession | undefined): Viewer {
    const cfg = this.deps.config();
    const actionsEnabled = cfg.admin_users.length > 0;
    const flash = s ? this.flashes.get(s.token) : undefined;
    if (s) this.flashes.delete(s.token);
    return {
      user: s?.user,
      admin: s !== undefined && actionsEnabled && cfg.admin_users.includes(s.user),
      actionsEnabled,
      csrf: s?.csrf,
      flash,
    };
  }

  /** Serve a dashboard path; false when the path is not the dashboard's (the caller answers 404). */
  handle(req: http.IncomingMessage, res: http.ServerResponse, pathname: string, query: URLSearchParams): boolean {
    const method = req.method ?? 'GET';
    const route = `${method === 'HEAD' ? 'GET' : method} ${pathname}`;
    const known =
      /^(GET|HEAD) \/(|sessions|events|config|login|confirm|api\/(nodes|sessions|events|config|history)|assets\/[\w.-]+)$/.test(
        `${method} ${pathname}`,
      ) || /^POST \/(login|logout|actions|api\/actions)$/.test(`${method} ${pathname}`);
    if (!known) {
      if (this.isDashboardPath(pathname)) {
        req.resume();
        this.send(res, 405, 'method not allowed\n', 'text/plain; charset=utf-8', {
          Allow: /^\/(api\/actions|actions|logout)$/.test(pathname)
            ? 'POST'
            : pathname === '/login'
              ? 'GET, HEAD, POST'
              : 'GET, HEAD',
        });
        return true;
      }
      return false;
    }
    this.route(req, res, route, query).catch((e: unknown) => {
      const status = e instanceof HttpError ? e.status : 500;
      const msg = e instanceof Error ? e.message : String(e);
      if (status === 500) this.deps.log.error({ err: msg, path: pathname }, 'dashboard request failed');
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (pathname.startsWith('/api/')) this.json(res, status, { error: msg });
      else this.html(res, status, messagePage(`Error ${status}`, msg, this.viewer(undefined), this.deps.version));
    });
    return true;
  }

  private isDashboardPath(p: string): boolean {
    return /^\/(|sessions|events|config|login|logout|confirm|actions|api\/[\w]+|assets\/[\w.-]+)$/.test(p);
  }

  private async route(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    route: string,
    query: URLSearchParams,
  ): Promise<void> {
    const d = this.deps;
    if (!this.hostAllowed(req.headers.host)) {
      throw new HttpError(
        403,
        'the dashboard listens on localhost: use http://localhost or http://127.0.0.1 (another host name could be DNS rebinding)',
      );
    }
    const session = d.auth.session(req.headers.cookie);
    const user = session?.user ?? '';
    if (!route.startsWith('POST ')) req.resume();
    switch (route) {
      case 'GET /': {
        const ctx = this.context(user);
        const nodes = await nodesJson(ctx, ctx.config);
        return this.html(
          res,
          200,
          overviewPage(nodes, eventsJson(d.events.list()).events, this.viewer(session), d.version),
        );
      }
      case 'GET /sessions':
        return this.html(
          res,
          200,
          sessionsPage(sessionsJson(this.context(user), d.waiting()), this.viewer(session), d.version),
        );
      case 'GET /events':
        return this.html(res, 200, eventsPage(eventsJson(d.events.list()).events, this.viewer(session), d.version));
      case 'GET /config':
        return this.html(res, 200, configPage(configJson(d.config()).parameters, this.viewer(session), d.version));
      case 'GET /login':
        if (d.config().admin_users.length === 0)
          throw new HttpError(404, 'the dashboard is read-only: no admin_users are configured');
        return this.html(res, 200, loginPage(this.viewer(session), d.version));
      case 'GET /confirm': {
        const v = this.viewer(session);
        const action = query.get('action') ?? undefined;
        const node = Number(query.get('node'));
        if (!v.admin) throw new HttpError(403, this.notAdminReason(session));
        if (!isNodeAction(action) || !Number.isInteger(node) || node < 0)
          throw new HttpError(400, 'action must be attach, detach or promote, and node a node id');
        return this.html(res, 200, confirmPage(action, node, v, d.version));
      }
      case 'GET /api/nodes': {
        const ctx = this.context(user);
        return this.json(res, 200, await nodesJson(ctx, ctx.config));
      }
      case 'GET /api/sessions':
        return this.json(res, 200, sessionsJson(this.context(user), d.waiting()));
      case 'GET /api/events':
        return this.json(res, 200, eventsJson(d.events.list(Number(query.get('since')) || 0)));
      case 'GET /api/config':
        return this.json(res, 200, configJson(d.config()));
      case 'GET /api/history':
        return this.json(res, 200, d.history.snapshot());
      case 'POST /login':
        return this.login(req, res);
      case 'POST /logout': {
        const form = await this.readForm(req);
        if (session && this.csrfOk(req, session, form)) d.auth.logout(session);
        res.setHeader('Set-Cookie', clearedCookie());
        return this.redirect(res, '/');
      }
      case 'POST /actions':
      case 'POST /api/actions':
        return this.action(req, res, session, route === 'POST /api/actions');
      default: {
        const name = route.slice('GET /assets/'.length);
        const a = route.startsWith('GET /assets/') ? this.assets.get(name) : undefined;
        if (!a) throw new HttpError(404, 'not found');
        res.writeHead(200, {
          'Content-Type': a.type,
          'Content-Length': a.body.length,
          'Cache-Control': 'no-cache',
          ...SECURITY_HEADERS,
        });
        res.end(req.method === 'HEAD' ? undefined : a.body);
      }
    }
  }

  /**
   * Bound to a loopback address (the default), the dashboard answers only
   * requests addressed to a loopback name: a page of another site that a DNS
   * rebinding points at 127.0.0.1 cannot read it or act on it.
   */
  private hostAllowed(host: string | undefined): boolean {
    const listen = this.deps.config().metrics_listen_address.trim().toLowerCase();
    if (!LOOPBACK.has(listen)) return true;
    const name = (host ?? '').toLowerCase().replace(/:\d+$/, '');
    return LOOPBACK.has(name);
  }

  private notAdminReason(s: DashboardSession | undefined): string {
    if (this.deps.config().admin_users.length === 0)
      return 'the dashboard is read-only: node operations need admin_users to be set';
    if (!s) return 'sign in as a user listed in admin_users to run node operations';
    return `user "${s.user}" is not listed in admin_users`;
  }

  private async login(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const d = this.deps;
    this.checkOrigin(req);
    const form = await this.readForm(req);
    if (d.config().admin_users.length === 0)
      throw new HttpError(404, 'the dashboard is read-only: no admin_users are configured');
    const user = form.get('user') ?? '';
    const remote = req.socket.remoteAddress ?? '';
    const r = await d.auth.login(user, form.get('password') ?? '', remote);
    if (!r.ok) {
      d.log.warn({ user, remote, reason: r.reason }, 'dashboard: login failed');
      return this.html(res, r.status, loginPage(this.viewer(undefined), d.version, r.reason));
    }
    d.log.info({ user, remote, admin: d.config().admin_users.includes(user) }, 'dashboard: login');
    res.setHeader('Set-Cookie', sessionCookie(r.session, false));
    return this.redirect(res, '/');
  }

  private async action(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    session: DashboardSession | undefined,
    api: boolean,
  ): Promise<void> {
    const d = this.deps;
    this.checkOrigin(req);
    const form = await this.readForm(req);
    const v = this.viewer(session);
    const remote = req.socket.remoteAddress ?? '';
    const action = form.get('action') ?? undefined;
    const nodeText = form.get('node') ?? '';
    const refuse = (status: number, reason: string): Promise<void> => {
      d.log.warn({ user: session?.user ?? null, remote, action, node: nodeText, reason }, 'dashboard: action refused');
      throw new HttpError(status, reason);
    };
    if (!v.admin) return refuse(403, this.notAdminReason(session));
    if (!session || !this.csrfOk(req, session, form))
      return refuse(403, 'missing or wrong CSRF token: reload the page and try again');
    if (!isNodeAction(action) || !/^\d{1,9}$/.test(nodeText))
      return refuse(400, 'action must be attach, detach or promote, and node a node id');
    const node = Number(nodeText);
    const cmd: AdminCommand =
      action === 'attach'
        ? { kind: 'attach_node', node }
        : action === 'detach'
          ? { kind: 'detach_node', node, gracefully: true }
          : { kind: 'promote_node', node, switchover: form.get('switchover') === 'on', gracefully: false };
    d.log.info({ user: session.user, remote, action, node, command: cmd }, 'dashboard: node operation requested');
    const run = executeAdmin(cmd, this.context(session.user)).then((r) => {
      const ok = r.kind !== 'error';
      const text = r.kind === 'error' ? r.error.message : `${action} node ${node}`;
      if (ok) d.log.info({ user: session.user, action, node }, 'dashboard: node operation done');
      else d.log.warn({ user: session.user, action, node, err: text }, 'dashboard: node operation failed');
      return { ok, text };
    });
    const waitMs = d.actionWaitMs ?? 5000;
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      run,
      new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), waitMs);
      }),
    ]);
    clearTimeout(timer);
    const result = outcome ?? {
      ok: true,
      text: `${action} node ${node} is still running (a graceful detach waits for the node's sessions); see the events`,
    };
    if (api) return this.json(res, outcome ? (outcome.ok ? 200 : 409) : 202, result);
    if (this.flashes.size >= 1000) this.flashes.clear();
    this.flashes.set(session.token, result);
    return this.redirect(res, '/');
  }

  private csrfOk(req: http.IncomingMessage, s: DashboardSession, form: Map<string, string>): boolean {
    const header = req.headers['x-csrf-token'];
    const sent = form.get('csrf') ?? (typeof header === 'string' ? header : undefined);
    return DashboardAuth.csrfValid(s, sent);
  }

  /** A browser's Origin header, when present, must name the host the request was sent to. */
  private checkOrigin(req: http.IncomingMessage): void {
    const origin = req.headers.origin;
    if (origin === undefined) return;
    let host = '';
    try {
      host = new URL(origin).host;
    } catch {
      host = '';
    }
    if (host === '' || host !== req.headers.host) throw new HttpError(403, 'cross-origin request refused');
  }

  private readForm(req: http.IncomingMessage): Promise<Map<string, string>> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY) {
          reject(new HttpError(413, 'request body too large'));
          req.destroy();
          return;
        }
        chunks.push(c);
      });
      req.on('error', reject);
      req.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const type = String(req.headers['content-type'] ?? '');
        const out = new Map<string, string>();
        if (type.startsWith('application/json')) {
          try {
            const obj = JSON.parse(text || '{}') as unknown;
            if (obj && typeof obj === 'object')
              for (const [k, v] of Object.entries(obj))
                if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean')
                  out.set(k, typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v));
          } catch {
            reject(new HttpError(400, 'request body is not valid JSON'));
            return;
          }
        } else {
          for (const [k, v] of new URLSearchParams(text)) out.set(k, v);
        }
        resolve(out);
      });
    });
  }

  private send(
    res: http.ServerResponse,
    status: number,
    body: string,
    type: string,
    extra: Record<string, string> = {},
  ): void {
    res.writeHead(status, {
      'Content-Type': type,
      'Content-Length': Buffer.byteLength(body),
      'Cache-Control': 'no-store',
      ...SECURITY_HEADERS,
      ...extra,
    });
    res.end(res.req?.method === 'HEAD' ? undefined : body);
  }

  private html(res: http.ServerResponse, status: number, body: string): void {
    this.send(res, status, body, 'text/html; charset=utf-8');
  }

  private json(res: http.ServerResponse, status: number, body: unknown): void {
    this.send(res, status, `${JSON.stringify(body)}\n`, 'application/json; charset=utf-8');
  }

  private redirect(res: http.ServerResponse, to: string): void {
    this.send(res, 303, '', 'text/plain; charset=utf-8', { Location: to });
  }
}
