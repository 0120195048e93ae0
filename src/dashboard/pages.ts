/**
 * The dashboard's HTML, rendered on the server from the JSON API's data, so
 * the tables are complete without JavaScript (dashboard.js then keeps them
 * current and draws the charts). Semantic tables (caption, th scope), labelled
 * form fields, status written in words (colour only repeats it).
 */
import { formatTimestamp } from '../admin/result.js';
import type { ShowRow } from '../admin/show-config.js';
import type { EventJson, NodeJson, NodesJson, SessionsJson } from './api.js';

export function esc(s: string | number): string {
  return String(s).replace(/[&<>"']/g, (c) =>
    c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : c === '"' ? '&quot;' : '&#39;',
  );
}

/** A <time> element: ISO 8601 in datetime, local time as pgpool prints it ('2026-01-02 03:04:05') in the text. */
export function timeTag(iso: string | null, id?: string): string {
  const ms = iso ? Date.parse(iso) : Number.NaN;
  const text = Number.isNaN(ms) ? '' : formatTimestamp(ms);
  return `<time${id ? ` id="${id}"` : ''} datetime="${esc(iso ?? '')}">${esc(text)}</time>`;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = -1;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

export function formatSeconds(s: number): string {
  return s < 10 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`;
}

/** What the page needs to know about the viewer. */
export interface Viewer {
  /** Logged-in user, undefined when anonymous. */
  user?: string;
  /** May run node operations (logged in and listed in admin_users). */
  admin: boolean;
  /** Dashboard has actions at all (admin_users set). */
  actionsEnabled: boolean;
  csrf?: string;
  /** One-shot message (result of the last action). */
  flash?: { ok: boolean; text: string };
}

const NAV: ReadonlyArray<[string, string]> = [
  ['/', 'Overview'],
  ['/sessions', 'Sessions'],
  ['/events', 'Events'],
  ['/config', 'Configuration'],
];

function layout(title: string, path: string, viewer: Viewer, body: string, version: string): string {
  const nav = NAV.map(
    ([href, label]) => `<li><a href="${href}"${href === path ? ' aria-current="page"' : ''}>${label}</a></li>`,
  ).join('');
  let who = '';
  if (viewer.user) {
    who = `<form method="post" action="/logout" class="who"><span>Signed in as <strong>${esc(viewer.user)}</strong>${viewer.admin ? ' (admin)' : ' (read-only)'}</span> <input type="hidden" name="csrf" value="${esc(viewer.csrf ?? '')}"><button type="submit">Sign out</button></form>`;
  } else if (viewer.actionsEnabled) {
    who = '<p class="who"><a href="/login">Sign in</a> to run node operations</p>';
  } else {
    who = '<p class="who">Read-only (no <code>admin_users</code> configured)</p>';
  }
  const flash = viewer.flash
    ? `<p role="status" class="flash ${viewer.flash.ok ? 'ok' : 'err'}">${viewer.flash.ok ? 'Done: ' : 'Failed: '}${esc(viewer.flash.text)}</p>`
    : '';
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)} · pgrelay</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/uPlot.min.css">
<link rel="stylesheet" href="/assets/dashboard.css">
<script src="/assets/uPlot.iife.min.js" defer></script>
<script src="/assets/dashboard.js" defer></script>
</head>
<body data-page="${esc(path)}">
<header>
<p class="brand">pgrelay <span class="version">${esc(version)}</span></p>
<nav aria-label="Dashboard pages"><ul>${nav}</ul></nav>
${who}
</header>
<main>
<h1>${esc(title)}</h1>
${flash}
${body}
</main>
</body>
</html>
`;
}

function statusCell(n: NodeJson): string {
  return `<td data-node="${n.id}" data-field="status" class="status-${esc(n.status)}">${esc(n.status)}</td>`;
}

function lagText(n: NodeJson): string {
  if (n.role === 'primary') return '0';
  return `${formatBytes(n.delayBytes)} (${formatSeconds(n.delaySeconds)})`;
}

function actionButtons(n: NodeJson, viewer: Viewer): string {
  if (!viewer.admin) return '';
  const ops: string[] = [];
  if (n.status === 'down') ops.push('attach');
  else if (n.status !== 'unused') {
    ops.push('detach');
    if (n.role !== 'primary') ops.push('promote');
  }
  const label = (op: string): string => (op === 'attach' ? 'Attach' : op === 'detach' ? 'Detach' : 'Promote');
  return `<td>${ops
    .map(
      (op) =>
        `<a class="button" href="/confirm?action=${op}&amp;node=${n.id}" aria-label="${label(op)} node ${n.id}">${label(op)}</a>`,
    )
    .join(' ')}</td>`;
}

export function nodesTable(data: NodesJson, viewer: Viewer): string {
  const head = [
    'Node',
    'Host',
    'Status',
    'Role',
    'PostgreSQL says',
    'Weight',
    'Replication lag',
    'Replication state',
    'SELECTs',
    'Load-balance share',
    'Last status change',
  ];
  if (viewer.admin) head.push('Actions');
  const rows = data.nodes
    .map(
      (n) => `<tr data-node-row="${n.id}">
<th scope="row">${n.id}</th>
<td>${esc(n.hostname)}:${n.port}</td>
${statusCell(n)}
<td data-node="${n.id}" data-field="role" class="role-${esc(n.role)}">${esc(n.role)}</td>
<td data-node="${n.id}" data-field="pg">${esc(n.pgStatus)} / ${esc(n.pgRole)}</td>
<td data-node="${n.id}" data-field="weight">${(n.weight * 100).toFixed(0)}%</td>
<td data-node="${n.id}" data-field="lag" data-bytes="${n.delayBytes}" data-seconds="${n.delaySeconds}">${lagText(n)}</td>
<td data-node="${n.id}" data-field="replication">${esc([n.replicationState, n.replicationSyncState].filter((x) => x).join(', ') || '—')}</td>
<td data-node="${n.id}" data-field="selects">${n.selectCount}</td>
<td data-node="${n.id}" data-field="share">${(n.loadBalanceShare * 100).toFixed(1)}%</td>
<td data-node="${n.id}" data-field="changed">${timeTag(n.lastStatusChange)}</td>
${actionButtons(n, viewer)}
</tr>`,
    )
    .join('\n');
  return `<table id="nodes">
<caption>Backend nodes (primary: ${data.primary >= 0 ? `node ${data.primary}` : 'none'})</caption>
<thead><tr>${head.map((h) => `<th scope="col">${h}</th>`).join('')}</tr></thead>
<tbody>
${rows}
</tbody>
</table>`;
}

function eventsTable(events: readonly EventJson[], caption: string): string {
  const rows = events
    .map(
      (e) => `<tr><td>${timeTag(e.time)}</td><td>${esc(e.kind)}</td><td>${e.node}</td><td>${esc(e.reason)}</td></tr>`,
    )
    .join('\n');
  return `<table id="events">
<caption>${esc(caption)}</caption>
<thead><tr><th scope="col">Time</th><th scope="col">Event</th><th scope="col">Node</th><th scope="col">Reason</th></tr></thead>
<tbody>
${rows || '<tr><td colspan="4">No node event recorded yet.</td></tr>'}
</tbody>
</table>`;
}

export function overviewPage(nodes: NodesJson, events: readonly EventJson[], viewer: Viewer, version: string): string {
  const charts = nodes.nodes
    .map(
      (n) => `<figure class="chart" data-chart-node="${n.id}">
<figcaption>Node ${n.id} (${esc(n.role)}): statements per second and replication lag, last 5 minutes</figcaption>
<div class="plot" aria-hidden="true"></div>
</figure>`,
    )
    .join('\n');
  const body = `<section aria-labelledby="nodes-h">
<h2 id="nodes-h">Nodes</h2>
${nodesTable(nodes, viewer)}
<p class="updated">As of ${timeTag(nodes.time, 'updated')}. Lag is what the streaming replication check last measured.</p>
</section>
<section aria-labelledby="charts-h">
<h2 id="charts-h">Activity</h2>
<div class="charts">
${charts}
</div>
<noscript><p>The charts need JavaScript; the tables above are complete without it (reload the page to refresh them).</p></noscript>
</section>
<section aria-labelledby="events-h">
<h2 id="events-h">Recent node events</h2>
${eventsTable(events.slice(0, 10), 'The last node events (newest first)')}
<p><a href="/events">All recent events</a></p>
</section>`;
  return layout('Cluster overview', '/', viewer, body, version);
}

export function sessionsPage(s: SessionsJson, viewer: Viewer, version: string): string {
  const sessions = s.sessions
    .map(
      (x) =>
        `<tr><th scope="row">${x.pid}</th><td>${esc(x.user)}</td><td>${esc(x.database)}</td><td>${esc(x.status)}</td><td>${x.idleSeconds}</td><td>${timeTag(x.startedAt)}</td><td>${esc(x.backends.map((b) => `node ${b.nodeId} (pid ${b.pid})`).join(', ') || '—')}</td></tr>`,
    )
    .join('\n');
  const perNode = s.backendConnections
    .map((b) => `<tr><th scope="row">${b.node}</th><td>${b.inUse}</td><td>${b.idle}</td></tr>`)
    .join('\n');
  const cached = s.cachedConnections
    .map(
      (c) =>
        `<tr><td>${c.nodeId}</td><td>${c.pid}</td><td>${esc(c.user)}</td><td>${esc(c.database)}</td><td>${c.useCount}</td><td>${timeTag(c.releasedAt)}</td></tr>`,
    )
    .join('\n');
  const body = `<section aria-labelledby="waiting-h">
<h2 id="waiting-h">Waiting clients</h2>
<p id="waiting"><strong data-field="waiting-count">${s.waiting.count}</strong> client(s) waiting for a session slot; the longest for <span data-field="waiting-time">${formatSeconds(s.waiting.longestWaitSeconds)}</span>.</p>
</section>
<section aria-labelledby="sessions-h">
<h2 id="sessions-h">Client sessions</h2>
<table id="sessions">
<caption>${s.sessions.length} client session(s) (as SHOW pool_processes)</caption>
<thead><tr><th scope="col">Session pid</th><th scope="col">User</th><th scope="col">Database</th><th scope="col">Status</th><th scope="col">Idle (s)</th><th scope="col">Started</th><th scope="col">Backend connections</th></tr></thead>
<tbody>
${sessions || '<tr><td colspan="7">No client session.</td></tr>'}
</tbody>
</table>
</section>
<section aria-labelledby="backends-h">
<h2 id="backends-h">Backend connections</h2>
<table id="backend-connections">
<caption>Backend connections per node</caption>
<thead><tr><th scope="col">Node</th><th scope="col">In use by a session</th><th scope="col">Idle in the connection cache</th></tr></thead>
<tbody>
${perNode}
</tbody>
</table>
<table id="cached">
<caption>Cached connections (as the 'Wait for connection' rows of SHOW pool_pools)</caption>
<thead><tr><th scope="col">Node</th><th scope="col">Backend pid</th><th scope="col">User</th><th scope="col">Database</th><th scope="col">Times used</th><th scope="col">Back in the cache since</th></tr></thead>
<tbody>
${cached || '<tr><td colspan="6">No cached connection.</td></tr>'}
</tbody>
</table>
</section>`;
  return layout('Sessions and connections', '/sessions', viewer, body, version);
}

export function eventsPage(events: readonly EventJson[], viewer: Viewer, version: string): string {
  return layout(
    'Node events',
    '/events',
    viewer,
    `${eventsTable(events, 'Node events since pgrelay started (newest first; the last 200 are kept)')}`,
    version,
  );
}

export function configPage(rows: readonly ShowRow[], viewer: Viewer, version: string): string {
  const body = `<p>As <code>PGPOOL SHOW ALL</code> shows it; passwords are masked.</p>
<table id="config">
<caption>Configuration in effect (${rows.length} parameters)</caption>
<thead><tr><th scope="col">Parameter</th><th scope="col">Value</th><th scope="col">Description</th></tr></thead>
<tbody>
${rows.map((r) => `<tr><th scope="row">${esc(r.item)}</th><td>${esc(r.value)}</td><td>${esc(r.description)}</td></tr>`).join('\n')}
</tbody>
</table>`;
  return layout('Configuration', '/config', viewer, body, version);
}

export function loginPage(viewer: Viewer, version: string, error?: string): string {
  const body = `${error ? `<p role="alert" class="flash err">${esc(error)}</p>` : ''}
<form method="post" action="/login" class="login">
<p><label for="user">User name</label> <input id="user" name="user" autocomplete="username" required></p>
<p><label for="password">Password</label> <input id="password" name="password" type="password" autocomplete="current-password" required></p>
<p><button type="submit">Sign in</button></p>
</form>
<p>Users listed in <code>admin_users</code> may run node operations; the password is checked against pool_passwd (or by PostgreSQL for a user without an entry).</p>`;
  return layout('Sign in', '/login', viewer, body, version);
}

export type NodeAction = 'attach' | 'detach' | 'promote';

const ACTION_TEXT: Readonly<Record<NodeAction, (node: number) => string>> = {
  attach: (n) =>
    `Attach node ${n}: pgrelay uses it again (status waiting, then up) and runs failback_command (PGPOOL ATTACH NODE ${n}).`,
  detach: (n) =>
    `Detach node ${n} gracefully: pgrelay waits until no session uses it (up to recovery_timeout), marks it down and runs failover_command; if it is the primary, a failover follows (PGPOOL DETACH NODE ${n} GRACEFULLY).`,
  promote: (n) =>
    `Make node ${n} the primary. Without switchover only pgrelay's view changes (PostgreSQL is not promoted); with switchover the current primary is detached and failover_command promotes node ${n} (PGPOOL PROMOTE NODE ${n} [SWITCHOVER]).`,
};

export function confirmPage(action: NodeAction, node: number, viewer: Viewer, version: string): string {
  const switchover =
    action === 'promote'
      ? '<p><input type="checkbox" id="switchover" name="switchover" value="on"> <label for="switchover">Switchover: detach the current primary and let failover_command promote this node</label></p>'
      : '';
  const verb = action === 'attach' ? 'Attach' : action === 'detach' ? 'Detach' : 'Promote';
  const body = `<p>${esc(ACTION_TEXT[action](node))}</p>
<form method="post" action="/actions" class="confirm">
<input type="hidden" name="csrf" value="${esc(viewer.csrf ?? '')}">
<input type="hidden" name="action" value="${action}">
<input type="hidden" name="node" value="${node}">
${switchover}
<p><button type="submit" id="confirm">${verb} node ${node}</button> <a href="/">Cancel</a></p>
</form>`;
  return layout(`${verb} node ${node}?`, '/confirm', viewer, body, version);
}

export function messagePage(title: string, text: string, viewer: Viewer, version: string): string {
  return layout(title, '', viewer, `<p>${esc(text)}</p><p><a href="/">Back to the overview</a></p>`, version);
}
