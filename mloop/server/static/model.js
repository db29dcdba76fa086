// The model page (versions, aliases and their history, rollout, live metric over time with the
// deployments marked, drift per feature as a heat map, slices) and a version's evaluations.
"use strict";

const HEADLINE = ["accuracy", "roc_auc", "f1", "rmse", "mae", "r2"];
const num = (x) => (typeof x === "number" ? x.toPrecision(4) : x === null || x === undefined ? "-" : JSON.stringify(x));

async function modelPage(name) {
  const enc = encodeURIComponent(name);
  const [body, rollout, monitoring] = await Promise.all([
    api("/models/" + enc), api("/models/" + enc + "/rollout"),
    api("/models/" + enc + "/monitoring").catch((err) => ({ missing: err.message })),
  ]);
  const promote = (version) => async () => {
    const alias = prompt("Move which alias to v" + version + "?", "production");
    if (!alias) return;
    const reason = prompt("Why? (recorded in the audit trail)");
    if (!reason) return;
    try {
      await api("/models/" + enc + "/aliases/" + encodeURIComponent(alias), { method: "POST", body: JSON.stringify({ version, reason }) });
      toast(alias + " now points at v" + version);
      route();
    } catch (err) { toast("refused: " + err.message); }
  };
  const versions = table(["version", "status", "aliases", "metrics", "run", "created", "by", ""], body.versions.map((v) => h("tr", {},
    h("td", {}, "v" + v.version), h("td", {}, v.status), h("td", {}, v.aliases.map((a) => h("span", { class: "pill" }, a))),
    h("td", { class: "mono" }, Object.entries(v.metrics).slice(0, 4).map(([k, x]) => k + "=" + num(x)).join(" ")),
    h("td", { class: "mono" }, v.run_id ? h("a", { href: "#/runs/" + encodeURIComponent(v.run_id) }, v.run_id) : "-"),
    h("td", {}, when(v.created_at)), h("td", {}, v.created_by),
    h("td", {}, h("button", { type: "button", class: "promote", "data-version": v.version, onclick: promote(v.version) }, "Promote…"),
      " ", h("a", { href: "#/lineage/" + encodeURIComponent(name + ":" + v.version) }, "lineage"),
      " ", h("a", { href: "#/models/" + enc + "/evaluations/" + v.version, class: "evaluations-link" }, "evaluations")))));
  const historyRows = body.history.slice().reverse().map((e) => h("tr", {},
    h("td", {}, when(e.at)), h("td", {}, e.alias), h("td", {}, e.action),
    h("td", {}, e.from_version ? "v" + e.from_version : "-"), h("td", {}, e.to_version ? "v" + e.to_version : "-"),
    h("td", {}, e.who), h("td", {}, e.reason)));
  return [h("h1", {}, "Model ", name), rolloutCard(name, rollout), h("h2", {}, "Versions"), versions,
    h("h2", {}, "Alias history"), table(["when", "alias", "action", "from", "to", "who", "reason"], historyRows),
    ...monitoringSection(name, monitoring)];
}

function rolloutCard(name, state) {
  const decide = (verb) => async () => {
    const reason = prompt((verb === "approve" ? "Approve" : "Reject") + " v" + state.pending.version + ": why? (audited)");
    if (!reason) return;
    try {
      await api("/models/" + encodeURIComponent(name) + "/rollout/" + verb,
        { method: "POST", body: JSON.stringify({ version: state.pending.version, reason }) });
      toast("v" + state.pending.version + (verb === "approve" ? " approved: production now" : " rejected"));
      route();
    } catch (err) { toast("refused: " + err.message); }
  };
  const policy = state.policy ? state.policy.mode + " rollout (" + state.policy.metric + ")" : "no rollout policy";
  return h("div", { class: "card", id: "rollout" },
    h("div", {}, h("b", {}, policy), " · production ", state.production ? "v" + state.production : "-",
      " · canary ", state.canary ? "v" + state.canary : "-"),
    state.pending ? h("div", { class: "pending" }, "v" + state.pending.version + " waits for a decision ",
      h("button", { type: "button", id: "approve-rollout", onclick: decide("approve") }, "Approve…"), " ",
      h("button", { type: "button", class: "secondary", id: "reject-rollout", onclick: decide("reject") }, "Reject…")) : null,
    state.decisions.slice(0, 5).map((d) => h("div", { class: "muted" },
      when(d.at) + " " + d.action.replace("rollout.", "") + " " + d.target.split(":").slice(1).join(" v") + " by " + d.who + ": " + d.reason)));
}

// where a deployment (alias move) falls among the windows, as a fractional window position
function windowPosition(windows, at) {
  const t = Date.parse(at);
  for (let i = 0; i < windows.length; i++) {
    const start = Date.parse(windows[i].start), end = Date.parse(windows[i].end);
    if (t <= end) return t < start ? i - 0.5 : i + (end > start ? (t - start) / (end - start) : 0) - 0.5;
  }
  return null;
}

