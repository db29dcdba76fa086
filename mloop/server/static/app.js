// mloop team server UI: hash routes, the REST API with a Bearer token kept in sessionStorage.
// Every value from the server is put in the page with textContent (never innerHTML).
"use strict";

const API = "/api/v1";
const main = () => document.getElementById("main");

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const token = () => sessionStorage.getItem("mloop.token");

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.body ? { "Content-Type": "application/json" } : {}) };
  if (token()) headers.Authorization = "Bearer " + token();
  const response = await fetch(API + path, { ...options, headers });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    sessionStorage.removeItem("mloop.token");
    location.hash = "#/login";
    throw new Error((body.error && body.error.message) || "unauthorized");
  }
  if (!response.ok) throw new Error((body.error && body.error.message) || "HTTP " + response.status);
  return body;
}

// an HTML report's text (the API answers reports as text/html)
async function apiText(path) {
  const response = await fetch(API + path, { headers: { Authorization: "Bearer " + token() } });
  if (response.status === 401) { sessionStorage.removeItem("mloop.token"); location.hash = "#/login"; }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error((body.error && body.error.message) || "HTTP " + response.status);
  }
  return response.text();
}

const REPORT_TYPES = ["DriftReport", "Statistics", "MonitorReport"];
const isReport = (a) => REPORT_TYPES.includes((a.python_type || "").split(".").pop());

function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 6000);
}

const when = (iso) => (iso ? iso.replace("T", " ").slice(0, 19) : "-");
const secs = (s) => (s === null || s === undefined ? "-" : s < 1 ? (s * 1000).toFixed(0) + " ms" : s.toFixed(2) + " s");
const status = (s) => h("span", { class: "status-" + s }, s);
const table = (cols, rows) =>
  h("table", {}, h("thead", {}, h("tr", {}, cols.map((c) => (c instanceof Node ? c : h("th", {}, c))))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: cols.length, class: "muted" }, "nothing here"))));
const params = (q) => new URLSearchParams(q || "");

// routes ------------------------------------------------------------------------------------------

function login() {
  const input = h("input", { type: "password", id: "token", placeholder: "mloop_…", autocomplete: "off" });
  const error = h("p", { class: "error", id: "login-error" });
  const form = h("form", { class: "card login", id: "login-form", onsubmit: async (e) => {
    e.preventDefault();
    sessionStorage.setItem("mloop.token", input.value.trim());
    route.who = null;
    try { await api("/whoami"); location.hash = "#/runs"; }
    catch (err) { sessionStorage.removeItem("mloop.token"); error.textContent = err.message; }
  } },
    h("h1", {}, "Log in"),
    h("p", { class: "muted" }, "Paste a token made with: mloop server token create --role viewer --name you"),
    h("label", {}, "Token", input), h("p", {}, h("button", { type: "submit" }, "Log in")), error);
  return [form];
}

