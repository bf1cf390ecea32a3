// The Weir web UI: a small page over the job manager's REST API (/v1).
// Routes: #/ (overview), #/submit, #/jobs/<id> (also reached as /jobs/<id>).
"use strict";

const REFRESH_MS = 1000;
let timer = null;
let route = "";

const $ = (sel, root = document) => root.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const SVG = "http://www.w3.org/2000/svg";

// A job manager started with --rest-token-file needs a bearer token: the
// page asks for it once and keeps it for this browser tab.
class NeedsToken extends Error {}

async function api(method, path, body, type) {
  const init = { method, headers: {} };
  const token = sessionStorage.getItem("weir-token");
  if (token) init.headers["Authorization"] = "Bearer " + token;
  if (body !== undefined) {
    init.body = body;
    init.headers["Content-Type"] = type || "application/json";
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let doc = null;
  try { doc = text ? JSON.parse(text) : null; } catch (_) { doc = null; }
  if (res.status === 401) throw new NeedsToken((doc && doc.error) || "a token is needed");
  if (!res.ok) throw new Error((doc && doc.error) || `${res.status} ${res.statusText}`);
  return doc;
}

function tokenPage(message) {
  clearTimeout(timer);
  route = "#/token";
  $("#main").innerHTML = `
    <section class="panel"><h2>Sign in</h2>
      <p class="muted">${esc(message)}</p>
      <form id="token-form" class="row">
        <input type="password" id="token" size="48" placeholder="token" autocomplete="current-password">
        <button class="primary" type="submit">Use this token</button>
      </form>
    </section>`;
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("weir-token", $("#token").value.trim());
    navigate();
  });
}

function toast(message, isError) {
  const d = document.createElement("div");
  if (isError) d.className = "error";
  d.textContent = message;
  $("#toast").appendChild(d);
  setTimeout(() => d.remove(), isError ? 12000 : 4000);
}