function monitoringSection(name, monitoring) {
  if (monitoring.missing) {
    return [h("h2", {}, "Live metrics"), h("p", { class: "muted", id: "no-monitoring" },
      "No monitoring recorded: run mloop monitor " + name + " (" + monitoring.missing + ")")];
  }
  const report = monitoring.report, windows = report.windows;
  const xs = windows.map((w) => "#" + (w.index + 1) + " " + when(w.start).slice(5, 16));
  const shown = HEADLINE.filter((m) => windows.some((w) => typeof w.metrics[m] === "number"));
  const series = Object.fromEntries(shown.map((m) => [m, windows.map((w) => w.metrics[m] ?? null)]));
  series["drift share"] = windows.map((w) => w.drift_share);
  const markers = report.deployments
    .map((d) => ({ x: windowPosition(windows, d.at), label: (d.alias || "") + " v" + (d.version ?? "-"),
      title: when(d.at) + " " + d.action + " " + d.alias + " v" + d.version + ": " + d.reason }))
    .filter((m) => m.x !== null && m.x >= -0.5);
  const features = [...new Set(windows.flatMap((w) => Object.keys(w.feature_scores)))].sort();
  const heat = table(["feature", ...windows.map((w) => "#" + (w.index + 1))], features.map((f) => h("tr", {},
    h("td", {}, f), windows.map((w) => {
      const score = w.feature_scores[f];
      const cell = h("td", { class: "heat" + (w.drifted.includes(f) ? " drifted" : ""), title: f + " in window " + (w.index + 1) }, num(score));
      cell.style.background = heatColor(score);
      return cell;
    }))));
  const slices = [...new Set(windows.flatMap((w) => Object.keys(w.slices)))].sort();
  const primary = shown[0];
  const sliceTable = table(["slice", ...windows.map((w) => "#" + (w.index + 1))], slices.map((s) => h("tr", {},
    h("td", {}, s), windows.map((w) => {
      const m = w.slices[s] || {};
      return h("td", {}, m[primary] === undefined ? "-" : num(m[primary]) + " (" + (m.rows ?? 0) + " rows)");
    }))));
  return [
    h("h2", {}, "Live metrics over time"),
    h("p", { class: "muted" }, windows.length + " window(s) of " + report.window + " · recorded by run ",
      h("a", { href: "#/runs/" + encodeURIComponent(monitoring.run.id) }, monitoring.run.id), " · ",
      h("a", { href: "#/reports/monitoring/" + encodeURIComponent(name) + "?run_id=" + encodeURIComponent(monitoring.run.id), id: "monitoring-report" }, "full report"),
      " · dashed lines: deployments"),
    h("div", { id: "live-metrics" }, lineChart(series, { xs, markers })),
    h("h2", {}, "Drift per feature (score 1 = at the threshold)"), h("div", { id: "drift-heat" }, heat),
    h("h2", {}, "Slices (" + (primary || "metric") + ")"),
    slices.length ? sliceTable : h("p", { class: "muted" }, "no slices were measured (mloop monitor --slice COLUMN)"),
  ];
}

async function evaluationsPage(name, version) {
  const body = await api("/models/" + encodeURIComponent(name) + "/versions/" + encodeURIComponent(version) + "/evaluations");
  const parts = [h("h1", {}, "Evaluations of ", h("a", { href: "#/models/" + encodeURIComponent(name) }, name), " v" + version),
    h("p", { class: "muted" }, "recorded by run ", body.run_id ? h("a", { href: "#/runs/" + encodeURIComponent(body.run_id) }, body.run_id) : "-")];
  if (!body.evaluations.length) parts.push(h("p", { class: "muted" }, "The run that made this version recorded no evaluation."));
  for (const e of body.evaluations) {
    const c = e.content;
    parts.push(h("h2", {}, e.kind + " (step " + e.step + ")"));
    if (e.kind === "evaluation") {
      parts.push(h("p", {}, c.rows + " rows · label " + c.label + " · " + c.task),
        table(["metric", "value"], Object.entries(c.metrics).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, num(v))))));
      const names = Object.keys(c.slices);
      if (names.length) {
        const cols = [...new Set(names.flatMap((s) => Object.keys(c.slices[s])))];
        parts.push(h("h2", {}, "Slices"), table(["slice", ...cols], names.map((s) => h("tr", {},
          h("td", {}, s), cols.map((k) => h("td", {}, num(c.slices[s][k])))))));
      }
    } else if (e.kind === "verdict") {
      parts.push(h("p", { class: c.blessed ? "status-succeeded" : "error" }, c.blessed ? "blessed" : "not blessed"),
        table(["check", "passed", "detail"], c.checks.map((k) => h("tr", {},
          h("td", {}, k.name), h("td", {}, k.passed ? "yes" : "no"), h("td", {}, k.detail)))));
    } else {
      parts.push(table(["field", "value"], Object.entries(c).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, num(v))))));
    }
  }
  return parts;
}
