// The lineage graph drawn as SVG: steps, artifacts and registered models in data-flow columns, each
// node a link (a step to its run, an artifact to its own lineage, a model to its page), so a graph
// is followed upstream to the data and downstream to the model from any node.
"use strict";
// svg(tag, attrs, ...children) is charts.js's


// nodes and edges of several lineage graphs (e.g. a run's upstream and downstream), merged by id
function mergeLineage(graphs) {
  const nodes = new Map();
  const edges = new Map();
  for (const g of graphs) {
    for (const a of g.artifacts) nodes.set(a.id, { id: a.id, kind: "artifact", label: (a.python_type.split(".").pop() || a.type), sub: a.id.slice(-8), href: "#/lineage/" + encodeURIComponent(a.id) });
    for (const s of g.steps) nodes.set(s.id, { id: s.id, kind: "step", label: s.name, sub: s.status + (s.cached_from ? " (cached)" : ""), href: "#/runs/" + encodeURIComponent(s.run_id), run: s.run_id });
    for (const m of g.models || []) {
      const id = "model:" + m.name + ":" + m.version;
      nodes.set(id, { id, kind: "model", label: m.name + " v" + m.version, sub: m.aliases.join(", "), href: "#/models/" + encodeURIComponent(m.name) });
      edges.set(m.artifact_id + ">" + id, { from: m.artifact_id, to: id, name: "registered" });
    }
    for (const e of g.edges) edges.set(e.from + ">" + e.to, e);
  }
  return { nodes, edges: [...edges.values()].filter((e) => nodes.has(e.from) && nodes.has(e.to)) };
}

// columns by longest path from the sources (a DAG: lineage never loops)
function layers(nodes, edges) {
  const depth = new Map([...nodes.keys()].map((id) => [id, 0]));
  for (let pass = 0; pass < nodes.size; pass++) {
    let changed = false;
    for (const e of edges) {
      if (depth.get(e.to) < depth.get(e.from) + 1) { depth.set(e.to, depth.get(e.from) + 1); changed = true; }
    }
    if (!changed) break;
  }
  return depth;
}

function lineageSvg(graphs, options = {}) {
  const { nodes, edges } = mergeLineage(graphs);
  if (!nodes.size) return h("p", { class: "muted", id: "lineage-graph" }, "no lineage recorded");
  const depth = layers(nodes, edges);
  const columns = [];
  for (const [id, d] of depth) (columns[d] = columns[d] || []).push(id);
  const W = 160, H = 44, GX = 36, GY = 14, PAD = 10;
  const pos = new Map();
  columns.forEach((ids, c) => ids.sort().forEach((id, r) => pos.set(id, { x: PAD + c * (W + GX), y: PAD + r * (H + GY) })));
  const width = PAD * 2 + columns.length * (W + GX) - GX;
  const height = PAD * 2 + Math.max(...columns.map((c) => c.length)) * (H + GY) - GY;
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#98a2b3" }));
  const lines = edges.map((e) => {
    const a = pos.get(e.from), b = pos.get(e.to);
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    return svg("path", { class: "lineage-edge", d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`, "marker-end": "url(#arrow)" },
      svg("title", {}, e.name));
  });
  const boxes = [...nodes.values()].map((n) => {
    const p = pos.get(n.id);
    const current = (options.run && n.run === options.run) || n.id === options.root;
    return svg("a", { href: n.href, class: "lineage-node " + n.kind + (current ? " current" : ""), "data-kind": n.kind, "data-id": n.id },
      svg("title", {}, n.kind + " " + n.id),
      svg("rect", { x: p.x, y: p.y, width: W, height: H, rx: 6 }),
      svg("text", { x: p.x + 8, y: p.y + 18, class: "label" }, (n.kind === "step" ? "▶ " : n.kind === "model" ? "◆ " : "") + n.label.slice(0, 20)),
      svg("text", { x: p.x + 8, y: p.y + 35, class: "sub" }, n.sub.slice(0, 24)));
  });
  return svg("svg", { id: "lineage-graph", class: "lineage-graph", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "lineage graph" },
    svg("defs", {}, marker), ...lines, ...boxes);
}
