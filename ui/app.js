// The opm web UI: one ES module, no build step, nothing from another host.
// It talks to the daemon's own API (same origin) with the token kept in
// sessionStorage, sent as `Authorization: Bearer T`, never in a URL or a cookie.
// Nothing polls: each view follows the daemon's events stream (SSE) and
// refreshes what an event changes, and its figures at each history `tick`.

const TOKEN_KEY = 'opm.token';
const RETRY_MS = 2000;
const LOG_LINES = 200;
const MAX_LOG_LINES = 2000;

// ---------- small helpers ----------

const $ = (sel, root = document) => root.querySelector(sel);
const enc = encodeURIComponent;

/** Builds an element: h('td', {class: 'num'}, 'text', child...). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c !== undefined && c !== null && c !== false) el.append(c);
  }
  return el;
}

/** Sets text only when it changed, so nothing repaints for nothing. */
function setText(el, text) {
  const t = String(text);
  if (el.textContent !== t) el.textContent = t;
}

const ICONS = {
  start: 'M5 3.5v9l8-4.5z',
  stop: 'M4 4h8v8H4z',
  restart: 'M13 8a5 5 0 1 1-1.5-3.6M13 2.5v3h-3',
  remove: 'M3.5 4.5h9M6.5 4.5V3h3v1.5M5 4.5l.6 8.5h4.8l.6-8.5',
  plus: 'M8 3v10M3 8h10',
};

function icon(name) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('aria-hidden', 'true');
  svg.classList.add('icon', `i-${name}`);
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', ICONS[name]);
  svg.append(path);
  return svg;
}

function fmtBytes(n) {
  if (!n) return '0 B';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

function fmtDuration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const hrs = Math.floor(m / 60);
  if (hrs < 24) return `${hrs}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(hrs / 24)}d ${String(hrs % 24).padStart(2, '0')}h`;
}

function fmtAgo(atMs) {
  if (!atMs) return 'never';
  const d = Date.now() - atMs;
  return d < 1500 ? 'just now' : `${fmtDuration(Math.max(0, d))} ago`;
}

function fmtTime(ms) {
  return ms ? new Date(ms).toLocaleString() : '—';
}

const dash = (v) => (v === null || v === undefined || v === '' ? '—' : v);

// ---------- the API ----------

class AuthError extends Error {}
class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY) || ''; },
  set token(t) { t ? sessionStorage.setItem(TOKEN_KEY, t) : sessionStorage.removeItem(TOKEN_KEY); },
};

function headers(extra = {}) {
  const t = session.token;
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

async function api(path, { method = 'GET', body, signal, token } = {}) {
  const hdrs = body === undefined ? {} : { 'Content-Type': 'application/json' };
  const opts = { method, signal, cache: 'no-store', credentials: 'omit' };
  opts.headers = token === undefined ? headers(hdrs) : { ...hdrs, Authorization: `Bearer ${token}` };
  if (body !== undefined) opts.body = JSON.stringify(body);
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    if (e instanceof TypeError && /header/i.test(e.message)) {
      throw new AuthError('That token has characters a header cannot carry.');
    }
    throw new ApiError('The daemon does not answer.', 0);
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (res.status === 401) throw new AuthError((data && data.error) || 'unauthorized');
  if (!res.ok) throw new ApiError((data && data.error) || `${res.status} ${res.statusText}`, res.status);
  return data;
}

/** Where a list of processes lives: this daemon, or an agent through the server. */
function scopeOf(agent) {
  if (!agent) {
    return {
      agent: null,
      link: (id) => `#/p/${enc(id)}`,
      list: () => api('/daemon/list'),
      info: (id) => api(`/daemon/info/${enc(id)}`),
      action: (id, action) => api('/daemon/action', { method: 'POST', body: { id, action } }),
      create: (body) => api('/daemon/create', { method: 'POST', body }),
      stream: (id, n) => `/daemon/logs/${enc(id)}/stream?lines=${n}`,
      history: (id) => api(id === undefined ? '/daemon/history' : `/daemon/history/${enc(id)}`),
      events: (q = '') => api(`/daemon/events${q}`),
      live: (q = '') => `/daemon/events/stream${q}`,
    };
  }
  const base = `/daemon/agents/${enc(agent)}`;
  return {
    agent,
    link: (id) => `#/agents/${enc(agent)}/p/${enc(id)}`,
    list: () => api(`${base}/processes`),
    info: (id) => api(`${base}/info/${enc(id)}`),
    action: (id, action) => api(`${base}/action`, { method: 'POST', body: { id, action } }),
    create: (body) => api(`${base}/create`, { method: 'POST', body }),
    stream: (id, n) => `${base}/logs/${enc(id)}/stream?lines=${n}`,
    history: (id) => api(id === undefined ? `${base}/history` : `${base}/history/${enc(id)}`),
    events: (q = '') => api(`${base}/events${q}`),
    live: (q = '') => `${base}/events/stream${q}`,
  };
}

// ---------- charts: small SVG drawn here, no library ----------

const SVG_NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  el.append(...children);
  return el;
}

const fmtCpu = (v) => `${v.toFixed(1)}%`;

/** "Memory: last 40 MiB, min 12 MiB, max 40 MiB (12 samples)": what a chart shows, in words. */
function summarize(label, values, fmt) {
  if (!values.length) return `${label}: no samples yet`;
  const last = values[values.length - 1];
  return `${label}: last ${fmt(last)}, min ${fmt(Math.min(...values))}, max ${fmt(Math.max(...values))} (${values.length} ${values.length === 1 ? 'sample' : 'samples'})`;
}

/**
 * A line through (at, value) pairs in a w×h box: time runs over the last
 * `windowMs` up to the newest sample, so a young history fills from the right.
 */
