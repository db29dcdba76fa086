// Charts of the team server UI, drawn as SVG elements (no library, no inline style: the page's CSP
// allows none). Values reach the page only as attributes and text nodes.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#2f6fde", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"];

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const finiteNumber = (v) => typeof v === "number" && Number.isFinite(v);
const short = (v) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(2) : v.toPrecision(3));

// series: {name: [y | null, …]} over the same x positions; xs: a label per position;
// markers: [{x: fractional position, label}] drawn as dashed vertical lines (deployments).
function lineChart(series, { xs = [], markers = [], width = 640, height = 220, cls = "chart" } = {}) {
  const names = Object.keys(series);
  const n = Math.max(1, ...names.map((k) => series[k].length));
  const values = names.flatMap((k) => series[k]).filter(finiteNumber);
  let lo = values.length ? Math.min(...values) : 0, hi = values.length ? Math.max(...values) : 1;
  if (hi === lo) { hi += Math.abs(hi) * 0.05 || 0.5; lo -= Math.abs(lo) * 0.05 || 0.5; }
  const L = 56, R = 12, T = 12, B = 34 + 16 * Math.ceil(names.length / 4), W = width - L - R, H = height - T - B;
  const x = (i) => L + (n === 1 ? W / 2 : (i * W) / (n - 1));
  const y = (v) => T + H - ((v - lo) / (hi - lo)) * H;
  const root = svg("svg", { class: cls, viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
  root.append(
    svg("line", { x1: L, y1: T, x2: L, y2: T + H, stroke: "#98a2b3" }),
    svg("line", { x1: L, y1: T + H, x2: L + W, y2: T + H, stroke: "#98a2b3" }),
    svg("text", { x: L - 6, y: T + 10, "text-anchor": "end", "font-size": 11, fill: "#667085" }, short(hi)),
    svg("text", { x: L - 6, y: T + H, "text-anchor": "end", "font-size": 11, fill: "#667085" }, short(lo)),
    svg("text", { x: L, y: T + H + 14, "font-size": 11, fill: "#667085" }, xs[0] ?? "0"),
    svg("text", { x: L + W, y: T + H + 14, "text-anchor": "end", "font-size": 11, fill: "#667085" }, xs[n - 1] ?? String(n - 1)));
  for (const m of markers) {
    const mx = x(Math.max(0, Math.min(n - 1, m.x)));
    root.append(svg("g", { class: "marker" },
      svg("line", { x1: mx, y1: T, x2: mx, y2: T + H, stroke: "#b06000", "stroke-dasharray": "4 3" }),
      svg("text", { x: mx + 3, y: T + 10, "font-size": 11, fill: "#b06000" }, m.label),
      svg("title", {}, m.title || m.label)));
  }
  names.forEach((name, k) => {
    const color = PALETTE[k % PALETTE.length];
    let run = [];
    const flush = () => {
      if (run.length > 1) root.append(svg("polyline", { points: run.join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
      run = [];
    };
    series[name].forEach((v, i) => {
      if (!finiteNumber(v)) { flush(); return; }
      run.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`);
      root.append(svg("circle", { cx: x(i), cy: y(v), r: 2.5, fill: color },
        svg("title", {}, `${name} ${xs[i] ?? i}: ${v}`)));
    });
    flush();
    const lx = L + (k % 4) * (W / 4), ly = T + H + 30 + 16 * Math.floor(k / 4);
    root.append(svg("rect", { x: lx, y: ly - 9, width: 10, height: 10, fill: color }),
      svg("text", { x: lx + 14, y: ly, "font-size": 12, fill: "#1d2330" }, name));
  });
  return root;
}

// A drift score (1 = at the test's threshold) as a cell colour: green below, red above
// (the same scale as the monitoring report's heat map, monitoring/charts.py).
function heatColor(score) {
  if (!finiteNumber(score)) return "#f5f5f5";
  const t = Math.max(0, Math.min(score / 2, 1));
  return t < 0.5 ? `hsl(140, 45%, ${(92 - t * 30).toFixed(0)}%)` : `hsl(0, 70%, ${(92 - (t - 0.5) * 60).toFixed(0)}%)`;
}