async function runs(query) {
  const q = params(query);
  const conditions = q.getAll("where");
  const form = h("form", { class: "filters", id: "run-filters", onsubmit: (e) => {
    e.preventDefault();
    const f = new FormData(e.target), next = new URLSearchParams();
    for (const k of ["pipeline", "status", "trigger", "since", "until", "sort"]) if (f.get(k)) next.set(k, f.get(k));
    for (const w of String(f.get("where") || "").split(/\s*[;,]\s*/)) if (w) next.append("where", w);
    location.hash = "#/runs?" + next.toString();
  } },
    h("label", {}, "pipeline", h("input", { name: "pipeline", value: q.get("pipeline") || "" })),
    h("label", {}, "status", h("select", { name: "status" }, ["", "running", "succeeded", "failed", "stopped"].map(
      (s) => h("option", { value: s, selected: q.get("status") === s }, s || "any")))),
    h("label", {}, "trigger", h("input", { name: "trigger", value: q.get("trigger") || "", size: 10 })),
    h("label", {}, "conditions (metric.acc>0.9; param.lr=0.1)", h("input", { name: "where", id: "where", value: conditions.join("; "), size: 34 })),
    h("label", {}, "since", h("input", { name: "since", value: q.get("since") || "", placeholder: "2026-01-01", size: 11 })),
    h("label", {}, "until", h("input", { name: "until", value: q.get("until") || "", size: 11 })),
    h("label", {}, "sort", h("input", { name: "sort", id: "sort", value: q.get("sort") || "-created_at", size: 16 })),
    h("button", { type: "submit" }, "Filter"));
  const page = await api("/runs?" + q.toString());
  const sortKey = (q.get("sort") || "-created_at").replace(/^-/, "");
  const sortBy = (key) => () => {
    const next = params(query); next.delete("cursor");
    next.set("sort", (q.get("sort") || "-created_at") === "-" + key ? key : "-" + key);
    location.hash = "#/runs?" + next.toString();
  };
  const cols = ["", "run", "pipeline", "status", "trigger",
    h("th", { class: "sortable", onclick: sortBy("created_at") }, "started"), "duration", "params"];
  if (sortKey.startsWith("metric.")) cols.push(h("th", { class: "sortable", onclick: sortBy(sortKey) }, sortKey));
  const rows = page.runs.map((r) => h("tr", {},
    h("td", {}, h("input", { type: "checkbox", class: "compare-pick", "data-run": r.id, "aria-label": "compare " + r.id })),
    h("td", { class: "mono" }, h("a", { href: "#/runs/" + encodeURIComponent(r.id) }, r.id)),
    h("td", {}, r.pipeline), h("td", {}, status(r.status)), h("td", {}, r.trigger),
    h("td", {}, when(r.created_at)), h("td", {}, secs(r.duration_s)),
    h("td", { class: "mono" }, Object.entries(r.params).slice(0, 5).map(([k, v]) => k + "=" + JSON.stringify(v)).join(" ")),
    sortKey.startsWith("metric.") ? h("td", {}, r.sort_value === null ? "-" : Number(r.sort_value).toPrecision(4)) : null));
  const compare = h("button", { type: "button", class: "secondary", id: "compare-selected", onclick: () => {
    const ids = [...document.querySelectorAll("input.compare-pick:checked")].map((c) => c.dataset.run);
    if (ids.length < 2) { toast("pick two or more runs to compare"); return; }
    location.hash = "#/compare?ids=" + ids.map(encodeURIComponent).join(",");
  } }, "Compare selected");
  const pager = h("div", { class: "pager" }, compare,
    q.get("cursor") ? h("button", { class: "secondary", type: "button", onclick: () => history.back() }, "‹ Previous") : null,
    page.next_cursor ? h("button", { class: "secondary", type: "button", id: "next-page", onclick: () => {
      const next = params(query); next.set("cursor", page.next_cursor); location.hash = "#/runs?" + next.toString();
    } }, "Next ›") : null);
  return [h("h1", {}, "Runs"), form, table(cols, rows), pager];
}