function chartPaths(at, values, windowMs, w, h, top) {
  if (!values.length) return { line: '', area: '' };
  const end = at[at.length - 1];
  const x = (t) => Math.max(0, w - ((end - t) / windowMs) * w);
  const y = (v) => h - 1 - (Math.min(v, top) / top) * (h - 2);
  const pts = values.map((v, i) => `${x(at[i]).toFixed(1)},${y(v).toFixed(1)}`);
  if (pts.length === 1) pts.unshift(`${Math.max(0, x(at[0]) - 2).toFixed(1)},${y(values[0]).toFixed(1)}`);
  const line = `M${pts.join('L')}`;
  const first = pts[0].split(',')[0];
  return { line, area: `${line}L${w},${h}L${first},${h}Z` };
}

/** A ceiling above `v` that reads well: 1, 2 or 5 times a power of ten (or of 1024 for bytes). */
function niceTop(v, bytes) {
  const base = bytes ? 1024 : 10;
  let unit = 1;
  while (unit * base <= v) unit *= base;
  for (const m of bytes ? [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024] : [1, 2, 5, 10]) {
    if (unit * m >= v) return unit * m;
  }
  return unit * base;
}

/** A CPU or memory chart over time, with its scale and its summary for screen readers. */
function lineChart(kind, label) {
  const W = 600;
  const H = 120;
  const bytes = kind === 'memory';
  const fmt = bytes ? fmtBytes : fmtCpu;
  const title = svg('title');
  const area = svg('path', { class: 'area' });
  const line = svg('path', { class: 'line', 'vector-effect': 'non-scaling-stroke' });
  const grid = svg('g', { class: 'grid' }, ...[0.25, 0.5, 0.75].map((f) =>
    svg('line', { x1: 0, x2: W, y1: H * f, y2: H * f, 'vector-effect': 'non-scaling-stroke' })));
  const plot = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', class: 'plot' }, title, grid, area, line);
  const now = h('span', { class: 'chart-now num' }, '—');
  const top = h('span', { class: 'chart-top num' });
  const span = h('span', { class: 'chart-span muted' });
  const el = h('figure', { class: `chart chart-${kind}`, dataset: { chart: kind, points: '0' } },
    h('figcaption', {}, h('span', { class: 'chart-label' }, label), now),
    h('div', { class: 'chart-box' }, plot, top), span);
  return {
    el,
    update(series, windowMs) {
      const at = series ? series.at_ms : [];
      const values = series ? series[kind] : [];
      const peak = Math.max(0, ...values);
      const ceiling = niceTop(Math.max(peak, bytes ? 1024 * 1024 : 1), bytes);
      const d = chartPaths(at, values, windowMs, W, H, ceiling);
      line.setAttribute('d', d.line);
      area.setAttribute('d', d.area);
      const words = summarize(label, values, fmt);
      setText(title, words);
      plot.setAttribute('aria-label', words);
      setText(now, values.length ? fmt(values[values.length - 1]) : '—');
      setText(top, fmt(ceiling));
      setText(span, `last ${fmtDuration(windowMs)}`);
      el.dataset.points = String(values.length);
      el.dataset.last = values.length ? String(values[values.length - 1]) : '';
    },
  };
}

/** A small memory line for a row of the process list. */
function sparkline(label) {
  const W = 80;
  const H = 22;
  const title = svg('title');
  const area = svg('path', { class: 'area' });
  const line = svg('path', { class: 'line', 'vector-effect': 'non-scaling-stroke' });
  const el = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', class: 'spark' }, title, area, line);
  return {
    el,
    update(series, windowMs, name) {
      const at = series ? series.at_ms : [];
      const values = series ? series.memory : [];
      const d = chartPaths(at, values, windowMs, W, H, Math.max(1024 * 1024, ...values) * 1.1);
      line.setAttribute('d', d.line);
      area.setAttribute('d', d.area);
      const words = summarize(`${label} of ${name}`, values, fmtBytes);
      setText(title, words);
      el.setAttribute('aria-label', words);
      el.dataset.points = String(values.length);
    },
  };
}

/** The colour family of an event kind. */
function eventTone(kind) {
  if (/^(started|adopted|agent_joined|agent_registered|agent_online|recovered)$/.test(kind)) return 'ok';
  if (/^(exited|errored|spawn_failed|lost|agent_offline|agent_removed)$/.test(kind)) return 'bad';
  if (/^(restarted|memory_limit|watch)$/.test(kind)) return 'warn';
  return 'off';
}

function eventItem(e, withName) {
  const t = new Date(e.at_ms);
  return h('li', { dataset: { kind: e.kind } },
    h('time', { class: 'num', datetime: t.toISOString(), title: t.toLocaleString() }, t.toLocaleTimeString()),
    withName ? h('span', { class: 'subject' }, e.name) : null,
    h('span', { class: `ev tone-${eventTone(e.kind)}` }, e.kind), h('span', { class: 'detail' }, e.detail));
}

/**
 * The events timeline: a strip with a mark per event over the time they
 * span (each mark titled), and the list of them, newest first.
 */
function timeline({ withName = false, shown = 50 } = {}) {
  const W = 600;
  const H = 28;
  const title = svg('title');
  const marks = svg('g', { class: 'marks' });
  const strip = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', class: 'strip' },
    title, svg('line', { class: 'base', x1: 0, x2: W, y1: H / 2, y2: H / 2, 'vector-effect': 'non-scaling-stroke' }), marks);
  const from = h('time', { class: 'num muted' });
  const to = h('time', { class: 'num muted' }, 'now');
  const list = h('ol', { class: `events${withName ? ' named' : ''}` });
  const el = h('div', { class: 'timeline' }, h('div', { class: 'strip-box' }, strip, h('div', { class: 'strip-axis' }, from, to)), list);
  let events = [];
  function draw() {
    const now = Date.now();
    const start = events.length ? Math.min(events[0].at_ms, now - 60_000) : now - 60_000;
    const span = Math.max(1, now - start);
    // Troubles are painted last, so a stop at the same moment never hides an exit.
    const rank = { off: 0, ok: 1, warn: 2, bad: 3 };
    const painted = [...events].sort((x, y) => rank[eventTone(x.kind)] - rank[eventTone(y.kind)]);
    marks.replaceChildren(...painted.map((e) => {
      const x = ((e.at_ms - start) / span) * (W - 4) + 2;
      return svg('rect', { x: x - 1.5, y: 4, width: 3, height: H - 8, rx: 1, class: `tone-${eventTone(e.kind)}` },
        svg('title', {}, `${new Date(e.at_ms).toLocaleTimeString()} ${withName ? `${e.name} ` : ''}${e.kind}${e.detail ? `: ${e.detail}` : ''}`));
    }));
    const counts = {};
    for (const e of events) counts[e.kind] = (counts[e.kind] || 0) + 1;
    const words = events.length
      ? `Events since ${new Date(start).toLocaleTimeString()}: ${Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(', ')}`
      : 'No events yet';
    setText(title, words);
    strip.setAttribute('aria-label', words);
    setText(from, new Date(start).toLocaleTimeString());
    const newest = events.slice(-shown).reverse();
    list.replaceChildren(...(newest.length ? newest.map((e) => eventItem(e, withName)) : [h('li', { class: 'muted' }, 'Nothing yet.')]));
    el.dataset.count = String(events.length);
  }
  return {
    el,
    /** Replaces the events shown (oldest first). */
    set(list_) {
      const key = list_.map((e) => `${e.at_ms}${e.kind}${e.name}`).join();
      if (el.dataset.key === key) return;
      el.dataset.key = key;
      events = list_;
      draw();
    },
  };
}

