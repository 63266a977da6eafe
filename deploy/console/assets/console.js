// The console page: a hash-routed view over /ui/api/ and, for resolving
// conflicts, the browser client module (a resolve is a real event).
import { open } from "./ebb-client.js";

const $ = (s) => document.querySelector(s);
const main = $("#main");
const state = { auth: sessionStorage.getItem("ebb-auth") || "", me: null, tenant: sessionStorage.getItem("ebb-tenant") || "" };

function esc(s) { return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c])); }
function json(v) { return esc(JSON.stringify(v, null, 1)); }
function badge(s) { return `<span class="badge ${esc(s)}">${esc(s)}</span>`; }

async function api(path, params = {}) {
  const q = new URLSearchParams(params);
  const headers = state.auth ? { Authorization: "Bearer " + btoa(state.auth) } : {};
  const resp = await fetch("api/" + path + (q.toString() ? "?" + q : ""), { headers });
  const body = await resp.json().catch(() => ({ error: "HTTP " + resp.status }));
  if (resp.status === 401) { showLogin(body.error); throw new Error(body.error); }
  if (!resp.ok) throw new Error(body.error || "HTTP " + resp.status);
  return body;
}

function showLogin(msg) {
  $("#login").hidden = false;
  main.hidden = true;
  $("#login-error").textContent = msg && state.auth ? msg : "";
}

$("#login").addEventListener("submit", async (e) => {
  e.preventDefault();
  state.auth = $("#login-user").value + ":" + $("#login-password").value;
  sessionStorage.setItem("ebb-auth", state.auth);
  await boot();
});

async function boot() {
  state.me = await api("me");
  $("#login").hidden = true;
  main.hidden = false;
  $("#who").textContent = (state.me.user || "no auth") + " (" + state.me.role + ")";
  const sel = $("#tenant");
  const tenants = state.me.tenants.length ? state.me.tenants : [state.tenant || ""];
  if (!state.tenant || !tenants.includes(state.tenant)) state.tenant = tenants[0];
  sel.innerHTML = tenants.map((t) => `<option ${t === state.tenant ? "selected" : ""}>${esc(t)}</option>`).join("");
  route();
}

$("#tenant").addEventListener("change", (e) => { state.tenant = e.target.value; sessionStorage.setItem("ebb-tenant", state.tenant); route(); });
window.addEventListener("hashchange", route);

let timer = null;
async function route() {
  clearInterval(timer);
  const [page, ...rest] = (location.hash.slice(1) || "docs").split("/");
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.getAttribute("href") === "#" + page);
  const pages = { docs, doc, conflicts, dead, rejections, streams, journey };
  try {
    await (pages[page] || docs)(rest.map(decodeURIComponent));
  } catch (err) {
    main.innerHTML = `<p class="error">${esc(err.message)}</p>`;
  }
}

// ---- documents ----

async function docs([collection = "", after = ""] = []) {
  const q = $("#q")?.value ?? "";
  const b = await api("docs", { tenant: state.tenant, collection, q, after, limit: 25 });
  main.innerHTML = `
    <div class="toolbar">
      <label>collection <select id="coll">${b.collections.map((c) => `<option ${c === b.collection ? "selected" : ""}>${esc(c)}</option>`).join("")}</select></label>
      <label>id contains <input id="q" value="${esc(q)}"></label>
      <button id="search">Search</button>
    </div>
    <table id="doc-table"><tr><th>id</th><th>version</th><th>conflicts</th><th>fields</th><th>last writer</th></tr>
    ${b.docs.map((d) => `<tr data-id="${esc(d.id)}">
      <td><a href="#doc/${encodeURIComponent(d.collection)}/${encodeURIComponent(d.id)}">${esc(d.id)}</a>${d.deleted ? " " + badge("deleted") : ""}</td>
      <td>${d.version}</td><td>${d.conflicts.length ? badge("open") + " " + d.conflicts.length : ""}</td>
      <td><pre>${json(d.fields)}</pre></td><td>${esc(d.client)}</td></tr>`).join("")}
    </table>
    <p>${b.docs.length ? "" : "No documents."} ${b.more ? `<a href="#docs/${encodeURIComponent(b.collection)}/${encodeURIComponent(b.next)}">next page →</a>` : ""}</p>`;
  $("#coll").onchange = (e) => { location.hash = "docs/" + encodeURIComponent(e.target.value); };
  $("#search").onclick = () => docs([b.collection]);
}