async function runPage(id) {
  const body = await api("/runs/" + encodeURIComponent(id));
  const [charts, up, down] = await Promise.all([
    metricCharts(body.run.id, Object.keys(body.metrics)),
    api("/lineage/" + encodeURIComponent(body.run.id) + "?direction=upstream").catch(() => null),
    api("/lineage/" + encodeURIComponent(body.run.id) + "?direction=downstream").catch(() => null),
  ]);
  const r = body.run;
  const steps = table(["step", "status", "duration", "cache hit", "error"], body.steps.map((s) => h("tr", {},
    h("td", {}, s.name), h("td", {}, status(s.status)), h("td", {}, secs(s.duration_s)),
    h("td", {}, s.cache_hit ? "yes (from " + s.cached_from + ")" : "no"),
    h("td", { class: "error" }, s.error_type ? s.error_type + ": " + s.error_message : ""))));
  const params_ = table(["param", "value"], Object.entries(body.params).map(([k, v]) =>
    h("tr", {}, h("td", {}, k), h("td", { class: "mono" }, JSON.stringify(v)))));
  const metrics = table(["metric", "latest", "step"], Object.entries(body.metrics).map(([k, m]) =>
    h("tr", {}, h("td", {}, k), h("td", {}, Number(m.value).toPrecision(5)), h("td", {}, m.step_name || "-"))));
  const artifacts = table(["step", "in/out", "name", "type", "size", "artifact"], body.artifacts.map((a) => h("tr", {},
    h("td", {}, a.step), h("td", {}, a.kind), h("td", {}, a.name), h("td", {}, a.python_type.split(".").pop() || a.type),
    h("td", {}, a.size + " B"),
    h("td", { class: "mono" }, h("a", { href: "#/lineage/" + encodeURIComponent(a.id) }, a.id), " ",
      h("a", { href: "#", onclick: (e) => { e.preventDefault(); download(a.id); } }, "download"),
      isReport(a) ? [" ", h("a", { href: "#/reports/artifact/" + encodeURIComponent(a.id), class: "report-link" }, "open report")] : null))));
  const models = body.models.map((m) => h("li", {},
    h("a", { href: "#/models/" + encodeURIComponent(m.name), class: "model-link" }, m.name + " v" + m.version),
    " ", m.aliases.map((x) => h("span", { class: "pill" }, x))));
  return [
    h("h1", {}, "Run ", h("span", { class: "mono" }, r.id)),
    h("div", { class: "card" },
      h("div", {}, "pipeline ", h("b", {}, r.pipeline), " · ", status(r.status), " · trigger ", r.trigger,
        " · started ", when(r.created_at), " UTC · ", secs(r.duration_s)),
      h("div", { class: "muted" }, "code ", r.code_commit || "(no commit)", " · hash ", (r.code_hash || "").slice(0, 16)),
      r.error ? h("div", { class: "error" }, r.error) : null,
      body.trigger_event ? h("div", {}, "started by trigger ", body.trigger_event.trigger, " (", body.trigger_event.event_key, ")") : null,
      h("div", {}, h("a", { href: "#/lineage/" + encodeURIComponent(r.id), id: "run-lineage" }, "lineage of this run"))),
    h("h2", {}, "Lineage ", h("span", { class: "muted" }, "(data flows left to right; click a node: a step opens its run, an artifact its lineage, a model its page)")),
    h("div", { class: "lineage-box" }, lineageSvg([up, down].filter(Boolean), { run: r.id })),
    h("h2", {}, "Steps"), steps,
    h("div", { class: "grid" }, h("div", {}, h("h2", {}, "Params"), params_), h("div", {}, h("h2", {}, "Metrics"), metrics)),
    ...(charts.length ? [h("h2", {}, "Metric charts"), h("div", { class: "charts", id: "metric-charts" }, charts)] : []),
    h("h2", {}, "Artifacts"), artifacts,
    h("h2", {}, "Models registered from this run"), models.length ? h("ul", {}, models) : h("p", { class: "muted" }, "none"),
  ];
}

// a chart per metric with more than one point (the first 12 metrics), step on the x axis
async function metricCharts(runId, keys) {
  const series = await Promise.all(keys.slice(0, 12).map((k) =>
    api("/runs/" + encodeURIComponent(runId) + "/metrics/" + encodeURIComponent(k)).catch(() => ({ key: k, points: [] }))));
  return series.filter((s) => s.points.length > 1).map((s) => h("figure", { class: "metric-chart" },
    lineChart({ [s.key]: s.points.map((p) => p.value) }, { xs: s.points.map((p) => "step " + p.step), width: 420, height: 190 }),
    h("figcaption", {}, s.key + " (" + s.points.length + " points)")));
}