// ---------- toasts ----------

function toast(message, kind = 'info') {
  const t = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : undefined }, message);
  $('#toasts').append(t);
  setTimeout(() => t.classList.add('going'), kind === 'error' ? 6000 : 3000);
  setTimeout(() => t.remove(), kind === 'error' ? 6400 : 3400);
}

// ---------- the app shell ----------

const app = {
  health: null,
  view: null,
};

function setHealth(hl) {
  app.health = hl;
  const box = $('#health');
  const chips = [
    h('span', { class: `chip role role-${hl.role}`, title: 'Role of this daemon' }, hl.role),
    h('span', { class: 'chip', title: `opm ${hl.version}, pid ${hl.pid}` }, `v${hl.version}`),
    h('span', { class: 'chip num', title: 'Daemon uptime' }, `up ${fmtDuration(hl.uptime_ms)}`),
    h('span', { class: 'chip num', title: 'Processes online / all' },
      hl.processes ? `${hl.online}/${hl.processes} online` : 'no processes'),
  ];
  if (hl.agents_online !== undefined && hl.agents_online !== null) {
    const total = hl.agents_online + (hl.agents_offline || 0);
    chips.push(h('span', { class: 'chip num', title: 'Agents online / all' }, `${hl.agents_online}/${total} agents online`));
  }
  if (hl.server) {
    chips.push(h('span', { class: `chip ${hl.connected ? 'ok' : 'bad'}`, title: `Server ${hl.server}` },
      hl.connected ? 'linked' : 'link down'));
  }
  const key = chips.map((c) => c.textContent).join('|');
  if (box.dataset.key !== key) {
    box.dataset.key = key;
    box.replaceChildren(...chips);
  }
  box.dataset.role = hl.role;
  const agentsLink = $('[data-nav="agents"]');
  agentsLink.hidden = hl.role !== 'server';
}

/** Refreshes the header; called on each event and tick of the view's stream. */
async function pollHealth() {
  // Only while signed in: the login screen shows nothing of the daemon.
  if ($('#top').hidden) return;
  try {
    setHealth(await api('/health'));
  } catch (e) {
    if (!(e instanceof AuthError)) $('#health').replaceChildren(h('span', { class: 'chip bad' }, 'daemon unreachable'));
  }
}

function markNav(name) {
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === name);
    if (a.dataset.nav === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

/** Mounts the view for the current hash, unmounting the previous one. */
function route() {
  if (app.view) app.view.unmount();
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  const main = $('#main');
  main.replaceChildren();
  let view;
  if (parts[0] === 'agents' && parts.length === 1) view = agentsView();
  else if (parts[0] === 'agents' && parts.length === 2) view = agentView(parts[1]);
  else if (parts[0] === 'agents' && parts[2] === 'p' && parts.length === 4) view = processView(scopeOf(parts[1]), parts[3]);
  else if (parts[0] === 'p' && parts.length === 2) view = processView(scopeOf(null), parts[1]);
  else if (parts[0] === 'events' && parts.length === 1) view = eventsView();
  else view = processesView();
  app.view = view;
  markNav(parts[0] === 'agents' || parts[0] === 'events' ? parts[0] : 'processes');
  view.mount(main);
  window.scrollTo(0, 0);
}

/** Any 401 while using the page: back to the login screen. */
function onAuthLost(message) {
  if (app.view) { app.view.unmount(); app.view = null; }
  showLogin(session.token ? 'The token is no longer accepted. Enter it again.' : message);
  session.token = '';
}

/**
 * A refresh run on demand (an event, a tick, an action), never two at once:
 * asked again while running, it runs once more after. It stops with the view.
 */
function poller(fn) {
  let running = false;
  let again = false;
  let stopped = false;
  const run = async () => {
    if (stopped) return;
    if (running) { again = true; return; }
    running = true;
    try {
      await fn();
    } catch (e) {
      if (e instanceof AuthError) { stopped = true; onAuthLost(e.message); return; }
    } finally {
      running = false;
    }
    if (again && !stopped) { again = false; run(); }
  };
  return {
    start() { run(); },
    now() { run(); },
    stop() { stopped = true; },
  };
}

/**
 * Follows an events stream (`/daemon/events/stream`, or an agent's through
 * the server): onEvent(event) for each new event, onTick() after each
 * history sample, onOpen() at each (re)connection. Reconnects after a drop.
 */
function follower(url, { onEvent = () => {}, onTick = () => {}, onOpen = () => {} }) {
  const abort = new AbortController();
  (async () => {
    let wait = RETRY_MS;
    while (!abort.signal.aborted) {
      try {
        await readSse(url, abort.signal, () => { wait = RETRY_MS; onOpen(); }, (event, data) => {
          if (event === 'event') {
            let e = null;
            try { e = JSON.parse(data); } catch { /* not JSON */ }
            if (e) onEvent(e);
          } else if (event === 'tick' || event === 'lagged') {
            onTick();
          }
        });
      } catch (e) {
        if (abort.signal.aborted || e.name === 'AbortError') return;
        if (e instanceof AuthError) { onAuthLost(e.message); return; }
      }
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 30000);
    }
  })();
  return { stop() { abort.abort(); } };
}