async function doc([collection, id]) {
  const b = await api("doc", { tenant: state.tenant, collection, id });
  const d = b.doc;
  main.innerHTML = `
    <h2>${esc(collection)} / ${esc(id)} <span class="badge">v${d.version}</span> ${d.deleted ? badge("deleted") : ""}</h2>
    <div class="sides"><div class="side"><h3>Current state</h3><pre>${json(d.fields)}</pre>
      <p>written by ${esc(d.client)}, event <a href="#journey/${d.event}">${esc(d.event)}</a></p></div>
    <div class="side"><h3>Open conflicts</h3>${d.conflicts.map((c) => `<p>${badge(c.policy)} <code>${esc(c.id)}</code>
      <button class="resolve" data-id="${esc(c.id)}">Resolve…</button></p>`).join("") || "none"}</div></div>
    <h3>Conflict records</h3>
    <table><tr><th>id</th><th>policy</th><th>status</th><th>lost</th><th>sides</th><th>resolution</th></tr>
    ${b.records.map((c) => `<tr><td><code>${esc(c.id)}</code></td><td>${esc(c.policy)}</td><td>${badge(c.status)}</td><td>${esc((c.lost || []).join(", "))}</td>
      <td><pre>${json(c.sides.map((s) => ({ client: s.client, version: s.version, fields: s.fields })))}</pre></td><td><code>${esc(c.resolution || "")}</code></td></tr>`).join("")}
    </table>
    <h3>History (events on EVENTS${b.truncated ? ", newest only" : ""})</h3>
    <table><tr><th>seq</th><th>time</th><th>op</th><th>client</th><th>base</th><th>fields</th><th>event</th></tr>
    ${b.history.map((h) => h.event ? `<tr><td>${h.stream_seq}</td><td>${esc(h.time)}</td><td>${esc(h.event.op)}</td><td>${esc(h.event.client)}</td>
      <td>${h.event.base_version}</td><td><pre>${json(h.event.fields || {})}</pre></td><td><a href="#journey/${h.event.id}">${esc(h.event.id)}</a></td></tr>` :
      `<tr><td>${h.stream_seq}</td><td colspan="6" class="error">${esc(h.error)}</td></tr>`).join("")}
    </table>`;
  for (const btn of main.querySelectorAll("button.resolve")) {
    btn.onclick = () => openResolve(d, d.conflicts.find((c) => c.id === btn.dataset.id));
  }
}

// ---- conflicts and the resolve dialog ----

async function conflicts() {
  const b = await api("conflicts", { tenant: state.tenant });
  main.innerHTML = `<h2>Open conflicts</h2>
    <table id="conflict-table"><tr><th>document</th><th>version</th><th>conflict</th><th>server side</th><th>incoming side</th><th></th></tr>
    ${b.docs.flatMap((d, i) => d.conflicts.map((c, j) => `<tr>
      <td><a href="#doc/${encodeURIComponent(d.collection)}/${encodeURIComponent(d.id)}">${esc(d.collection)}/${esc(d.id)}</a></td>
      <td>${d.version}</td><td><code>${esc(c.id)}</code> ${badge(c.policy)}</td>
      <td><pre>${json(c.sides[0]?.fields)}</pre></td><td><pre>${json(c.sides[1]?.fields)}</pre></td>
      <td><button class="resolve" data-i="${i}" data-j="${j}">Resolve…</button></td></tr>`)).join("")}
    </table>${b.docs.length ? "" : "<p>No open conflicts.</p>"}`;
  for (const btn of main.querySelectorAll("button.resolve")) {
    const d = b.docs[Number(btn.dataset.i)];
    btn.onclick = () => openResolve(d, d.conflicts[Number(btn.dataset.j)]);
  }
}