function rate(n) {
  if (!n) return "0";
  if (n >= 1e6) return (n / 1e6).toFixed(2) + " M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + " k";
  return n >= 100 ? Math.round(n).toString() : n.toFixed(1);
}
function bytes(n) {
  if (!n) return "0 B";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function time(ms) { return ms ? new Date(ms).toLocaleString() : "–"; }
function clock(ms) { return ms == null ? "–" : new Date(ms).toISOString().replace("T", " ").replace("Z", ""); }
function duration(ms) {
  if (ms == null) return "–";
  if (ms < 1000) return ms + " ms";
  const s = Math.floor(ms / 1000);
  if (s < 60) return (ms / 1000).toFixed(1) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}
const badge = (state) => `<span class="badge ${esc(state)}">${esc(state)}</span>`;

// ------------------------------------------------------------------ routing

function currentRoute() {
  const path = location.pathname.match(/^\/jobs\/([^/]+)/);
  if (path && !location.hash) return "#/jobs/" + path[1];
  return location.hash || "#/";
}

function navigate() {
  clearTimeout(timer);
  route = currentRoute();
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", (a.dataset.nav === "submit") === route.startsWith("#/submit") && !route.startsWith("#/jobs/"));
  }
  const job = route.match(/^#\/jobs\/([^/]+)/);
  if (job) return jobPage(decodeURIComponent(job[1]), route);
  if (route.startsWith("#/submit")) return submitPage();
  return overviewPage(route);
}

function every(fn, forRoute) {
  const tick = async () => {
    if (route !== forRoute) return;
    try {
      await fn();
    } catch (e) {
      if (e instanceof NeedsToken) return tokenPage(e.message);
      showError(e);
    }
    if (route === forRoute) timer = setTimeout(tick, REFRESH_MS);
  };
  tick();
}

function showError(e) {
  const el = $("#load-error");
  if (el) el.textContent = "Cannot reach the job manager: " + e.message;
}

// ----------------------------------------------------------------- overview

function overviewPage(forRoute) {
  $("#main").innerHTML = `
    <div class="cards" id="cards"></div>
    <p id="load-error" class="error"></p>
    <section class="panel"><h2>Jobs</h2><div id="jobs"></div></section>
    <section class="panel"><h2>Task managers</h2><div id="tms"></div></section>`;
  every(async () => {
    const [o, jobs, tms] = await Promise.all([api("GET", "/v1/overview"), api("GET", "/v1/jobs"), api("GET", "/v1/taskmanagers")]);
    $("#version").textContent = "v" + o.version;
    $("#load-error").textContent = "";
    const card = (n, l) => `<div class="card"><div class="n">${n}</div><div class="l">${l}</div></div>`;
    $("#cards").innerHTML = card(o.task_managers, "task managers") + card(`${o.slots_available} / ${o.slots_total}`, "slots free") +
      card(o.jobs_running, "jobs running") + card(o.jobs_finished, "finished") + card(o.jobs_canceled, "canceled") + card(o.jobs_failed, "failed");
    $("#jobs").innerHTML = jobs.jobs.length === 0 ? `<p class="muted">No jobs yet. <a href="#/submit">Submit one.</a></p>` :
      `<table><thead><tr><th>Name</th><th>State</th><th>Started</th><th class="num">Duration</th><th>Id</th></tr></thead><tbody>` +
      jobs.jobs.slice().reverse().map((j) => `<tr>
        <td><a href="#/jobs/${esc(j.id)}">${esc(j.name)}</a></td><td>${badge(j.state)}</td><td>${time(j.start_time_ms)}</td>
        <td class="num">${duration((j.end_time_ms || Date.now()) - j.start_time_ms)}</td><td class="muted">${esc(j.id)}</td></tr>`).join("") +
      `</tbody></table>`;
    $("#tms").innerHTML = tms.task_managers.length === 0 ? `<p class="muted">No task manager has registered.</p>` :
      `<table><thead><tr><th>Id</th><th>Address</th><th class="num">Slots</th><th class="num">Free</th><th class="num">Memory</th><th>Last heartbeat</th></tr></thead><tbody>` +
      tms.task_managers.map((t) => `<tr><td>${esc(t.id)}</td><td>${esc(t.address)}</td><td class="num">${t.slots_total}</td>
        <td class="num">${t.slots_free}</td><td class="num">${t.memory_bytes ? bytes(t.memory_bytes) : "–"}</td><td>${time(t.last_heartbeat_ms)}</td></tr>`).join("") +
      `</tbody></table>`;
  }, forRoute);
}

// ------------------------------------------------------------------- submit

function submitPage() {
  $("#main").innerHTML = `
    <section class="panel">
      <h2>Submit a job</h2>
      <form id="submit-form">
        <div class="row">
          <label><input type="radio" name="kind" value="job" checked> Job file (YAML or JSON)</label>
          <label><input type="radio" name="kind" value="sql" id="kind-sql"> SQL script</label>
          <label>from a file <input type="file" id="job-file" accept=".yaml,.yml,.json,.sql"></label>
          <label>SQL job name <input type="text" id="sql-name" size="18" placeholder="sql"></label>
        </div>
        <textarea id="job-text" name="job" spellcheck="false" placeholder="name: my-job&#10;operators:&#10;  …"></textarea>
        <div class="row">
          <label>Parallelism <input type="number" id="parallelism" min="1" placeholder="the job's"></label>
          <label>Start from savepoint <input type="text" id="from-savepoint" size="48" placeholder="file:///… or s3://…"></label>
          <label><input type="checkbox" id="allow-non-restored"> allow non-restored state</label>
        </div>
        <div class="row"><button class="primary" type="submit" id="submit-button">Submit</button><span id="submit-error" class="error"></span></div>
      </form>
    </section>`;
  $("#job-file").addEventListener("change", async (e) => {
    const f = e.target.files[0];
    if (!f) return;
    $("#job-text").value = await f.text();
    if (f.name.endsWith(".sql")) {
      $("#kind-sql").checked = true;
      if (!$("#sql-name").value) $("#sql-name").value = f.name.replace(/\.sql$/, "");
    }
  });
  $("#submit-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("#submit-error").textContent = "";
    const sql = $("#kind-sql").checked;
    const body = sql ? { sql: $("#job-text").value } : { job: $("#job-text").value };
    if (sql && $("#sql-name").value.trim()) body.name = $("#sql-name").value.trim();
    const p = $("#parallelism").value;
    if (p) body.parallelism = Number(p);
    const sp = $("#from-savepoint").value.trim();
    if (sp) body.from_savepoint = sp;
    if ($("#allow-non-restored").checked) body.allow_non_restored_state = true;
    $("#submit-button").disabled = true;
    try {
      const r = await api("POST", "/v1/jobs", JSON.stringify(body));
      toast("Job submitted: " + r.id);
      location.hash = "#/jobs/" + r.id;
    } catch (err) {
      if (err instanceof NeedsToken) return tokenPage(err.message);
      $("#submit-error").textContent = err.message;
    } finally {
      $("#submit-button").disabled = false;
    }
  });
}