// ---------- login ----------

function showLogin(message) {
  $('#top').hidden = true;
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false',
    required: true, placeholder: 'daemon.web.secure.token', 'aria-describedby': 'login-error',
  });
  const err = h('p', { id: 'login-error', class: 'form-error', role: 'alert' }, message || '');
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', { class: 'login card', id: 'login', autocomplete: 'off' },
    h('div', { class: 'login-brand' }, h('span', { class: 'logo', 'aria-hidden': 'true' }), 'opm'),
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'This daemon requires its API token: ', h('code', {}, 'opm daemon token'),
      ' prints it on the daemon\'s machine. It is kept in this browser tab only.'),
    h('label', { for: 'token' }, 'Token'),
    input, err, button);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    button.disabled = true;
    err.textContent = '';
    try {
      await api('/daemon/list', { token });
      session.token = token;
      start();
    } catch (e) {
      err.textContent = e instanceof AuthError
        ? (e.message === 'wrong token' ? 'Wrong token: the daemon refused it.' : e.message)
        : e.message;
      input.select();
    } finally {
      button.disabled = false;
    }
  });
  $('#main').replaceChildren(h('div', { class: 'login-wrap' }, form));
  input.focus();
}

async function start() {
  try {
    await api('/daemon/list');
  } catch (e) {
    if (e instanceof AuthError) {
      const had = session.token;
      session.token = '';
      showLogin(had ? 'The saved token is no longer accepted.' : '');
      return;
    }
    // Unreachable daemon: show the shell anyway; the views say what fails.
  }
  $('#top').hidden = false;
  $('#logout').hidden = !session.token;
  pollHealth();
  route();
}

// ---------- process table (shared by this daemon and each agent) ----------

const STATUS_CLASS = { online: 'ok', stopped: 'off', errored: 'bad', starting: 'warn', stopping: 'warn', waiting: 'warn', exited: 'done' };

function badge(status, extra = '') {
  return h('span', { class: `badge ${STATUS_CLASS[status] || 'off'} ${extra}`, dataset: { status } }, status);
}

function setBadge(el, status) {
  if (el.dataset.status === status) return;
  el.dataset.status = status;
  el.className = `badge ${STATUS_CLASS[status] || 'off'}`;
  el.textContent = status;
}

function actionButton(action, label, onClick) {
  return h('button', {
    type: 'button', class: `act act-${action}`, dataset: { action }, title: label, 'aria-label': label, onclick: onClick,
  }, icon(action), h('span', { class: 'label' }, label));
}

/**
 * Runs an action on a process; `remove` asks for a second click first.
 * Returns true when the action was carried out.
 */
async function runAction(scope, p, action, button, after) {
  if (action === 'remove' && button && !button.classList.contains('confirm')) {
    button.classList.add('confirm');
    setText(button.querySelector('.label'), 'Sure?');
    setTimeout(() => {
      button.classList.remove('confirm');
      setText(button.querySelector('.label'), 'Remove');
    }, 5000);
    return false;
  }
  const row = button && button.closest('tr, .actions');
  if (row) row.dataset.busy = 'true';
  let ok = false;
  try {
    await scope.action(p.id, action);
    ok = true;
    toast(`${action === 'remove' ? 'Removed' : `${action[0].toUpperCase()}${action.slice(1)}`} ${p.name}`);
  } catch (e) {
    if (e instanceof AuthError) { onAuthLost(e.message); return false; }
    toast(`${action} ${p.name}: ${e.message}`, 'error');
  } finally {
    if (row) delete row.dataset.busy;
  }
  pollHealth();
  if (after) after(action, ok);
  return ok;
}

/** Start or stop, whichever the process needs, then restart and remove. */
function actionsFor(scope, p, refresh) {
  const wrap = h('div', { class: 'actions' });
  const run = (action) => (ev) => runAction(scope, wrap.proc, action, ev.currentTarget, refresh);
  wrap.proc = p;
  wrap.toggleStart = actionButton('start', 'Start', run('start'));
  wrap.toggleStop = actionButton('stop', 'Stop', run('stop'));
  wrap.append(wrap.toggleStart, wrap.toggleStop,
    actionButton('restart', 'Restart', run('restart')),
    actionButton('remove', 'Remove', run('remove')));
  updateActions(wrap, p);
  return wrap;
}

/** What a status badge's tooltip adds: the exit code, the next try. */
function statusDetail(p) {
  if (p.status === 'exited') return p.exit_code === undefined ? 'ended, not restarted' : `exit code ${p.exit_code}, not restarted`;
  if (p.status === 'waiting' && p.restart_at_ms) return `next try at ${fmtTime(p.restart_at_ms)}`;
  return '';
}

function updateActions(wrap, p) {
  wrap.proc = p;
  // An exited run is meant to run but nothing runs: Start runs it again.
  const running = p.desired === 'running' && p.status !== 'exited';
  wrap.toggleStart.hidden = running;
  wrap.toggleStop.hidden = !running;
}