function openResolve(d, c) {
  const dlg = $("#resolve");
  const [server, incoming] = c.sides;
  const names = [...new Set([...Object.keys(server?.fields || {}), ...Object.keys(incoming?.fields || {})])].sort();
  $("#resolve-id").textContent = c.id;
  $("#resolve-doc").textContent = `${d.collection} / ${d.id}, version ${d.version}, policy ${c.policy}`;
  const side = (s, which, title) => `<div class="side"><h3>${title}</h3><p>${esc(s?.client)}${s?.version ? " · v" + s.version : ""}${s?.event ? " · event " + esc(s.event) : ""}</p>
    <table>${names.map((n) => `<tr><td><label><input type="radio" name="f-${esc(n)}" value="${which}" ${which === "server" ? "checked" : ""}> ${esc(n)}</label></td>
    <td><pre>${s?.fields && n in s.fields ? json(s.fields[n]) : "—"}</pre></td></tr>`).join("")}</table></div>`;
  $("#resolve-sides").innerHTML = side(server, "server", "Server side") + side(incoming, "incoming", "Incoming side");
  const setJSON = (v) => { $("#resolve-json").value = JSON.stringify(v, null, 2); };
  setJSON(server?.fields || {});
  $("#pick-server").onclick = () => setJSON(server?.fields || {});
  $("#pick-incoming").onclick = () => setJSON(incoming?.fields || {});
  $("#pick-merge").onclick = () => {
    const out = {};
    for (const n of names) {
      const pick = dlg.querySelector(`input[name="f-${CSS.escape(n)}"]:checked`)?.value;
      const s = pick === "incoming" ? incoming : server;
      if (s?.fields && n in s.fields) out[n] = s.fields[n];
    }
    setJSON(out);
  };
  $("#resolve-error").textContent = "";
  $("#resolve-cancel").onclick = () => dlg.close();
  $("#resolve-submit").onclick = async () => {
    let fields;
    try { fields = JSON.parse($("#resolve-json").value); } catch (err) { $("#resolve-error").textContent = "not JSON: " + err.message; return; }
    if (!fields || typeof fields !== "object" || Array.isArray(fields)) { $("#resolve-error").textContent = "the document must be a JSON object"; return; }
    try {
      const r = await resolveWith(d, c, fields);
      dlg.close();
      main.insertAdjacentHTML("afterbegin", `<p class="ok" id="resolved">Resolved by event <a href="#journey/${r.id}">${esc(r.id)}</a>.</p>`);
    } catch (err) {
      $("#resolve-error").textContent = err.message;
    }
  };
  dlg.showModal();
}

// resolveWith writes the resolve event in the console's own durable log
// (its own device) and pushes it through the gateway.
async function resolveWith(d, c, fields) {
  const client = state.me.user || "console";
  const auth = state.auth;
  const db = await open({ tenant: state.tenant, client, auth, name: "ebb-console:" + state.tenant + ":" + client });
  try {
    await db.sync(); // learn the document's current version first
    const ev = await db.resolve(d.collection, d.id, c.id, fields);
    const r = await db.sync();
    if (!r.online) throw new Error("resolve " + ev.id + " is saved in this browser and will be pushed later: " + r.error);
    return ev;
  } finally {
    db.close();
  }
}

// ---- dead letters, rejections ----