// ---------------------------------------------------------------------- job

function jobPage(id, forRoute) {
  $("#main").innerHTML = `
    <div class="job-head">
      <div class="title"><h1 id="job-name">…</h1><div class="muted" id="job-meta"></div></div>
      <div class="actions">
        <input type="text" id="savepoint-target" size="30" placeholder="savepoint target (default dir)">
        <button id="btn-savepoint">Savepoint</button>
        <button id="btn-stop">Stop with savepoint</button>
        <button id="btn-cancel" class="danger">Cancel</button>
      </div>
    </div>
    <p id="load-error" class="error"></p>
    <p id="job-failure" class="error"></p>
    <section class="panel"><h2>Graph</h2><div class="graph" id="graph"></div></section>
    <section class="panel"><h2>Subtasks</h2><div id="subtasks"></div></section>
    <div class="split">
      <section class="panel"><h2>Checkpoints</h2><div id="checkpoint-counts" class="muted"></div><div id="checkpoint-chart" class="chart"></div><div id="checkpoints"></div></section>
      <section class="panel"><h2>Exceptions</h2><div id="exceptions"></div></section>
    </div>`;
  $("#btn-cancel").addEventListener("click", async () => {
    if (!confirm("Cancel this job?")) return;
    try { const r = await api("POST", `/v1/jobs/${id}/cancel`); toast("Job " + r.state.toLowerCase()); } catch (e) { toast(e.message, true); }
  });
  $("#btn-savepoint").addEventListener("click", () => savepoint(id, false));
  $("#btn-stop").addEventListener("click", () => savepoint(id, true));
  every(async () => {
    const [job, cps, exc] = await Promise.all([
      api("GET", `/v1/jobs/${id}`), api("GET", `/v1/jobs/${id}/checkpoints`), api("GET", `/v1/jobs/${id}/exceptions`)]);
    $("#load-error").textContent = "";
    renderJob(job);
    renderCheckpoints(cps);
    renderExceptions(exc);
  }, forRoute);
}

async function savepoint(id, stop) {
  const target = $("#savepoint-target").value.trim();
  const what = stop ? "Stop with savepoint" : "Savepoint";
  try {
    const r = await api("POST", `/v1/jobs/${id}/${stop ? "stop" : "savepoints"}`, JSON.stringify(target ? { target } : {}));
    toast(`${what} started`);
    const poll = async () => {
      const s = await api("GET", `/v1/jobs/${id}/savepoints/${r.request_id}`);
      if (s.status === "IN_PROGRESS") return setTimeout(() => poll().catch((e) => toast(e.message, true)), 500);
      if (s.status === "COMPLETED") {
        toast(`${what} completed: ${s.location}`);
        $("#job-name").dataset.savepoint = s.location;
      } else toast(`${what} failed: ${s.failure}`, true);
    };
    await poll();
  } catch (e) {
    toast(`${what}: ${e.message}`, true);
  }
}