// runs side by side: what differs between them is highlighted
async function compareRuns(query) {
  const ids = (params(query).get("ids") || "").split(",").filter(Boolean).slice(0, 8);
  if (ids.length < 2) return [h("h1", {}, "Compare runs"), h("p", { class: "muted" }, "Pick two or more runs in the runs table.")];
  const bodies = await Promise.all(ids.map((id) => api("/runs/" + encodeURIComponent(id))));
  const row = (label, values, cls) => {
    const shown = values.map((v) => (v === undefined ? "-" : typeof v === "number" ? v.toPrecision(5) : typeof v === "string" ? v : JSON.stringify(v)));
    const differs = new Set(shown).size > 1;
    return h("tr", { class: (differs ? "differs " : "") + (cls || "") }, h("th", {}, label), shown.map((v) => h("td", { class: "mono" }, v)));
  };
  const union = (pick) => [...new Set(bodies.flatMap((b) => Object.keys(pick(b))))].sort();
  const stepNames = [...new Set(bodies.flatMap((b) => b.steps.map((s) => s.name)))];
  const rows = [
    row("pipeline", bodies.map((b) => b.run.pipeline)), row("status", bodies.map((b) => b.run.status)),
    row("trigger", bodies.map((b) => b.run.trigger)), row("started", bodies.map((b) => when(b.run.created_at))),
    row("duration", bodies.map((b) => secs(b.run.duration_s))), row("code", bodies.map((b) => b.run.code_commit || (b.run.code_hash || "").slice(0, 12))),
    ...union((b) => b.params).map((k) => row("param " + k, bodies.map((b) => b.params[k]), "param")),
    ...union((b) => b.metrics).map((k) => row("metric " + k, bodies.map((b) => b.metrics[k] && b.metrics[k].value), "metric")),
    ...stepNames.map((n) => row("step " + n, bodies.map((b) => {
      const s = b.steps.find((x) => x.name === n);
      return s ? s.status + " " + secs(s.duration_s) : undefined;
    }), "step")),
  ];
  const head = h("tr", {}, h("th", {}, ""), bodies.map((b) => h("th", { class: "mono" }, h("a", { href: "#/runs/" + encodeURIComponent(b.run.id) }, b.run.id))));
  return [h("h1", {}, "Compare " + bodies.length + " runs"), h("p", { class: "muted" }, "Highlighted rows differ."),
    h("table", { class: "compare", id: "compare" }, h("thead", {}, head), h("tbody", {}, rows))];
}

async function download(id) {
  const response = await fetch(API + "/artifacts/" + encodeURIComponent(id) + "/content", { headers: { Authorization: "Bearer " + token() } });
  if (!response.ok) { toast("download refused: HTTP " + response.status); return; }
  const url = URL.createObjectURL(await response.blob());
  h("a", { href: url, download: id }).click();
  URL.revokeObjectURL(url);
}