async function dead() {
  const b = await api("dead", state.me.admin ? {} : { tenant: state.tenant });
  main.innerHTML = `<h2>Dead letters${b.truncated ? " (newest)" : ""}</h2>
    <table id="dead-table"><tr><th>seq</th><th>time</th><th>reason</th><th>subject</th><th>event</th><th>tenant / client</th><th>EVENTS seq</th></tr>
    ${b.dead.map((x) => x.letter ? `<tr><td>${x.seq}</td><td>${esc(x.time)}</td><td class="error">${esc(x.letter.reason)}</td><td><code>${esc(x.letter.subject)}</code></td>
      <td>${x.letter.event ? `<a href="#journey/${x.letter.event}">${esc(x.letter.event)}</a>` : ""}</td><td>${esc(x.letter.tenant)} / ${esc(x.letter.client)}</td><td>${x.letter.stream_seq}</td></tr>` :
      `<tr><td>${x.seq}</td><td colspan="6" class="error">${esc(x.error)}</td></tr>`).join("")}</table>${b.dead.length ? "" : "<p>No dead letters.</p>"}`;
}

async function rejections() {
  const b = await api("rejections", { tenant: state.tenant });
  main.innerHTML = `<h2>Rejections per client${b.truncated ? " (newest receipts)" : ""}</h2>
    <div class="cards">${Object.entries(b.outcomes).map(([o, n]) => `<div class="card">${badge(o)}<b>${n}</b></div>`).join("")}</div>
    <table id="rejection-table"><tr><th>client</th><th>refused</th><th>latest</th></tr>
    ${b.clients.map((c) => `<tr><td>${esc(c.client)}</td><td>${Object.entries(c.outcomes).map(([o, n]) => badge(o) + " " + n).join(" ")}</td>
      <td>${c.latest.map((r) => `<div><a href="#journey/${r.event}">${esc(r.event)}</a> ${esc(r.collection)}/${esc(r.doc)}: ${esc(r.reason || r.outcome)}</div>`).join("")}</td></tr>`).join("")}
    </table>${b.clients.length ? "" : "<p>No refused writes.</p>"}`;
}

// ---- streams and projector ----

function plot(samples) {
  const w = 520, h = 120, pad = 24;
  if (samples.length === 0) return "";
  const max = Math.max(1, ...samples.map((s) => s.lag));
  const t0 = Date.parse(samples[0].at), t1 = Math.max(t0 + 1000, Date.parse(samples[samples.length - 1].at));
  const pts = samples.map((s) => [pad + (Date.parse(s.at) - t0) / (t1 - t0) * (w - 2 * pad), h - pad - s.lag / max * (h - 2 * pad)]);
  return `<svg class="plot" id="lag-plot" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img" aria-label="projector lag over time">
    <line x1="${pad}" y1="${h - pad}" x2="${w - pad}" y2="${h - pad}" stroke="#999"/><line x1="${pad}" y1="${pad}" x2="${pad}" y2="${h - pad}" stroke="#999"/>
    <text x="2" y="${pad}" font-size="10">${max}</text><text x="2" y="${h - pad}" font-size="10">0</text>
    <text x="${pad}" y="${h - 6}" font-size="10">${new Date(t0).toLocaleTimeString()}</text>
    <text x="${w - pad - 50}" y="${h - 6}" font-size="10">${new Date(t1).toLocaleTimeString()}</text>
    <polyline fill="none" stroke="#2f6fde" stroke-width="2" points="${pts.map((p) => p.map((x) => x.toFixed(1)).join(",")).join(" ")}"/>
    ${pts.map((p) => `<circle cx="${p[0].toFixed(1)}" cy="${p[1].toFixed(1)}" r="2" fill="#2f6fde"/>`).join("")}</svg>`;
}