function processTable(scope, refresh) {
  const cols = [
    ['c-status', 'Status'], ['c-id num', 'ID'], ['c-name', 'Name'], ['c-pid num', 'PID'],
    ['c-cpu num', 'CPU'], ['c-mem num', 'Memory'], ['c-trend', 'Trend'], ['c-restarts num', 'Restarts'],
    ['c-uptime num', 'Uptime'], ['c-actions', ''],
  ];
  const tbody = h('tbody');
  const table = h('table', { class: 'procs' },
    h('thead', {}, h('tr', {}, cols.map(([c, t]) => h('th', { class: c, scope: 'col' }, t)))),
    tbody);
  const rows = new Map();

  function makeRow(p) {
    const cells = {
      status: badge(p.status),
      id: h('td', { class: 'c-id num' }),
      name: h('a', { href: scope.link(p.id) }),
      cmd: h('div', { class: 'cmd' }),
      pid: h('td', { class: 'c-pid num', 'data-label': 'PID' }),
      cpu: h('td', { class: 'c-cpu num', 'data-label': 'CPU' }),
      mem: h('td', { class: 'c-mem num', 'data-label': 'Mem' }),
      spark: sparkline('Memory'),
      restarts: h('td', { class: 'c-restarts num', 'data-label': '↻' }),
      uptime: h('td', { class: 'c-uptime num', 'data-label': 'Up' }),
      actions: actionsFor(scope, p, refresh),
    };
    const tr = h('tr', { class: 'proc' },
      h('td', { class: 'c-status' }, cells.status), cells.id,
      h('td', { class: 'c-name' }, cells.name, cells.cmd),
      cells.pid, cells.cpu, cells.mem, h('td', { class: 'c-trend' }, cells.spark.el), cells.restarts, cells.uptime,
      h('td', { class: 'c-actions' }, cells.actions));
    tr.cells_ = cells;
    return tr;
  }

  function updateRow(tr, p) {
    const c = tr.cells_;
    tr.dataset.id = p.id;
    tr.dataset.name = p.name;
    tr.dataset.status = p.status;
    setBadge(c.status, p.status);
    setText(c.id, p.id);
    setText(c.name, p.name);
    c.name.setAttribute('href', scope.link(p.id));
    setText(c.cmd, p.command);
    c.cmd.title = p.cwd ? `${p.command}\nin ${p.cwd}` : p.command;
    setText(c.pid, dash(p.pid));
    setText(c.cpu, p.pid ? `${p.cpu.toFixed(1)}%` : '—');
    setText(c.mem, p.pid ? fmtBytes(p.memory) : '—');
    setText(c.restarts, p.restarts);
    setText(c.uptime, p.status === 'online' ? fmtDuration(p.uptime_ms) : '—');
    c.status.title = statusDetail(p);
    updateActions(c.actions, p);
  }

  function update(list) {
    const sorted = [...list].sort((a, b) => a.id - b.id);
    const seen = new Set();
    sorted.forEach((p, i) => {
      seen.add(p.id);
      let tr = rows.get(p.id);
      if (!tr) { tr = makeRow(p); rows.set(p.id, tr); }
      updateRow(tr, p);
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    for (const [id, tr] of rows) {
      if (!seen.has(id)) { tr.remove(); rows.delete(id); }
    }
  }

  /** Draws each row's sparkline from a `GET /daemon/history` answer. */
  function updateHistory(hist) {
    const windowMs = hist.interval_ms * hist.samples;
    const byId = new Map(hist.subjects.map((x) => [x.id, x]));
    for (const [id, tr] of rows) tr.cells_.spark.update(byId.get(id), windowMs, tr.dataset.name);
  }

  return { el: table, update, updateHistory };
}

/** The "New process" form: command, optional name and working directory. */
function newProcessForm(scope, onCreated) {
  const name = h('input', { id: 'new-name', name: 'name', placeholder: 'api', autocomplete: 'off', spellcheck: 'false' });
  const cmd = h('input', { id: 'new-command', name: 'command', required: true, placeholder: 'node server.js', autocomplete: 'off', spellcheck: 'false' });
  const cwd = h('input', { id: 'new-cwd', name: 'cwd', placeholder: scope.agent ? "the agent daemon's folder" : "the daemon's folder", autocomplete: 'off', spellcheck: 'false' });
  const err = h('p', { class: 'form-error', role: 'alert' });
  const submit = h('button', { type: 'submit', class: 'primary', id: 'new-submit' }, icon('start'), 'Start');
  const form = h('form', { class: 'new-form', id: 'new-form', hidden: true },
    h('div', { class: 'field f-name' }, h('label', { for: 'new-name' }, 'Name ', h('span', { class: 'muted' }, '(optional)')), name),
    h('div', { class: 'field f-cmd' }, h('label', { for: 'new-command' }, 'Command'), cmd),
    h('div', { class: 'field f-cwd' }, h('label', { for: 'new-cwd' }, 'Working directory ', h('span', { class: 'muted' }, '(optional)')), cwd),
    h('div', { class: 'field f-go' }, submit),
    err);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { script: cmd.value.trim() };
    if (!body.script) return;
    if (name.value.trim()) body.name = name.value.trim();
    if (cwd.value.trim()) body.path = cwd.value.trim();
    submit.disabled = true;
    err.textContent = '';
    try {
      const created = await scope.create(body);
      toast(`Started ${created && created.name ? created.name : body.script}`);
      form.reset();
      form.hidden = true;
      toggle.setAttribute('aria-expanded', 'false');
      onCreated();
      pollHealth();
    } catch (e) {
      if (e instanceof AuthError) { onAuthLost(e.message); return; }
      err.textContent = e.message;
    } finally {
      submit.disabled = false;
    }
  });
  const toggle = h('button', { type: 'button', class: 'secondary', id: 'new-toggle', 'aria-expanded': 'false', 'aria-controls': 'new-form' },
    icon('plus'), 'New process');
  toggle.addEventListener('click', () => {
    form.hidden = !form.hidden;
    toggle.setAttribute('aria-expanded', String(!form.hidden));
    if (!form.hidden) cmd.focus();
  });
  return { form, toggle };
}

function summary(list) {
  const n = (s) => list.filter((p) => p.status === s).length;
  const parts = [`${list.length} ${list.length === 1 ? 'process' : 'processes'}`, `${n('online')} online`];
  if (n('errored')) parts.push(`${n('errored')} errored`);
  return parts.join(' · ');
}

