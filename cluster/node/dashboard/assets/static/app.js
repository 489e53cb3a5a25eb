// Troupe dashboard: refreshes the server-rendered panels, runs the live
// event tail (Server-Sent Events) and keeps an entity page current. No
// framework; every node is built with textContent, never from strings.
(() => {
  'use strict';

  const body = document.body;
  const prefix = body.dataset.prefix || '/ui/';
  const refreshMs = Math.max(Number(body.dataset.refresh) || 2000, 250);
  const conn = document.getElementById('conn');

  function setConn(msg) {
    if (conn.textContent !== msg) conn.textContent = msg;
  }

  // Panels: fetch the page's <main> again and swap the panels that changed.
  // A panel that holds the keyboard focus is left alone until it is let go.
  let refreshing = false;
  async function refreshPanels() {
    if (refreshing) return;
    refreshing = true;
    try {
      const u = new URL(location.href);
      u.hash = '';
      u.searchParams.set('partial', '1');
      const res = await fetch(u, { cache: 'no-store', headers: { Accept: 'text/html' } });
      if (!res.ok) {
        setConn(`The node answered ${res.status}; showing older data.`);
        return;
      }
      const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
      for (const fresh of doc.querySelectorAll('[data-panel]')) {
        const cur = document.getElementById(fresh.id);
        if (!cur || cur.innerHTML === fresh.innerHTML) continue;
        if (cur.contains(document.activeElement) && document.activeElement !== document.body) continue;
        cur.replaceWith(document.importNode(fresh, true));
      }
      setConn('');
    } catch (e) {
      setConn('The node is unreachable; retrying.');
    } finally {
      refreshing = false;
    }
  }

  if (body.dataset.poll) {
    setInterval(() => { if (!document.hidden) refreshPanels(); }, refreshMs);
    document.addEventListener('visibilitychange', () => { if (!document.hidden) refreshPanels(); });
  }

  function entityHref(stream) {
    const i = stream.indexOf('/');
    return prefix + 'entity/' + encodeURIComponent(stream.slice(0, i)) + '/' + encodeURIComponent(stream.slice(i + 1));
  }

  function cell(tr, text, cls) {
    const td = document.createElement('td');
    if (cls) td.className = cls;
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function clock(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    return d.toLocaleTimeString(undefined, { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
  }

  // The live tail.
  const form = document.getElementById('tail-form');
  if (form) {
    const rows = document.getElementById('tail-rows');
    const status = document.getElementById('tail-status');
    const pause = document.getElementById('tail-pause');
    const maxRows = 200;
    let source = null;
    let pending = [];
    let timer = 0;
    let paused = false;

    const say = (msg) => { status.textContent = msg; };

    function row(ev) {
      const tr = document.createElement('tr');
      tr.className = 'fresh';
      tr.dataset.stream = ev.stream;
      tr.dataset.position = ev.position;
      cell(tr, ev.position, 'n');
      const t = cell(tr, clock(ev.time));
      t.title = ev.time;
      const st = document.createElement('td');
      const a = document.createElement('a');
      a.href = entityHref(ev.stream);
      a.textContent = ev.stream;
      st.appendChild(a);
      tr.appendChild(st);
      cell(tr, ev.sequence, 'n');
      const ty = document.createElement('th');
      ty.scope = 'row';
      ty.textContent = ev.type;
      tr.appendChild(ty);
      const p = document.createElement('td');
      const code = document.createElement('code');
      code.className = 'payload';
      const text = ev.payload === undefined ? '' : JSON.stringify(ev.payload);
      code.textContent = text.length > 240 ? text.slice(0, 240) + '…' : text;
      if (text.length > 240) code.title = text;
      p.appendChild(code);
      tr.appendChild(p);
      return tr;
    }

    function note(msg) {
      const tr = document.createElement('tr');
      tr.className = 'note';
      const td = cell(tr, msg);
      td.colSpan = 6;
      pending.push(tr);
      schedule();
    }

    function flush() {
      timer = 0;
      if (paused || pending.length === 0) return;
      const frag = document.createDocumentFragment();
      for (let i = pending.length - 1; i >= 0; i--) frag.appendChild(pending[i]);
      pending = [];
      rows.insertBefore(frag, rows.firstChild);
      while (rows.childElementCount > maxRows) rows.lastElementChild.remove();
    }

    function schedule() {
      if (pending.length > 5 * maxRows) pending = pending.slice(-maxRows);
      if (!timer) timer = setTimeout(flush, 100);
    }

    function connect() {
      if (source) source.close();
      const u = new URL(prefix + 'api/tail', location.href);
      const kind = form.kind.value;
      const id = form.id.value.trim();
      if (kind) u.searchParams.set('kind', kind);
      if (id) u.searchParams.set('id', id);
      u.searchParams.set('last', '20');
      const what = (kind || 'all kinds') + (id ? `, id ${id}` : '');
      say(`Connecting (${what})…`);
      source = new EventSource(u);
      source.onopen = () => say(`Following ${what}.`);
      source.onmessage = (m) => {
        let ev;
        try { ev = JSON.parse(m.data); } catch (e) { return; }
        pending.push(row(ev));
        schedule();
      };
      source.addEventListener('skipped', (m) => {
        const d = JSON.parse(m.data);
        note(`${d.skipped} events not shown (more than ${d.max_rate} a second)`);
      });
      source.addEventListener('failed', (m) => {
        say(`The tail failed: ${JSON.parse(m.data).error}`);
        source.close();
      });
      source.onerror = () => say('Disconnected; reconnecting…');
    }

    let typing = 0;
    form.kind.addEventListener('change', () => { rows.replaceChildren(); pending = []; connect(); });
    form.id.addEventListener('input', () => {
      clearTimeout(typing);
      typing = setTimeout(() => { rows.replaceChildren(); pending = []; connect(); }, 300);
    });
    form.addEventListener('submit', (e) => { e.preventDefault(); connect(); });
    pause.addEventListener('click', () => {
      paused = !paused;
      pause.setAttribute('aria-pressed', String(paused));
      pause.textContent = paused ? 'Resume' : 'Pause';
      if (!paused) schedule();
    });
    document.getElementById('tail-clear').addEventListener('click', () => { rows.replaceChildren(); pending = []; });
    connect();
  }

  // An entity page follows its own stream and refreshes when it grows.
  if (body.dataset.liveKind) {
    const live = document.getElementById('entity-live');
    const u = new URL(prefix + 'api/tail', location.href);
    u.searchParams.set('kind', body.dataset.liveKind);
    u.searchParams.set('id', body.dataset.liveId);
    u.searchParams.set('exact', '1');
    u.searchParams.set('from', body.dataset.liveFrom || '0');
    u.searchParams.set('last', '0');
    const source = new EventSource(u);
    let timer = 0;
    source.onopen = () => { if (live) live.textContent = 'Following new events.'; };
    source.onmessage = () => {
      if (!timer) timer = setTimeout(() => { timer = 0; refreshPanels(); }, 150);
    };
    source.onerror = () => { if (live) live.textContent = 'Disconnected; reconnecting…'; };
  }
})();