function renderJob(job) {
  document.title = `${job.name} · Weir`;
  $("#job-name").innerHTML = `${esc(job.name)} ${badge(job.state)}`;
  $("#job-name").dataset.state = job.state;
  const ended = job.end_time_ms != null;
  $("#job-meta").innerHTML = `${esc(job.id)} · started ${time(job.start_time_ms)} · ${duration((job.end_time_ms || job.now_ms) - job.start_time_ms)}` +
    ` · attempt ${job.attempt}${job.restarts ? ` (${job.restarts} restarts)` : ""}` +
    `${job.restored_from ? ` · restored from checkpoint ${job.restored_from}` : ""} · sink records ${job.sink_records.toLocaleString()}` +
    `${job.bad_records ? ` · <span class="error">bad records ${job.bad_records}</span>` : ""}`;
  for (const b of ["#btn-savepoint", "#btn-stop", "#btn-cancel"]) $(b).disabled = ended || (b !== "#btn-cancel" && job.state !== "RUNNING");
  $("#job-failure").textContent = job.failure || "";
  drawGraph(job);
  $("#subtasks").innerHTML = `<table><thead><tr><th>Vertex</th><th class="num">#</th><th>State</th><th>Task manager</th><th class="num">In/s</th>
    <th class="num">Out/s</th><th class="num">Records in</th><th class="num">Backpressure</th><th>Watermark</th><th class="num">State</th></tr></thead><tbody>` +
    job.vertices.flatMap((v) => v.subtasks.map((s) => `<tr><td>${esc(v.name)}</td><td class="num">${s.subtask + 1}/${v.parallelism}</td>
      <td>${badge(s.state)}</td><td>${esc(s.task_manager_id)}</td><td class="num">${rate(s.records_in_per_second)}</td>
      <td class="num">${rate(s.records_out_per_second)}</td><td class="num">${s.records_in.toLocaleString()}</td>
      <td class="num">${Math.round(s.backpressure * 100)} %</td><td>${clock(s.watermark_ms)}</td><td class="num">${bytes(s.state_bytes)}</td></tr>`)).join("") +
    `</tbody></table>`;
}

// Vertices in columns by their distance from the sources, links as curves.
function drawGraph(job) {
  const W = 270, GAPX = 100, GAPY = 24, LINE = 16;
  const layer = new Map();
  const preds = new Map(job.vertices.map((v) => [v.index, []]));
  for (const l of job.links) preds.get(l.to)?.push(l.from);
  const depth = (i, seen = new Set()) => {
    if (layer.has(i)) return layer.get(i);
    if (seen.has(i)) return 0;
    seen.add(i);
    const d = Math.max(-1, ...preds.get(i).map((p) => depth(p, seen))) + 1;
    layer.set(i, d);
    return d;
  };
  job.vertices.forEach((v) => depth(v.index));
  const height = (v) => 16 + LINE * v.operators.length + 4 * LINE + 6;
  const columns = [];
  for (const v of job.vertices) (columns[layer.get(v.index)] ||= []).push(v);
  const pos = new Map();
  let maxH = 0;
  columns.forEach((col, c) => {
    let y = 10;
    for (const v of col) {
      pos.set(v.index, { x: 10 + c * (W + GAPX), y, h: height(v) });
      y += height(v) + GAPY;
    }
    maxH = Math.max(maxH, y);
  });
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", 20 + columns.length * (W + GAPX) - GAPX);
  svg.setAttribute("height", maxH);
  svg.innerHTML = `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
    <path d="M 0 0 L 10 5 L 0 10 z" fill="#9aa4b8"/></marker></defs>`;
  for (const l of job.links) {
    const a = pos.get(l.from), b = pos.get(l.to);
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2, mx = (x1 + x2) / 2;
    const label = l.partitioning === "HASH" && l.key.length ? `HASH(${l.key.join(", ")})` : l.partitioning;
    svg.insertAdjacentHTML("beforeend", `<path class="link" marker-end="url(#arrow)" d="M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2 - 2} ${y2}"/>
      <text class="link-label" x="${mx}" y="${Math.min(y1, y2) - 8}" text-anchor="middle">${esc(label)}${l.output ? " · " + esc(l.output) : ""}</text>`);
  }
  for (const v of job.vertices) {
    const p = pos.get(v.index);
    const bp = v.backpressure, color = bp > 0.5 ? "var(--bad)" : bp > 0.1 ? "var(--warn)" : "var(--ok)";
    const stateColor = { RUNNING: "var(--ok)", FAILED: "var(--bad)", FINISHED: "#4a6fa5" }[v.state] || "var(--warn)";
    const x = p.x + 14;
    let y = p.y + 20;
    let body = `<rect class="box" x="${p.x}" y="${p.y}" width="${W}" height="${p.h}" rx="6"/>
      <rect x="${p.x}" y="${p.y}" width="4" height="${p.h}" rx="2" fill="${stateColor}"/>`;
    for (const o of v.operators) {
      body += `<text class="op" data-uid="${esc(o.uid)}" x="${x}" y="${y}">${esc(o.uid)}<tspan class="kind" dx="8">${esc(o.kind)}</tspan></text>`;
      y += LINE;
    }
    y += 2;
    body += `<text class="meta" x="${x}" y="${y}">parallelism ${v.parallelism} · ${esc(v.state)}</text>`;
    body += `<text class="rate" data-vertex="${v.index}" data-rate="${v.records_out_per_second || v.records_in_per_second}" x="${x}" y="${y + LINE}">` +
      `${rate(v.records_in_per_second)} in/s · ${rate(v.records_out_per_second)} out/s</text>`;
    body += `<text class="meta" x="${x}" y="${y + 2 * LINE}">watermark ${v.watermark_ms == null ? "–" : clock(v.watermark_ms)}</text>`;
    const by = y + 3 * LINE;
    body += `<text class="meta" x="${x}" y="${by}">backpressure ${Math.round(bp * 100)} %</text>
      <rect class="bp-track" x="${x + 120}" y="${by - 8}" width="${W - 150}" height="8" rx="3"/>
      <rect x="${x + 120}" y="${by - 8}" width="${Math.max(2, (W - 150) * bp)}" height="8" rx="3" fill="${color}"/>`;
    svg.insertAdjacentHTML("beforeend", `<g class="vertex" data-vertex="${v.index}">${body}</g>`);
  }
  $("#graph").replaceChildren(svg);
}