/** A card with the process table of `scope`, its form, and its refresh. */
function processesCard(scope, title, headExtra) {
  const count = h('span', { class: 'muted count' });
  const error = h('p', { class: 'banner error', hidden: true, role: 'alert' });
  const empty = h('p', { class: 'empty', hidden: true },
    scope.agent ? 'This agent runs no process yet.' : 'No process yet: start one with “New process” or ', scope.agent ? '' : h('code', {}, 'opm start'), '.');
  let poll;
  const table = processTable(scope, () => poll.now());
  const { form, toggle } = newProcessForm(scope, () => poll.now());
  const card = h('section', { class: 'card' },
    h('div', { class: 'card-head' }, h('h1', {}, title), count, h('span', { class: 'spacer' }), headExtra, toggle),
    form, error, h('div', { class: 'table-wrap' }, table.el), empty);
  poll = poller(async () => {
    try {
      const [list, hist] = await Promise.all([scope.list(), scope.history().catch(() => null)]);
      table.update(list);
      if (hist) table.updateHistory(hist);
      setText(count, summary(list));
      empty.hidden = list.length > 0;
      error.hidden = true;
    } catch (e) {
      if (e instanceof AuthError) throw e;
      setText(error, scope.agent ? `Agent ${scope.agent}: ${e.message}` : e.message);
      error.hidden = false;
    }
  });
  let live = null;
  const refresh = () => { poll.now(); pollHealth(); };
  return {
    card,
    poll: {
      start() { poll.start(); live = follower(scope.live(), { onEvent: refresh, onTick: refresh, onOpen: refresh }); },
      now: () => poll.now(),
      stop() { poll.stop(); if (live) live.stop(); },
    },
  };
}

// ---------- views ----------

const EVENT_KINDS = ['started', 'exited', 'restarted', 'stopped', 'errored', 'finished', 'cron_restart', 'reset', 'signal', 'memory_limit', 'watch', 'spawn_failed',
  'adopted', 'lost', 'removed', 'agent_joined', 'agent_registered', 'agent_online', 'agent_offline', 'agent_removed', 'recovered'];

/** Every event of this daemon (and, on a server, about its agents), filtered by kind. */
function eventsView() {
  const kind = h('select', { id: 'event-kind', 'aria-label': 'Kind' },
    h('option', { value: '' }, 'All kinds'), ...EVENT_KINDS.map((k) => h('option', { value: k }, k)));
  const count = h('span', { class: 'muted count' });
  const error = h('p', { class: 'banner error', hidden: true, role: 'alert' });
  const events = timeline({ withName: true, shown: 200 });
  const card = h('section', { class: 'card' },
    h('div', { class: 'card-head' }, h('h1', {}, 'Events'), count, h('span', { class: 'spacer' }),
      h('label', { class: 'events-filter', for: 'event-kind' }, 'Kind', kind)),
    error, events.el);
  const poll = poller(async () => {
    try {
      const list = await api(`/daemon/events?limit=500${kind.value ? `&kind=${enc(kind.value)}` : ''}`);
      events.set(list);
      setText(count, `${list.length} ${list.length === 1 ? 'event' : 'events'}${kind.value ? ` of kind ${kind.value}` : ''}`);
      error.hidden = true;
    } catch (e) {
      if (e instanceof AuthError) throw e;
      setText(error, e.message);
      error.hidden = false;
    }
  });
  kind.addEventListener('change', () => poll.now());
  let live = null;
  return {
    mount(main) {
      main.append(card);
      poll.start();
      live = follower('/daemon/events/stream', {
        onEvent: (e) => { if (!kind.value || e.kind === kind.value) poll.now(); pollHealth(); },
        onTick: pollHealth,
        onOpen: () => poll.now(),
      });
    },
    unmount() { poll.stop(); if (live) live.stop(); },
  };
}

function processesView() {
  const { card, poll } = processesCard(scopeOf(null), 'Processes');
  return {
    mount(main) { main.append(card); poll.start(); },
    unmount() { poll.stop(); },
  };
}

function agentsView() {
  const count = h('span', { class: 'muted count' });
  const error = h('p', { class: 'banner error', hidden: true, role: 'alert' });
  const empty = h('p', { class: 'empty', hidden: true }, 'No agent has registered yet: on another machine run ',
    h('code', {}, `opm agent connect ${location.origin} --token T`), '.');
  const tbody = h('tbody');
  const table = h('table', { class: 'agents' },
    h('thead', {}, h('tr', {},
      ['Status', 'Name', 'Hostname', 'Endpoint', 'Version', 'Last seen', 'Processes'].map((t, i) =>
        h('th', { scope: 'col', class: ['a-status', 'a-name', 'a-host', 'a-endpoint', 'a-version', 'a-seen num', 'a-procs num'][i] }, t)))),
    tbody);
  const rows = new Map();
  const card = h('section', { class: 'card' },
    h('div', { class: 'card-head' }, h('h1', {}, 'Agents'), count),
    error, h('div', { class: 'table-wrap' }, table), empty);

  function row(a) {
    let tr = rows.get(a.id);
    if (!tr) {
      const c = {
        status: badge(a.status),
        name: h('a', { href: `#/agents/${enc(a.name || a.id)}` }),
        id: h('div', { class: 'cmd' }),
        host: h('td', { class: 'a-host' }),
        endpoint: h('td', { class: 'a-endpoint mono' }),
        version: h('td', { class: 'a-version' }),
        seen: h('td', { class: 'a-seen num', 'data-label': 'Seen' }),
        procs: h('td', { class: 'a-procs num' }),
      };
      tr = h('tr', { class: 'agent' }, h('td', { class: 'a-status' }, c.status),
        h('td', { class: 'a-name' }, c.name, c.id), c.host, c.endpoint, c.version, c.seen, c.procs);
      tr.cells_ = c;
      rows.set(a.id, tr);
    }
    const c = tr.cells_;
    tr.dataset.id = a.id;
    tr.dataset.name = a.name;
    tr.dataset.status = a.status;
    setBadge(c.status, a.status);
    setText(c.name, a.name);
    c.name.setAttribute('href', `#/agents/${enc(a.name || a.id)}`);
    setText(c.id, a.id);
    setText(c.host, a.hostname);
    setText(c.endpoint, a.endpoint);
    setText(c.version, a.version);
    setText(c.seen, fmtAgo(a.last_seen_ms));
    const pc = a.processes || { total: 0, online: 0, stopped: 0, errored: 0 };
    setText(c.procs, `${pc.online}/${pc.total} online${pc.errored ? ` · ${pc.errored} errored` : ''}`);
    return tr;
  }

  const poll = poller(async () => {
    try {
      const list = (await api('/daemon/agents/list')).sort((a, b) => a.name.localeCompare(b.name));
      const seen = new Set(list.map((a) => a.id));
      list.forEach((a, i) => {
        const tr = row(a);
        if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
      });
      for (const [id, tr] of rows) if (!seen.has(id)) { tr.remove(); rows.delete(id); }
      const on = list.filter((a) => a.status === 'online').length;
      setText(count, `${list.length} ${list.length === 1 ? 'agent' : 'agents'} · ${on} online`);
      empty.hidden = list.length > 0;
      error.hidden = true;
    } catch (e) {
      if (e instanceof AuthError) throw e;
      setText(error, e.message);
      error.hidden = false;
    }
  });
  let live = null;
  const refresh = () => { poll.now(); pollHealth(); };
  return {
    mount(main) { main.append(card); poll.start(); live = follower('/daemon/events/stream', { onEvent: refresh, onTick: refresh, onOpen: refresh }); },
    unmount() { poll.stop(); if (live) live.stop(); },
  };
}

