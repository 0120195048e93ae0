// pgrelay dashboard: keeps the server-rendered tables current from the JSON API
// (/api/nodes, /api/sessions, /api/events, /api/history) and draws the charts
// with uPlot. Without JavaScript the pages still show everything as of loading.
(() => {
  const page = document.body.dataset.page;

  function formatBytes(n) {
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

  function formatSeconds(s) {
    return s < 10 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`;
  }

  async function getJson(url) {
    const r = await fetch(url, { headers: { Accept: 'application/json' }, cache: 'no-store' });
    if (!r.ok) throw new Error(`${url}: ${r.status}`);
    return r.json();
  }

  /** Run `fn` now and every `ms`, one call at a time. */
  function every(ms, fn) {
    const tick = async () => {
      try {
        await fn();
      } catch (e) {
        console.warn('dashboard update failed', e);
      }
      setTimeout(tick, ms);
    };
    tick();
  }

  function cell(node, field) {
    return document.querySelector(`td[data-node="${node}"][data-field="${field}"]`);
  }

  function setText(el, text) {
    if (el && el.textContent !== text) el.textContent = text;
  }

  function el(tag, text, attrs) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }

  const pad = (n) => String(n).padStart(2, '0');

  /** Local time as pgpool prints it: 2026-01-02 03:04:05. */
  function localTime(iso) {
    const d = new Date(iso || '');
    if (Number.isNaN(d.getTime())) return '';
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function timeEl(iso) {
    return el('time', localTime(iso), { datetime: iso || '' });
  }

  // ---------------------------------------------------------------- overview

  function updateNodes(data) {
    for (const n of data.nodes) {
      const status = cell(n.id, 'status');
      if (status) {
        setText(status, n.status);
        status.className = `status-${n.status}`;
      }
      const role = cell(n.id, 'role');
      if (role) {
        setText(role, n.role);
        role.className = `role-${n.role}`;
      }
      setText(cell(n.id, 'pg'), `${n.pgStatus} / ${n.pgRole}`);
      setText(cell(n.id, 'weight'), `${(n.weight * 100).toFixed(0)}%`);
      const lag = cell(n.id, 'lag');
      if (lag) {
        lag.dataset.bytes = String(n.delayBytes);
        lag.dataset.seconds = String(n.delaySeconds);
        setText(lag, n.role === 'primary' ? '0' : `${formatBytes(n.delayBytes)} (${formatSeconds(n.delaySeconds)})`);
      }
      setText(
        cell(n.id, 'replication'),
        [n.replicationState, n.replicationSyncState].filter((x) => x).join(', ') || '—',
      );
      setText(cell(n.id, 'selects'), String(n.selectCount));
      setText(cell(n.id, 'share'), `${(n.loadBalanceShare * 100).toFixed(1)}%`);
      const changed = cell(n.id, 'changed');
      if (changed) {
        const t = changed.querySelector('time');
        if (t && t.getAttribute('datetime') !== (n.lastStatusChange || ''))
          changed.replaceChildren(timeEl(n.lastStatusChange));
      }
    }
    const caption = document.querySelector('#nodes caption');
    setText(caption, `Backend nodes (primary: ${data.primary >= 0 ? `node ${data.primary}` : 'none'})`);
    const updated = document.getElementById('updated');
    if (updated) {
      updated.setAttribute('datetime', data.time);
      setText(updated, localTime(data.time));
    }
  }

  const charts = new Map();

  function drawCharts(h) {
    if (typeof uPlot === 'undefined') return;
    for (const s of h.nodes) {
      const fig = document.querySelector(`figure[data-chart-node="${s.id}"] .plot`);
      if (!fig) continue;
      const data = [h.time, s.statementsPerSecond, s.lagBytes];
      let chart = charts.get(s.id);
      if (!chart) {
        const width = Math.max(260, Math.min(fig.clientWidth || 360, 520));
        chart = new uPlot(
          {
            width,
            height: 170,
            legend: { show: true },
            scales: { x: { time: true }, lag: {} },
            series: [
              {},
              { label: 'statements/s', stroke: '#1f5fbf', width: 1.5 },
              {
                label: 'lag',
                stroke: '#b3261e',
                width: 1.5,
                dash: [6, 3],
                scale: 'lag',
                value: (_u, v) => (v == null ? '' : formatBytes(v)),
              },
            ],
            axes: [
              {
                space: 70,
                values: (_u, vals) =>
                  vals.map((v) => {
                    const d = new Date(v * 1000);
                    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
                  }),
              },
              { label: 'stmts/s', size: 50 },
              { side: 1, scale: 'lag', label: 'lag', size: 60, values: (_u, vals) => vals.map((v) => formatBytes(v)) },
            ],
          },
          data,
          fig,
        );
        charts.set(s.id, chart);
      } else {
        chart.setData(data);
      }
    }
  }

  let lastEvent = 0;

  function addEvents(events, max) {
    const body = document.querySelector('#events tbody');
    if (!body || events.length === 0) return;
    const empty = body.querySelector('td[colspan]');
    if (empty) body.replaceChildren();
    // events come newest first
    for (const e of [...events].reverse()) {
      const tr = el('tr');
      const t = el('td');
      t.appendChild(timeEl(e.time));
      tr.append(t, el('td', e.kind), el('td', e.node), el('td', e.reason));
      body.prepend(tr);
    }
    while (max && body.rows.length > max) body.deleteRow(body.rows.length - 1);
  }

  async function pollEvents(max) {
    const r = await getJson(`/api/events?since=${lastEvent}`);
    if (r.events.length > 0) {
      if (lastEvent > 0) addEvents(r.events, max);
      lastEvent = Math.max(lastEvent, ...r.events.map((e) => e.seq));
    }
  }

  // ---------------------------------------------------------------- sessions

  function fillBody(selector, rows, emptyText, columns) {
    const body = document.querySelector(`${selector} tbody`);
    if (!body) return;
    if (rows.length === 0) {
      const tr = el('tr');
      tr.appendChild(el('td', emptyText, { colspan: String(columns) }));
      body.replaceChildren(tr);
      return;
    }
    body.replaceChildren(...rows);
  }

  function updateSessions(s) {
    setText(document.querySelector('[data-field="waiting-count"]'), String(s.waiting.count));
    setText(document.querySelector('[data-field="waiting-time"]'), formatSeconds(s.waiting.longestWaitSeconds));
    setText(
      document.querySelector('#sessions caption'),
      `${s.sessions.length} client session(s) (as SHOW pool_processes)`,
    );
    fillBody(
      '#sessions',
      s.sessions.map((x) => {
        const tr = el('tr');
        const started = el('td');
        started.appendChild(timeEl(x.startedAt));
        tr.append(
          el('th', x.pid, { scope: 'row' }),
          el('td', x.user),
          el('td', x.database),
          el('td', x.status),
          el('td', x.idleSeconds),
          started,
          el('td', x.backends.map((b) => `node ${b.nodeId} (pid ${b.pid})`).join(', ') || '—'),
        );
        return tr;
      }),
      'No client session.',
      7,
    );
    fillBody(
      '#backend-connections',
      s.backendConnections.map((b) => {
        const tr = el('tr');
        tr.append(el('th', b.node, { scope: 'row' }), el('td', b.inUse), el('td', b.idle));
        return tr;
      }),
      '',
      3,
    );
    fillBody(
      '#cached',
      s.cachedConnections.map((c) => {
        const tr = el('tr');
        const rel = el('td');
        rel.appendChild(timeEl(c.releasedAt));
        tr.append(
          el('td', c.nodeId),
          el('td', c.pid),
          el('td', c.user),
          el('td', c.database),
          el('td', c.useCount),
          rel,
        );
        return tr;
      }),
      'No cached connection.',
      6,
    );
  }

  if (page === '/') {
    every(1000, async () => updateNodes(await getJson('/api/nodes')));
    every(2000, async () => drawCharts(await getJson('/api/history')));
    every(2000, () => pollEvents(10));
  } else if (page === '/sessions') {
    every(2000, async () => updateSessions(await getJson('/api/sessions')));
  } else if (page === '/events') {
    every(2000, () => pollEvents(0));
  }
})();