function renderCheckpoints(c) {
  $("#checkpoint-counts").textContent = `${c.counts.completed} completed · ${c.counts.failed} failed · ${c.counts.in_progress} in progress · ` +
    `${c.counts.savepoints} savepoints${c.latest.restored ? ` · restored from ${c.latest.restored}` : ""}`;
  const recent = c.history.slice(-30);
  const max = Math.max(1, ...recent.map((h) => h.duration_ms));
  const W = 420, H = 70, bw = W / 30;
  $("#checkpoint-chart").innerHTML = recent.length === 0 ? "" : `<svg width="${W}" height="${H + 14}">` +
    recent.map((h, i) => {
      const bh = Math.max(2, (h.duration_ms / max) * H);
      return `<rect class="${esc(h.status)}" x="${i * bw + 1}" y="${H - bh}" width="${bw - 2}" height="${bh}"><title>#${h.id} ${h.status} ${duration(h.duration_ms)} ${bytes(h.size_bytes)}</title></rect>`;
    }).join("") + `<text x="0" y="${H + 12}">duration of the last ${recent.length} (max ${duration(max)})</text></svg>`;
  $("#checkpoints").innerHTML = c.history.length === 0 ? `<p class="muted">No checkpoints yet.</p>` :
    `<table><thead><tr><th class="num">Id</th><th>Status</th><th>Triggered</th><th class="num">Duration</th><th class="num">Size</th><th class="num">Acks</th></tr></thead><tbody>` +
    c.history.slice(-12).reverse().map((h) => `<tr><td class="num">${h.id}${h.savepoint ? " (savepoint)" : ""}</td><td>${badge(h.status)}</td>
      <td>${time(h.trigger_time_ms)}</td><td class="num">${duration(h.duration_ms)}</td><td class="num">${bytes(h.size_bytes)}</td>
      <td class="num">${h.acknowledged}/${h.subtasks}</td></tr>` + (h.failure ? `<tr><td></td><td colspan="5" class="wrap error">${esc(h.failure)}</td></tr>` : "")).join("") +
    `</tbody></table>`;
}

function renderExceptions(e) {
  $("#exceptions").innerHTML = e.exceptions.length === 0 ? `<p class="muted">No failures.</p>` : e.exceptions.map((x) => `
    <div class="exception ${x.restarted ? "restarted" : ""}"><div><b>${time(x.time_ms)}</b> · attempt ${x.attempt}
      ${x.task ? " · " + esc(x.task) : ""}${x.task_manager_id ? " · on " + esc(x.task_manager_id) : ""} · ${x.restarted ? "restarted" : "job failed"}</div>
      <pre>${esc(x.message)}</pre></div>`).join("");
}

window.addEventListener("hashchange", navigate);
navigate();