function agentView(agentId) {
  const scope = scopeOf(agentId);
  const facts = h('dl', { class: 'facts compact' });
  const status = badge('offline');
  const { card, poll } = processesCard(scope, 'Processes');
  const cpu = lineChart('cpu', 'CPU of its processes');
  const mem = lineChart('memory', 'Memory of its processes');
  const head = h('section', { class: 'card' },
    h('div', { class: 'card-head' }, h('h1', {}, agentId), status),
    facts);
  const charts = h('section', { class: 'card charts', 'aria-label': 'The agent\'s totals over time' }, cpu.el, mem.el);
  const events = timeline({ withName: true });
  const eventsCard = h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', {}, 'Events'),
    h('span', { class: 'muted count' }, 'the agent\'s own, and the server\'s about it')), events.el);
  const crumbs = h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/agents' }, 'Agents'), h('span', {}, agentId));
  const infoPoll = poller(async () => {
    const list = await api('/daemon/agents/list');
    const a = list.find((x) => x.id === agentId || x.name === agentId);
    if (!a) { setBadge(status, 'unknown'); return; }
    setBadge(status, a.status);
    fillFacts(facts, [
      ['Hostname', a.hostname], ['Endpoint', a.endpoint], ['Version', a.version],
      ['Last seen', fmtAgo(a.last_seen_ms)], ['Registered', fmtTime(a.registered_ms)], ['Agent id', a.id],
    ]);
    const hist = await api('/daemon/agents/history');
    const series = hist.subjects.find((x) => x.id === a.id);
    cpu.update(series, hist.interval_ms * hist.samples);
    mem.update(series, hist.interval_ms * hist.samples);
    // The server's events about the agent, and the agent's own (when it answers).
    const [about, own] = await Promise.all([
      api(`/daemon/events?agent=${enc(a.id)}&limit=200`),
      scope.events('?limit=200').catch((e) => { if (e instanceof AuthError) throw e; return []; }),
    ]);
    events.set([...about, ...own].sort((x, y) => x.at_ms - y.at_ms));
  });
  let live = null;
  const refresh = () => { infoPoll.now(); pollHealth(); };
  return {
    mount(main) {
      main.append(crumbs, head, charts, card, eventsCard);
      poll.start();
      infoPoll.start();
      // The server's stream: this agent going on- or offline, and its totals at each tick.
      live = follower('/daemon/events/stream', { onEvent: refresh, onTick: refresh, onOpen: refresh });
    },
    unmount() { poll.stop(); infoPoll.stop(); if (live) live.stop(); },
  };
}

function fillFacts(dl, pairs) {
  const keys = pairs.map(([k]) => k).join('|');
  if (dl.dataset.keys !== keys) {
    dl.dataset.keys = keys;
    dl.replaceChildren(...pairs.flatMap(([k]) => [h('dt', {}, k), h('dd', { dataset: { fact: k } })]));
  }
  pairs.forEach(([, v], i) => setText(dl.children[i * 2 + 1], dash(v)));
}

/** A log pane: lines in order, stderr marked, following the bottom unless scrolled up. */
function logPane() {
  const pre = h('div', { class: 'log', id: 'log', tabindex: '0', role: 'log', 'aria-label': 'Process output' });
  let count = 0;
  const atBottom = () => pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
  return {
    el: pre,
    add(kind, text) {
      const stick = atBottom();
      pre.append(h('div', { class: `line ${kind}` }, text));
      count++;
      while (count > MAX_LOG_LINES) { pre.firstChild.remove(); count--; }
      if (stick) pre.scrollTop = pre.scrollHeight;
    },
    clear() { pre.replaceChildren(); count = 0; delete pre.dataset.key; },
  };
}

/**
 * Reads server-sent events from a fetch() body (EventSource cannot send the
 * token header). Calls onOpen() once the stream is answered, then
 * onEvent(name, data) per event; resolves when the stream ends.
 */
async function readSse(url, signal, onOpen, onEvent) {
  const res = await fetch(url, { headers: headers({ Accept: 'text/event-stream' }), signal, cache: 'no-store', credentials: 'omit' });
  if (res.status === 401) throw new AuthError('unauthorized');
  if (!res.ok || !res.body) {
    let msg = `${res.status} ${res.statusText}`;
    try { msg = (await res.json()).error || msg; } catch { /* not JSON */ }
    throw new ApiError(msg, res.status);
  }
  onOpen();
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let m;
    while ((m = /\r?\n\r?\n/.exec(buf))) {
      const block = buf.slice(0, m.index);
      buf = buf.slice(m.index + m[0].length);
      let event = 'message';
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (!line || line.startsWith(':')) continue;
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        let v = i < 0 ? '' : line.slice(i + 1);
        if (v.startsWith(' ')) v = v.slice(1);
        if (field === 'event') event = v;
        else if (field === 'data') data.push(v);
      }
      if (data.length) onEvent(event, data.join('\n'));
    }
  }
}