async function lineagePage(ref, query) {
  const direction = params(query).get("direction") || "upstream";
  const other = direction === "upstream" ? "downstream" : "upstream";
  const [g, g2] = await Promise.all([
    api("/lineage/" + encodeURIComponent(ref) + "?direction=" + direction),
    api("/lineage/" + encodeURIComponent(ref) + "?direction=" + other).catch(() => null),
  ]);
  const label = {};
  for (const a of g.artifacts) label[a.id] = "artifact " + (a.python_type.split(".").pop() || a.type) + " " + a.id.slice(-6);
  for (const s of g.steps) label[s.id] = "step " + s.name + " (" + s.status + ")";
  const node = (id) => {
    const isArtifact = g.artifacts.some((a) => a.id === id);
    const step = g.steps.find((s) => s.id === id);
    const href = isArtifact ? "#/lineage/" + encodeURIComponent(id) + "?direction=" + direction
      : step ? "#/runs/" + encodeURIComponent(step.run_id) : "#/lineage/" + encodeURIComponent(id);
    return h("a", { href }, label[id] || id);
  };
  return [
    h("h1", {}, "Lineage of ", h("span", { class: "mono" }, ref), " (" + direction + ")"),
    h("div", { class: "lineage-box" }, lineageSvg([g, g2].filter(Boolean), { root: g.root })),
    h("p", {}, "Lists below: ", direction, " · ", h("a", { href: "#/lineage/" + encodeURIComponent(ref) + "?direction=" + other }, "show " + other)),
    h("h2", {}, "Models"),
    g.models.length ? h("ul", {}, g.models.map((m) => h("li", {},
      h("a", { href: "#/models/" + encodeURIComponent(m.name), class: "model-link" }, m.name + " v" + m.version),
      " ", m.aliases.map((x) => h("span", { class: "pill" }, x))))) : h("p", { class: "muted" }, "no registered model in this graph"),
    h("h2", {}, "Runs"),
    h("ul", {}, g.runs.map((r) => h("li", {}, h("a", { href: "#/runs/" + encodeURIComponent(r.id) }, r.pipeline + " " + r.id)))),
    h("h2", {}, "Edges (data flows left to right)"),
    h("ul", { class: "lineage" }, g.edges.map((e) => h("li", {}, node(e.from), " → ", node(e.to), h("span", { class: "muted" }, " " + e.name)))),
  ];
}

async function reportsPage() {
  const body = await api("/reports");
  return [h("h1", {}, "Reports"),
    h("h2", {}, "Monitoring (latest per model)"),
    table(["model", "recorded", "monitor run"], body.monitoring.map((m) => h("tr", {},
      h("td", {}, h("a", { href: "#/reports/monitoring/" + encodeURIComponent(m.model), class: "report-link" }, m.model)),
      h("td", {}, when(m.at)), h("td", { class: "mono" }, h("a", { href: "#/runs/" + encodeURIComponent(m.run_id) }, m.run_id))))),
    h("h2", {}, "Report files in the workspace"),
    h("p", { class: "muted" }, "mloop demo writes loop-report.html here; write others with --html .mloop/reports/NAME.html (backtest, monitor, drift)."),
    table(["file", "size", "modified"], body.files.map((f) => h("tr", {},
      h("td", {}, h("a", { href: "#/reports/file/" + encodeURIComponent(f.name), class: "report-link" }, f.name)),
      h("td", {}, Math.round(f.size / 1024) + " KiB"), h("td", {}, when(new Date(f.modified * 1000).toISOString()))))),
    h("p", { class: "muted" }, "Drift and statistics reports recorded by runs open from the run's artifacts (open report).")];
}

// a report opened in place: its HTML in a sandboxed frame (no script, no navigation, no requests)
async function reportView(kind, ref, query) {
  const path = { monitoring: "/reports/monitoring/", artifact: "/reports/artifacts/", file: "/reports/files/" }[kind];
  if (!path) return [h("h1", {}, "Not found"), h("p", {}, "No report kind " + kind)];
  const run = params(query).get("run_id");
  const html = await apiText(path + encodeURIComponent(ref) + (run ? "?run_id=" + encodeURIComponent(run) : ""));
  const back = kind === "monitoring" ? h("a", { href: "#/models/" + encodeURIComponent(ref) }, "model " + ref)
    : kind === "artifact" ? h("a", { href: "#/lineage/" + encodeURIComponent(ref) }, "lineage of the artifact")
    : h("a", { href: "#/reports" }, "all reports");
  return [h("h1", {}, "Report: ", kind, " ", h("span", { class: "mono" }, ref)), h("p", {}, back),
    h("iframe", { class: "report", id: "report-frame", sandbox: "", srcdoc: html, title: kind + " report " + ref })];
}

async function models() {
  const body = await api("/models");
  return [h("h1", {}, "Models"), table(["model", "versions", "aliases"], body.models.map((m) => h("tr", {},
    h("td", {}, h("a", { href: "#/models/" + encodeURIComponent(m.name) }, m.name)), h("td", {}, m.last_version),
    h("td", {}, Object.entries(m.aliases).map(([a, v]) => h("span", { class: "pill" }, a + " → v" + v))))))];
}