async function streams() {
  const draw = async () => {
    const b = await api("streams");
    main.innerHTML = `<h2>Streams</h2>
      <table id="stream-table"><tr><th>stream</th><th>messages</th><th>bytes</th><th>first seq</th><th>last seq</th><th>subjects</th><th>created</th></tr>
      ${b.streams.map((s) => `<tr><td>${esc(s.name)}</td>${s.error ? `<td colspan="6" class="error">${esc(s.error)}</td>` :
        `<td>${s.messages}</td><td>${s.bytes}</td><td>${s.first_seq}</td><td>${s.last_seq}</td><td>${s.subjects}</td><td>${esc(s.created)}</td>`}</tr>`).join("")}</table>
      <h2>Projector</h2>
      <div class="cards"><div class="card">checkpoint<b id="checkpoint">${b.checkpoint}</b></div><div class="card">lag (events)<b id="lag">${b.lag}</b></div></div>
      <h3>Lag over time</h3>${plot(b.lag_samples)}
      <h3>Outcomes${b.outcomes_truncated ? " (newest receipts)" : ""}</h3>
      <div class="cards">${Object.entries(b.outcomes).map(([o, n]) => `<div class="card">${badge(o)}<b>${n}</b></div>`).join("") || "none yet"}</div>
      <h3>Conflict records by policy</h3>
      <table id="policy-table"><tr><th>policy</th><th>records by status</th></tr>
      ${Object.entries(b.conflicts_by_policy).map(([p, m]) => `<tr><td>${esc(p)}</td><td>${Object.entries(m).map(([s, n]) => badge(s) + " " + n).join(" ")}</td></tr>`).join("")}</table>`;
  };
  await draw();
  timer = setInterval(() => draw().catch(() => {}), 2000);
}

// ---- one write's journey ----

async function journey([id = ""] = []) {
  main.innerHTML = `<div class="toolbar"><label>event id <input id="event-id" size="30" value="${esc(id)}"></label><button id="follow">Follow</button></div><div id="journey-out"></div>`;
  $("#follow").onclick = () => { location.hash = "journey/" + $("#event-id").value.trim(); };
  if (!id) return;
  const out = $("#journey-out");
  let b;
  try { b = await api("journey", { tenant: state.tenant, event: id }); } catch (err) { out.innerHTML = `<p class="error">${esc(err.message)}</p>`; return; }
  const ev = b.event?.event;
  const trace = b.trace ? (b.trace_link ? `<a href="${esc(b.trace_link)}">${esc(b.trace)}</a>` : `<code>${esc(b.trace)}</code>`) : "none (the writer sent no traceparent)";
  out.innerHTML = `
    <div class="step"><h3>1. Written</h3>${ev ? `<p>${esc(ev.op)} ${esc(ev.collection)}/${esc(ev.doc)} by ${esc(ev.client)}${ev.device ? " (device " + esc(ev.device) + ")" : ""}, seq ${ev.seq}, base version ${ev.base_version}</p><pre>${json(ev.fields || {})}</pre>` : "<p>not found on EVENTS</p>"}</div>
    <div class="step"><h3>2. Stored on EVENTS</h3>${b.event ? `<p>sequence ${b.event.stream_seq} at ${esc(b.event.time)}</p>` : "<p>—</p>"}</div>
    <div class="step"><h3>3. Receipt</h3>${b.receipt ? `<p id="journey-outcome">${badge(b.receipt.outcome)} version ${b.receipt.version ?? ""} ${esc(b.receipt.reason || "")} ${b.receipt.conflict ? "conflict " + esc(b.receipt.conflict) : ""}</p>` : "<p>no receipt yet</p>"}</div>
    <div class="step"><h3>4. Change</h3>${b.doc ? `<p>document now at version ${b.doc.version}${b.current ? " — this event made the current state" : " — later writes changed it since"}
      (<a href="#doc/${encodeURIComponent(b.doc.collection)}/${encodeURIComponent(b.doc.id)}">open</a>)</p><pre>${json(b.doc.fields)}</pre>` : "<p>—</p>"}</div>
    <div class="step"><h3>Trace</h3><p id="journey-trace">${trace}</p></div>`;
}

boot().catch((err) => { if (!$("#login").hidden) return; main.innerHTML = `<p class="error">${esc(err.message)}</p>`; });

if ("serviceWorker" in navigator) navigator.serviceWorker.register("sw.js").catch(() => {});