function processView(scope, id) {
  const title = h('h1', {}, id);
  const status = badge('stopped');
  const facts = h('dl', { class: 'facts' });
  const error = h('p', { class: 'banner error', hidden: true, role: 'alert' });
  const events = timeline();
  const cpu = lineChart('cpu', 'CPU');
  const mem = lineChart('memory', 'Memory');
  const pane = logPane();
  const live = h('span', { class: 'live', dataset: { state: 'connecting' } }, 'connecting');
  let poll;
  let actions = null;
  const actionsSlot = h('span', { class: 'head-actions' });
  const back = scope.agent
    ? [h('a', { href: '#/agents' }, 'Agents'), h('a', { href: `#/agents/${enc(scope.agent)}` }, scope.agent)]
    : [h('a', { href: '#/' }, 'Processes')];
  const crumbs = h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, ...back, h('span', {}, id));
  const clear = h('button', { type: 'button', class: 'ghost small', onclick: () => pane.clear() }, 'Clear');
  const cards = [
    crumbs,
    h('section', { class: 'card' },
      h('div', { class: 'card-head' }, title, status, h('span', { class: 'spacer' }), actionsSlot),
      error, facts),
    h('section', { class: 'card charts', 'aria-label': 'CPU and memory over time' }, cpu.el, mem.el),
    h('section', { class: 'card logs-card' },
      h('div', { class: 'card-head' }, h('h2', {}, 'Logs'), live, h('span', { class: 'spacer' }), clear),
      pane.el),
    h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', {}, 'Events')), events.el),
  ];

  poll = poller(async () => {
    let info;
    try {
      info = await scope.info(id);
    } catch (e) {
      if (e instanceof AuthError) throw e;
      setText(error, e.status === 404 ? `No process ${id} here.` : e.message);
      error.hidden = false;
      return;
    }
    error.hidden = true;
    setText(title, info.name);
    setText(crumbs.lastChild, info.name);
    setBadge(status, info.status);
    if (!actions) {
      actions = actionsFor(scope, info, (action, ok) => {
        if (action === 'remove' && ok) location.hash = scope.agent ? `#/agents/${enc(scope.agent)}` : '#/';
        else poll.now();
      });
      actionsSlot.append(actions);
    }
    updateActions(actions, info);
    const optional = [
      ['Max memory', info.max_memory ? fmtBytes(info.max_memory) : null], ['Errored', info.errored_reason],
      ['Next restart', info.restart_at_ms ? fmtTime(info.restart_at_ms) : null],
      ['Exit code', info.status === 'exited' ? String(dash(info.exit_code)) : null],
      ['Cron restart', info.cron_next_ms ? `${info.definition.cron_restart} (next ${fmtTime(info.cron_next_ms)})` : null],
      ['Env keys', (info.env_keys || []).join(', ')],
    ].filter(([, v]) => v);
    fillFacts(facts, [
      ['ID', info.id], ['PID', info.pid], ['CPU', info.pid ? `${info.cpu.toFixed(1)}%` : null],
      ['Memory', info.pid ? fmtBytes(info.memory) : null],
      ['Uptime', info.status === 'online' ? fmtDuration(info.uptime_ms) : null], ['Restarts', info.restarts],
      ['Desired', info.desired], ['Autorestart', info.autorestart ? 'yes' : 'no'],
      ['Created', fmtTime(info.created_ms)], ['Last exit', info.last_exit ? info.last_exit.description : null],
      ...optional,
      ['Command', info.command], ['Directory', info.cwd],
      ['Out log', info.out_log], ['Err log', info.err_log],
    ]);
    try {
      events.set(await scope.events(`?process=${enc(info.id)}&limit=200`));
    } catch (e) {
      if (e instanceof AuthError) throw e;
      events.set(info.events || []);
    }
    try {
      const hist = await scope.history(info.id);
      const series = hist.subjects[0];
      cpu.update(series, hist.interval_ms * hist.samples);
      mem.update(series, hist.interval_ms * hist.samples);
    } catch (e) {
      if (e instanceof AuthError) throw e;
    }
  });

  // Live logs: the SSE stream of this daemon, or of the agent relayed by the server.
  const abort = new AbortController();
  function setLive(state, text) { live.dataset.state = state; setText(live, text); }
  async function follow() {
    let first = true;
    while (!abort.signal.aborted) {
      try {
        setLive('connecting', 'connecting');
        await readSse(scope.stream(id, first ? LOG_LINES : 0), abort.signal, () => setLive('live', 'live'), (event, data) => {
          if (event === 'out' || event === 'err') pane.add(event, data);
          else if (event === 'error') pane.add('err', `[log stream] ${data}`);
        });
      } catch (e) {
        if (abort.signal.aborted || e.name === 'AbortError') return;
        if (e instanceof AuthError) { onAuthLost(e.message); return; }
        if (e.status === 404) { setLive('down', 'no such process'); return; }
      }
      first = false;
      setLive('down', 'reconnecting');
      await new Promise((r) => setTimeout(r, 2000));
    }
  }

  // This process's events and the history ticks: what to refresh, when.
  let liveEvents = null;
  const refresh = () => { poll.now(); pollHealth(); };
  return {
    mount(main) {
      main.append(...cards);
      poll.start();
      follow();
      liveEvents = follower(scope.live(`?process=${enc(id)}`), { onEvent: refresh, onTick: refresh, onOpen: refresh });
    },
    unmount() { poll.stop(); abort.abort(); if (liveEvents) liveEvents.stop(); },
  };
}

// ---------- boot ----------

$('#logout').addEventListener('click', () => {
  session.token = '';
  if (app.view) { app.view.unmount(); app.view = null; }
  showLogin('Signed out.');
});
window.addEventListener('hashchange', () => { if (!$('#top').hidden) route(); });
start();