async function triggers() {
  const [config, events] = await Promise.all([api("/triggers"), api("/triggers/events?limit=200")]);
  return [h("h1", {}, "Triggers and scheduler"),
    table(["trigger", "kind", "pipeline", "evaluated", "fired", "next due", "last result"], config.triggers.map((t) => h("tr", {},
      h("td", {}, t.name), h("td", {}, t.kind), h("td", { class: "mono" }, t.pipeline), h("td", {}, when(t.state.evaluated_at)),
      h("td", {}, when(t.state.fired_at)), h("td", {}, when(t.state.next_due_at)), h("td", {}, t.state.last_result)))),
    h("h2", {}, "Events"),
    table(["fired", "trigger", "kind", "status", "evidence", "run"], events.events.map((e) => h("tr", {},
      h("td", {}, when(e.fired_at)), h("td", {}, e.trigger), h("td", {}, e.kind), h("td", {}, status(e.status)),
      h("td", { class: "mono" }, JSON.stringify(e.evidence).slice(0, 200)),
      h("td", { class: "mono" }, e.run_id ? h("a", { href: "#/runs/" + encodeURIComponent(e.run_id) }, e.run_id) : "-"))))];
}

async function audit() {
  const body = await api("/audit?limit=200");
  return [h("h1", {}, "Audit trail"), table(["when", "who", "action", "target", "reason", "details"], body.entries.map((e) => h("tr", { class: "audit-entry" },
    h("td", {}, when(e.at)), h("td", {}, e.who), h("td", {}, e.action), h("td", { class: "mono" }, e.target),
    h("td", {}, e.reason), h("td", { class: "mono" }, JSON.stringify(e.details)))))];
}

// router ------------------------------------------------------------------------------------------

async function route() {
  // a page still loading when the address changes again must not replace the newer page
  const mine = (route.seq = (route.seq || 0) + 1);
  const [path, query] = (location.hash.slice(1) || "/runs").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  document.getElementById("logout").hidden = !token();
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === parts[0]);
  if (!token() && parts[0] !== "login") { location.hash = "#/login"; return; }
  if (token() && !route.who) route.who = await api("/whoami").catch(() => null);
  if (!token()) route.who = null;
  document.getElementById("who").textContent = route.who ? route.who.name + " (" + route.who.role + ")" : "";
  let view;
  try {
    if (parts[0] === "login") view = login();
    else if (parts[0] === "runs" && parts[1]) view = await runPage(parts[1]);
    else if (parts[0] === "runs") view = await runs(query);
    else if (parts[0] === "lineage" && parts[1]) view = await lineagePage(parts[1], query);
    else if (parts[0] === "compare") view = await compareRuns(query);
    else if (parts[0] === "models" && parts[2] === "evaluations" && parts[3]) view = await evaluationsPage(parts[1], parts[3]);
    else if (parts[0] === "models" && parts[1]) view = await modelPage(parts[1]);
    else if (parts[0] === "models") view = await models();
    else if (parts[0] === "triggers") view = await triggers();
    else if (parts[0] === "audit") view = await audit();
    else if (parts[0] === "reports" && parts[1] && parts[2]) view = await reportView(parts[1], parts[2], query);
    else if (parts[0] === "reports") view = await reportsPage();
    else view = [h("h1", {}, "Not found"), h("p", {}, "No page at " + path)];
  } catch (err) {
    view = [h("h1", {}, "Error"), h("p", { class: "error", id: "page-error" }, err.message)];
  }
  if (mine !== route.seq) return;
  main().replaceChildren(...view);
  main().dataset.page = parts[0] || "runs";
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem("mloop.token"); route.who = null; location.hash = "#/login";
  });
  route();
});
