// Allot console: renders what the server says (GET /v1/plan, /v1/snapshot, /v1/history) and
// posts what-ifs (POST /v1/plans {"overrides": ...}). No framework, no network beyond this origin,
// no planning logic: every number shown comes from those documents.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const POLL_MS = 3000;
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const DASH = { solid: "", dashed: "6 4", dotted: "2 3", dashdot: "8 3 2 3" };

const state = {
  decision: null,
  snapshot: null,
  history: [],
  capacity: 240,
  formKey: "",
  pendingWhatIf: readWhatIfQuery(),
};

// ---------------------------------------------------------------- DOM helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

function setAttrs(node, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    node.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function replace(id, ...children) {
  const node = document.getElementById(id);
  node.replaceChildren();
  append(node, children);
  return node;
}

// ---------------------------------------------------------------- formatting

function num(x, digits) {
  if (x === undefined || x === null || Number.isNaN(x)) return "–";
  if (!Number.isFinite(x)) return x > 0 ? "∞" : "−∞";
  return x.toFixed(digits);
}
const usd = (x) => "$" + num(x, 2);
const rps = (x) => num(x, x !== null && Math.abs(x) < 10 ? 2 : 1);
const ms = (x) => num(x, x !== null && Math.abs(x) < 10 ? 1 : 0);
const pct = (x) => (x === undefined || x === null ? "–" : num(100 * x, 1) + " %");

function clock(s) {
  if (s > 1e9) return new Date(s * 1000).toISOString().slice(11, 19);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return (h > 0 ? h + ":" + String(m).padStart(2, "0") : String(m)) + ":" + String(sec).padStart(2, "0");
}

// A cell with the raw number kept beside its text (tests and copy-paste read data-value).
function numCell(field, value, text, cls) {
  return el("td", { "data-field": field, "data-value": value, class: cls }, text);
}

// ---------------------------------------------------------------- data

async function api(url, options) {
  try {
    const response = await fetch(url, Object.assign({ cache: "no-store" }, options || {}));
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    return { status: response.status, body };
  } catch (e) {
    return { status: 0, body: { detail: String(e) } };
  }
}

async function poll() {
  const [plan, snapshot] = await Promise.all([api("/v1/plan"), api("/v1/snapshot")]);
  const last = state.history.length ? state.history[state.history.length - 1].cycle : null;
  const history = await api("/v1/history" + (last === null ? "" : "?after_cycle=" + last));
  if (plan.status === 200) {
    state.decision = plan.body;
    if (snapshot.status === 200) state.snapshot = snapshot.body;
    banner(null);
  } else {
    const detail = plan.body && plan.body.detail ? plan.body.detail : "the server did not answer";
    banner(plan.status === 0 ? "Cannot reach Allot: " + detail : "No plan yet: " + detail, plan.status === 0);
  }
  if (history.status === 200 && history.body) {
    state.capacity = history.body.capacity;
    const records = history.body.records || [];
    // A restarted controller counts cycles from 1 again: start over.
    if (records.length && last !== null && records[0].cycle <= last) state.history = [];
    state.history.push(...records);
    if (state.history.length > state.capacity) state.history.splice(0, state.history.length - state.capacity);
  }
  if (state.decision) {
    render();
    document.body.dataset.cycle = state.decision.cycle;
    document.body.dataset.state = "ready";
    if (state.pendingWhatIf && state.snapshot) {
      const overrides = state.pendingWhatIf;
      state.pendingWhatIf = null;
      fillForm(overrides);
      // Exactly what the link says, even names the form has no field for (the server names them).
      if (!overrides.__error) submitWhatIf(overrides);
    }
  }
  setTimeout(poll, POLL_MS);
}

function banner(text, error) {
  const b = document.getElementById("banner");
  b.hidden = !text;
  b.className = "banner" + (error ? " error" : "");
  b.textContent = text || "";
}

// ---------------------------------------------------------------- rendering

function render() {
  const d = state.decision;
  renderSummary(d);
  renderFleet(d);
  renderWhy(d, state.snapshot);
  renderModels(d.plan);
  renderGpus(d.plan, state.history[state.history.length - 1]);
  renderCharts(state.history);
  renderHeld(d, state.snapshot);
  buildForm(state.snapshot);
}

function renderSummary(d) {
  const p = d.plan;
  const item = (k, v, field, value) => el("span", {}, el("span", { class: "k" }, k), el("b", { "data-field": field, "data-value": value }, v));
  replace("summary",
    item("cycle", d.cycle, "cycle", d.cycle),
    item(d.observed_at_s > 1e9 ? "observed (UTC)" : "simulated time", clock(d.observed_at_s), "observed_at_s", d.observed_at_s),
    item("plan", p.status + ", " + p.mode.replace("_", " "), "status", p.status),
    item("cost now", usd(p.current_cost_usd_per_hour) + "/h", "current_cost_usd_per_hour", p.current_cost_usd_per_hour),
    item("planned", usd(p.cost_usd_per_hour) + "/h", "cost_usd_per_hour", p.cost_usd_per_hour),
    item("solve", ms(p.solve_ms) + " ms", "solve_ms", p.solve_ms),
    item("snapshot", d.snapshot_id, "snapshot_id", d.snapshot_id));
}

function sloLines(prediction) {
  if (!prediction) return { ttft: "–", itl: "–" };
  const line = (c, t) => {
    if (!t) return null;
    const ok = t.predicted_ms <= t.target_ms;
    return el("span", { class: "slo-line " + (ok ? "ok" : "bad"), title: c.class + ": predicted " + t.statistic + " against the target" },
      c.class + ": " + t.statistic + " " + ms(t.predicted_ms) + " / " + ms(t.target_ms));
  };
  const ttft = prediction.slo.map((c) => line(c, c.ttft)).filter(Boolean);
  const itl = prediction.slo.map((c) => line(c, c.itl)).filter(Boolean);
  if (!ttft.length && prediction.ttft_ms !== undefined) ttft.push("mean " + ms(prediction.ttft_ms) + " ms");
  if (!itl.length && prediction.itl_ms !== undefined) itl.push("mean " + ms(prediction.itl_ms) + " ms");
  return { ttft: ttft.length ? ttft : "–", itl: itl.length ? itl : "–" };
}

function calibrationText(c) {
  if (c === undefined || c === null) return "";
  if (typeof c !== "object") return String(c);
  return Object.entries(c).map(([k, v]) => k + " " + (typeof v === "number" ? num(v, 3) : JSON.stringify(v))).join(", ");
}

function renderFleet(d) {
  const planned = new Map(d.plan.variants.map((v) => [v.name, v]));
  const anyCalibration = d.variants.some((v) => (v.calibration || (planned.get(v.name) || {}).calibration));
  const head = ["Variant", "Model on GPUs", "Current → desired", "Planned", "Ready / booting / pending",
    "Load req/s", "TTFT ms predicted / target", "ITL ms predicted / target", "Utilization", "Cost $/h"];
  if (anyCalibration) head.push("Calibration");
  head.push("Why");
  const rows = d.variants.map((v) => {
    const p = planned.get(v.name) || {};
    const slo = sloLines(p.predicted);
    const pending = v.pods.unschedulable + v.pods.gated;
    const cells = [
      el("td", { class: "l", "data-field": "name" }, v.name),
      el("td", { class: "l" }, v.model + " on " + v.accelerator + " × " + (p.gpus_per_replica ?? "?") + (v.role !== "both" ? " (" + v.role + ")" : "")),
      el("td", { "data-field": "current_desired" },
        el("span", { "data-field": "current" }, v.current), el("span", { class: "arrow" }, "→"),
        el("b", { "data-field": "desired", class: v.desired !== v.current ? "warn" : "" }, v.desired)),
      numCell("planned", v.planned, v.planned, v.planned !== v.desired ? "warn" : ""),
      el("td", {},
        el("span", { "data-field": "ready" }, v.pods.ready), " / ",
        el("span", { "data-field": "booting", class: v.pods.booting > 0 ? "warn" : "" }, v.pods.booting), " / ",
        el("span", { "data-field": "pending", class: pending > 0 ? "bad" : "" }, pending)),
      numCell("load_rps", p.load_rps, rps(p.load_rps)),
      el("td", { class: "l" }, slo.ttft),
      el("td", { class: "l" }, slo.itl),
      numCell("utilization", p.predicted ? p.predicted.utilization : "", p.predicted ? pct(p.predicted.utilization) : "–"),
      numCell("cost_usd_per_hour", p.cost_usd_per_hour, num(p.cost_usd_per_hour, 2)),
    ];
    if (anyCalibration) cells.push(el("td", { class: "wrap", "data-field": "calibration" }, calibrationText(v.calibration || p.calibration)));
    cells.push(el("td", { class: "wrap muted" }, v.reason || ""));
    const idle = v.current === 0 && v.desired === 0 && v.planned === 0 && pending === 0;
    return el("tr", { "data-variant": v.name, class: v.desired !== v.current ? "changed" : idle ? "idle" : "" }, cells);
  });
  replace("fleet-table", el("table", { id: "fleet-rows" },
    el("thead", {}, el("tr", {}, head.map((h, i) => el("th", { class: i < 2 || h === "Why" || h.startsWith("TTFT") || h.startsWith("ITL") ? "l" : "" }, h)))),
    el("tbody", {}, rows)));
}

function bindingText(b) {
  switch (b.kind) {
    case "inventory_exhausted":
      return [b.accelerator + ": inventory exhausted", " — " + b.used_gpus + " of " + b.available_gpus + " GPUs used; no further replica of any variant fits."];
    case "demand_unmet":
      return [b.model + " / " + b.class + ": demand unmet", " — " + rps(b.unmet_rps) + " req/s not served (" + pct(b.served_fraction) + " served)."];
    case "no_feasible_variant":
      return [b.model + " / " + b.class + ": no variant can meet the SLO", " — " + (b.reasons || []).join("; ")];
    case "max_replicas":
      return [b.variant + ": at its maximum", " — " + b.replicas + " replicas while carrying load."];
    case "min_replicas":
      return [b.variant + ": held at its minimum", " — " + b.replicas + " replicas without load."];
    case "pd_ratio":
      return [b.model + ": prefill/decode ratio at its " + b.bound + " bound", " — " + b.prefill_replicas + " prefill, " + b.decode_replicas + " decode replicas."];
    case "least_loaded_routing":
      return [b.model + ": replicas chosen for a least-loaded router", " — it spreads requests by occupancy, not by the plan's rates; keeping every variant within its SLO costs " + num(b.extra_cost_usd_per_hour, 2) + " $/h more."];
    default:
      return [b.kind, " " + JSON.stringify(b)];
  }
}

function renderWhy(d, snapshot) {
  const p = d.plan;
  const items = [];
  items.push(el("p", {}, p.mode === "all_served"
    ? "Every demand is served at its SLO; this is the cheapest such plan (" + p.status + ", MIP gap " + num(p.mip_gap * 100, 2) + " %)."
    : "GPUs ran out: served fractions are maximized tier by tier in priority order (max-min fair), then cost (" + p.status + ")."));
  if (p.binding.length) {
    items.push(el("ul", { class: "reasons", id: "binding" }, p.binding.map((b) => {
      const [head, tail] = bindingText(b);
      return el("li", { "data-kind": b.kind }, el("b", {}, head), tail);
    })));
  } else {
    items.push(el("p", { class: "muted", id: "binding" }, "No constraint binds."));
  }
  const warnings = [...p.warnings, ...((snapshot && snapshot.warnings) || [])];
  if (warnings.length) items.push(el("h3", {}, "Warnings"), el("ul", { class: "reasons" }, warnings.map((w) => el("li", { class: "warn" }, w))));
  if (p.phases && p.phases.length) {
    items.push(el("p", { class: "muted" }, "Solver phases: " + p.phases.map((ph) => ph.name + " " + ph.solver_status + " " + ms(ph.solve_ms) + " ms").join(" · ")));
  }
  replace("why-list", items);
}

function renderModels(plan) {
  const rows = plan.models.map((m) => el("tr", { "data-model": m.name, "data-class": m.class },
    el("td", { class: "l" }, m.name), el("td", { class: "l" }, m.class), el("td", {}, m.priority),
    numCell("demand_rps", m.demand_rps, rps(m.demand_rps)),
    numCell("served_rps", m.served_rps, rps(m.served_rps)),
    numCell("served_fraction", m.served_fraction, pct(m.served_fraction), m.served_fraction < 0.999 ? "bad" : "ok"),
    numCell("unmet_rps", m.unmet_rps, rps(m.unmet_rps), m.unmet_rps > 0 ? "bad" : "")));
  replace("models-table", el("h3", {}, "Demand per model and class"), el("table", { id: "models-rows" },
    el("thead", {}, el("tr", {}, ["Model", "Class", "Priority", "Demand req/s", "Served req/s", "Served", "Unmet req/s"].map((h, i) => el("th", { class: i < 2 ? "l" : "" }, h)))),
    el("tbody", {}, rows)));
}

function renderGpus(plan, record) {
  const pending = new Map(((record && record.accelerators) || []).map((a) => [a.name, a.pending_gpus]));
  const rows = plan.accelerators.map((a) => el("tr", { "data-accelerator": a.name },
    el("td", { class: "l" }, a.name),
    numCell("available_gpus", a.available_gpus, a.available_gpus),
    numCell("current_gpus", a.current_gpus, a.current_gpus),
    numCell("used_gpus", a.used_gpus, a.used_gpus),
    numCell("free_gpus", a.free_gpus, a.free_gpus, a.free_gpus === 0 && a.available_gpus > 0 ? "bad" : ""),
    numCell("pending_gpus", pending.get(a.name) ?? "", pending.has(a.name) ? pending.get(a.name) : "–"),
    numCell("cost_usd_per_hour", a.cost_usd_per_hour, num(a.cost_usd_per_hour, 2))));
  replace("gpus-table", el("h3", {}, "GPUs per type"), el("table", { id: "gpus-rows" },
    el("thead", {}, el("tr", {}, ["Type", "Available", "Held now", "Planned", "Free", "Pending", "Cost $/h"].map((h, i) => el("th", { class: i < 1 ? "l" : "" }, h)))),
    el("tbody", {}, rows)));
}

function renderHeld(d, snapshot) {
  const parts = [];
  const held = Object.entries(d.held_models || {});
  parts.push(el("h3", {}, "Held models"));
  parts.push(held.length
    ? el("ul", { class: "reasons", id: "held-models" }, held.map(([m, why]) => el("li", { "data-model": m }, el("b", {}, m), " — " + why)))
    : el("p", { class: "muted", id: "held-models" }, "None: every model has fresh metrics."));
  const stale = Object.entries((snapshot && snapshot.stale_models) || {});
  if (stale.length) parts.push(el("p", { class: "warn" }, "Stale metrics: " + stale.map(([m, why]) => m + " (" + why + ")").join(", ")));
  if (snapshot && snapshot.metric_age_s) {
    const ages = Object.entries(snapshot.metric_age_s);
    if (ages.length) parts.push(el("p", { class: "muted" }, "Metric age: " + ages.map(([m, s]) => m + " " + num(s, 0) + " s").join(" · ")));
  }
  const planned = new Map(d.plan.variants.map((v) => [v.name, v]));
  const calibrated = d.variants.map((v) => [v.name, v.calibration || (planned.get(v.name) || {}).calibration]).filter(([, c]) => c);
  parts.push(el("h3", {}, "Calibrated models"));
  parts.push(calibrated.length
    ? el("ul", { class: "reasons", id: "calibrated" }, calibrated.map(([n, c]) => el("li", { "data-variant": n }, el("b", {}, n), " — " + calibrationText(c))))
    : el("p", { class: "muted", id: "calibrated" }, "No variant carries a latency-model correction in this plan."));
  replace("held", parts);
}

// ---------------------------------------------------------------- charts

function niceStep(span, n) {
  const raw = Math.max(span / n, 1e-12);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const norm = raw / mag;
  return mag * (norm < 1.5 ? 1 : norm < 3.5 ? 2 : norm < 7.5 ? 5 : 10);
}

// series: [{name, color, dash, width, points: [[x, y]], step, band: [[x, lo, hi]]}]
function lineChart(opts) {
  const W = opts.width || 640, H = opts.height || 230;
  const L = 52, R = 12, T = 10, B = 28;
  const pw = W - L - R, ph = H - T - B;
  const fig = el("figure", { class: "chart", "data-chart": opts.id });
  fig.append(el("figcaption", {}, opts.title));
  const all = opts.series.flatMap((s) => s.points);
  if (all.length < 1) {
    fig.append(el("div", { class: "empty" }, opts.empty || "no data yet"));
    return fig;
  }
  const xs = all.map((p) => p[0]);
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  if (x1 - x0 < 1e-9) { x0 -= 1; x1 += 1; }
  const ys = all.map((p) => p[1]).concat(opts.series.flatMap((s) => (s.band || []).map((b) => b[2])));
  let y1 = opts.yMax !== undefined ? opts.yMax : Math.max(1e-9, ...ys.filter(Number.isFinite)) * 1.08;
  const y0 = 0;
  const sx = (x) => L + (pw * (x - x0)) / (x1 - x0);
  const sy = (y) => T + ph * (1 - (Math.min(Math.max(y, y0), y1) - y0) / (y1 - y0));
  const g = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": opts.title, "data-series": opts.series.length });
  const ystep = niceStep(y1 - y0, 4);
  for (let y = y0; y <= y1 + 1e-9; y += ystep) {
    g.append(svg("line", { class: "gridline", x1: L, x2: L + pw, y1: sy(y), y2: sy(y) }));
    const label = opts.percent ? Math.round(100 * y) + "%" : (ystep < 1 ? y.toFixed(Math.min(3, Math.ceil(-Math.log10(ystep)))) : String(Math.round(y)));
    g.append(svg("text", { x: L - 5, y: sy(y) + 4, "text-anchor": "end" }, label));
  }
  const xstep = niceStep(x1 - x0, 6);
  for (let x = Math.ceil(x0 / xstep) * xstep; x <= x1 + 1e-9; x += xstep) {
    g.append(svg("line", { class: "gridline", x1: sx(x), x2: sx(x), y1: T, y2: T + ph }));
    g.append(svg("text", { x: sx(x), y: T + ph + 16, "text-anchor": "middle" }, clock(x)));
  }
  g.append(svg("rect", { class: "axis", x: L, y: T, width: pw, height: ph }));
  if (opts.yLabel) g.append(svg("text", { x: 12, y: T + ph / 2, transform: "rotate(-90 12 " + (T + ph / 2) + ")", "text-anchor": "middle" }, opts.yLabel));
  opts.series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    if (s.band && s.band.length) {
      const top = s.band.map((b) => sx(b[0]) + "," + sy(b[2]));
      const bottom = s.band.slice().reverse().map((b) => sx(b[0]) + "," + sy(b[1]));
      g.append(svg("polygon", { points: top.concat(bottom).join(" "), fill: color, "fill-opacity": 0.15, stroke: "none" }));
    }
    // Gaps (missing values) break the line rather than bridging it.
    let d = "", prev = null;
    for (const p of s.points) {
      if (p[1] === null || p[1] === undefined || !Number.isFinite(p[1])) { prev = null; continue; }
      if (prev === null) d += "M" + sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1);
      else if (s.step) d += "H" + sx(p[0]).toFixed(1) + "V" + sy(p[1]).toFixed(1);
      else d += "L" + sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1);
      prev = p;
    }
    // Layered charts draw earlier series wider, so lines at the same value show as nested stripes.
    const width = s.width || (opts.layered ? Math.max(1.2, 3.4 - 0.45 * i) : 1.8);
    if (d) g.append(svg("path", { d, fill: "none", stroke: color, "stroke-width": width, "stroke-dasharray": DASH[s.dash || "solid"], "data-name": s.name }));
    if (s.markers) {
      for (const p of s.points) {
        if (p[1] !== null && Number.isFinite(p[1])) g.append(svg("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.2, fill: color }));
      }
    }
  });
  fig.append(g);
  const legend = el("div", { class: "legend" });
  opts.series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    const key = JSON.stringify(s.points);
    const same = opts.series.slice(0, i).find((e) => s.points.length && JSON.stringify(e.points) === key);
    legend.append(el("span", { "data-series": s.name },
      svg("svg", { viewBox: "0 0 26 10" }, svg("line", { x1: 1, x2: 25, y1: 5, y2: 5, stroke: color, "stroke-width": 2.5, "stroke-dasharray": DASH[s.dash || "solid"] })),
      s.name, same ? el("em", { class: "muted" }, " (same as " + same.name + ")") : null));
  });
  fig.append(legend);
  return fig;
}

function renderCharts(history) {
  const t = (r) => r.observed_at_s;
  const empty = history.length < 2 ? "needs two cycles" : undefined;
  const grid = [];

  // Replicas per variant: only variants that had any in the window.
  const names = [...new Set(history.flatMap((r) => r.variants.filter((v) => v.desired > 0 || v.current > 0).map((v) => v.name)))].sort();
  grid.push(lineChart({
    id: "replicas", title: "Replicas per variant (desired)", yLabel: "replicas", empty, layered: true,
    series: names.map((n) => ({ name: n, step: true, points: history.map((r) => { const v = r.variants.find((x) => x.name === n); return [t(r), v ? v.desired : 0]; }) })),
  }));
  grid.push(lineChart({
    id: "replica-states", title: "Fleet replicas: desired, ready, booting, pending", yLabel: "replicas", empty,
    series: [
      { name: "desired", dash: "dashed", color: "#1d2330", step: true, points: history.map((r) => [t(r), r.replicas.desired]) },
      { name: "ready", color: COLORS[2], step: true, points: history.map((r) => [t(r), r.replicas.ready]) },
      { name: "booting", color: COLORS[1], step: true, points: history.map((r) => [t(r), r.replicas.booting]) },
      { name: "pending", color: COLORS[3], step: true, points: history.map((r) => [t(r), r.replicas.pending]) },
    ],
  }));
  const types = [...new Set(history.flatMap((r) => r.accelerators.map((a) => a.name)))].sort();
  const gpuSeries = [];
  types.forEach((a, i) => {
    const pick = (field) => history.map((r) => { const x = r.accelerators.find((y) => y.name === a); return [t(r), x ? x[field] : null]; });
    gpuSeries.push({ name: a + " used", color: COLORS[i % COLORS.length], step: true, points: pick("used_gpus") });
    gpuSeries.push({ name: a + " free", color: COLORS[i % COLORS.length], dash: "dashed", width: 1.2, step: true, points: pick("free_gpus") });
    gpuSeries.push({ name: a + " pending", color: COLORS[i % COLORS.length], dash: "dotted", width: 2.4, step: true, points: pick("pending_gpus") });
  });
  grid.push(lineChart({ id: "gpus", title: "GPUs per type: used by the plan, free, pending", yLabel: "GPUs", empty, series: gpuSeries }));
  grid.push(lineChart({
    id: "cost", title: "Cost per hour: planned and held now", yLabel: "$/h", empty,
    series: [
      { name: "planned", color: COLORS[0], step: true, points: history.map((r) => [t(r), r.cost_usd_per_hour]) },
      { name: "held now", color: COLORS[1], dash: "dashed", step: true, points: history.map((r) => [t(r), r.current_cost_usd_per_hour]) },
    ],
  }));
  replace("chart-grid", grid);

  const pairs = [...new Set(history.flatMap((r) => r.slo.map((s) => s.model + "\u0000" + s.class)))].sort();
  replace("slo-grid", pairs.length ? pairs.map((key) => {
    const [model, cls] = key.split("\u0000");
    const pick = (f) => history.map((r) => { const s = r.slo.find((x) => x.model === model && x.class === cls); return [t(r), s ? f(s) : null]; });
    return lineChart({
      id: "slo", title: model + " / " + cls, percent: true, yMax: 1.0, width: 420, height: 200, empty,
      series: [
        { name: "observed", color: COLORS[0], markers: true, points: pick((s) => (s.observed ? s.observed.attainment : null)) },
        { name: "predicted", color: COLORS[2], points: pick((s) => s.predicted_attainment) },
        { name: "objective", color: "#1d2330", dash: "dashed", width: 1.2, points: pick((s) => (s.objective ?? null)) },
      ],
    });
  }) : el("p", { class: "muted" }, "No demand yet."));

  const models = [...new Set(history.flatMap((r) => r.models.map((m) => m.name)))].sort();
  const anyForecast = history.some((r) => r.models.some((m) => m.forecast));
  replace("demand-grid", models.length ? models.map((name) => {
    const pick = (f) => history.map((r) => { const m = r.models.find((x) => x.name === name); return [t(r), m ? f(m) : null]; });
    const series = [
      { name: "demand", color: COLORS[0], width: 3, points: pick((m) => m.demand_rps) },
      { name: "served", color: COLORS[2], dash: "dashed", width: 1.6, points: pick((m) => m.served_rps) },
    ];
    if (anyForecast) {
      const f = (m, k) => (m.forecast && typeof m.forecast[k] === "number" ? m.forecast[k] : null);
      const band = history.map((r) => { const m = r.models.find((x) => x.name === name); return m && f(m, "lower_rps") !== null && f(m, "upper_rps") !== null ? [t(r), f(m, "lower_rps"), f(m, "upper_rps")] : null; }).filter(Boolean);
      series.push({ name: "forecast", color: COLORS[1], dash: "dotted", width: 2.2, band, points: pick((m) => f(m, "expected_rps")) });
    }
    return lineChart({ id: "demand", title: name, yLabel: "req/s", width: 420, height: 200, empty, series });
  }) : el("p", { class: "muted" }, "No demand yet."));
  if (!anyForecast && models.length) {
    document.getElementById("demand-grid").append(el("p", { class: "muted", id: "no-forecast" }, "No load forecast in these plans."));
  }
}

// ---------------------------------------------------------------- what-if

function readWhatIfQuery() {
  const raw = new URLSearchParams(window.location.search).get("whatif");
  if (!raw) return null;
  try {
    const value = JSON.parse(raw);
    return value && value.overrides ? value.overrides : value;
  } catch (e) {
    return { __error: "the whatif parameter is not JSON: " + e.message };
  }
}

function buildForm(snapshot) {
  if (!snapshot) return;
  const sc = snapshot.scenario;
  const models = [...new Set(sc.load.map((l) => l.model))].sort();
  const accelerators = sc.accelerators.map((a) => a.name).sort();
  const classes = sc.service_classes.map((c) => c.name).sort();
  const key = JSON.stringify([models, accelerators, classes]);
  if (key === state.formKey) return; // keep what the user typed
  state.formKey = key;
  const input = (name, attrs) => el("input", Object.assign({ type: "number", name, step: "any" }, attrs));
  const loads = el("fieldset", {}, el("legend", {}, "Load multiplier"),
    el("label", {}, "all models ×", input("load:*", { min: 0, max: 1000, placeholder: "1" })),
    models.map((m) => el("label", {}, m + " ×", input("load:" + m, { min: 0, max: 1000, placeholder: "" }))));
  const inventory = el("fieldset", {}, el("legend", {}, "Inventory change (GPUs)"),
    accelerators.map((a) => {
      const now = sc.accelerators.find((x) => x.name === a);
      return el("label", {}, a + " (" + now.gpus + ") ±", input("gpus:" + a, { step: 1, placeholder: "0" }));
    }));
  const classRows = classes.map((c) => {
    const now = sc.service_classes.find((x) => x.name === c);
    const targets = (now.targets || []).map((t) => t.model + ": " + (t.ttft ? "TTFT " + t.ttft.ms + " ms" : "") + (t.itl ? " ITL " + t.itl.ms + " ms" : "")).join("; ");
    return el("tr", {}, el("td", { class: "l" }, c), el("td", { class: "wrap muted" }, "priority " + now.priority + (targets ? "; " + targets : "")),
      el("td", {}, input("class:" + c + ":priority", { min: 0, step: 1 })),
      el("td", {}, input("class:" + c + ":ttft_ms", { min: 0 })),
      el("td", {}, input("class:" + c + ":itl_ms", { min: 0 })));
  });
  const classTable = el("fieldset", {}, el("legend", {}, "Service classes"), el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, ["Class", "Now", "Priority", "TTFT ms", "ITL ms"].map((h, i) => el("th", { class: i < 2 ? "l" : "" }, h)))),
    el("tbody", {}, classRows))));
  const buttons = el("div", {}, el("button", { type: "submit", id: "whatif-submit" }, "Plan what-if"), " ",
    el("button", { type: "reset", class: "secondary" }, "Clear"));
  const form = document.getElementById("whatif-form");
  form.replaceChildren(loads, inventory, classTable, buttons);
  form.onsubmit = (e) => { e.preventDefault(); submitWhatIf(null); };
}

function fillForm(overrides) {
  const form = document.getElementById("whatif-form");
  if (overrides.__error) { showWhatIfError(overrides.__error, []); return; }
  // The attribute as well as the value: a saved or printed page shows what was asked.
  const set = (name, value) => { const i = form.elements.namedItem(name); if (i) { i.value = value; i.setAttribute("value", value); } };
  for (const [m, f] of Object.entries(overrides.load_multiplier || {})) set("load:" + m, f);
  for (const [a, g] of Object.entries(overrides.inventory_change || {})) set("gpus:" + a, g);
  for (const [c, o] of Object.entries(overrides.classes || {})) {
    for (const k of ["priority", "ttft_ms", "itl_ms"]) if (o[k] !== undefined) set("class:" + c + ":" + k, o[k]);
  }
}

function formOverrides() {
  const overrides = { load_multiplier: {}, inventory_change: {}, classes: {} };
  for (const i of document.getElementById("whatif-form").querySelectorAll("input")) {
    if (i.value === "") continue;
    const value = Number(i.value);
    const [kind, name, field] = i.name.split(":");
    if (kind === "load") overrides.load_multiplier[name] = value;
    else if (kind === "gpus") { if (value !== 0) overrides.inventory_change[name] = value; }
    else if (kind === "class") (overrides.classes[name] = overrides.classes[name] || {})[field] = value;
  }
  for (const k of Object.keys(overrides)) if (!Object.keys(overrides[k]).length) delete overrides[k];
  return overrides;
}

function showWhatIfError(detail, problems) {
  const result = replace("whatif-result", el("div", { class: "problem" }, el("b", {}, detail),
    problems.length ? el("ul", {}, problems.map((p) => el("li", {}, el("code", {}, p.path), ": " + p.message))) : null));
  result.dataset.state = "error";
}

async function submitWhatIf(given) {
  const overrides = given || formOverrides();
  const result = document.getElementById("whatif-result");
  result.dataset.state = "running";
  result.replaceChildren(el("p", { class: "muted" }, "planning…"));
  const url = new URL(window.location.href);
  url.searchParams.set("whatif", JSON.stringify(overrides));
  window.history.replaceState(null, "", url);
  const answer = await api("/v1/plans", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ overrides }) });
  if (answer.status !== 200) {
    const b = answer.body || {};
    showWhatIfError((b.title ? b.title + ": " : "") + (b.detail || "the server answered " + answer.status), b.problems || []);
    return;
  }
  renderWhatIf(answer.body, overrides);
}

function renderWhatIf(w, overrides) {
  const p = w.plan;
  const change = w.cost_change_usd_per_hour;
  const parts = [
    el("p", {}, "Overrides ", el("code", { id: "whatif-overrides" }, JSON.stringify(overrides)), " on snapshot ", el("code", {}, w.base_snapshot_id), "."),
    el("p", {}, "What-if plan: ", el("b", {}, p.mode.replace("_", " ")), " (" + p.status + "), ",
      el("b", { "data-field": "whatif_cost", "data-value": p.cost_usd_per_hour }, usd(p.cost_usd_per_hour) + "/h"), ", ",
      el("b", { "data-field": "cost_change", "data-value": change, class: change > 0 ? "bad" : "ok" }, (change >= 0 ? "+" : "−") + usd(Math.abs(change)) + "/h"),
      " against what Allot plans now."),
  ];
  if (w.diff.length) {
    parts.push(el("table", { id: "whatif-diff" },
      el("thead", {}, el("tr", {}, ["Variant", "Desired now", "What-if", "Change"].map((h, i) => el("th", { class: i < 1 ? "l" : "" }, h)))),
      el("tbody", {}, w.diff.map((d) => el("tr", { "data-variant": d.variant },
        el("td", { class: "l" }, d.variant),
        numCell("current_desired", d.current_desired, d.current_desired),
        numCell("what_if", d.what_if, d.what_if),
        el("td", { class: d.what_if > d.current_desired ? "warn" : "ok" }, (d.what_if > d.current_desired ? "+" : "−") + Math.abs(d.what_if - d.current_desired)))))));
  } else {
    parts.push(el("p", { id: "whatif-diff", class: "muted" }, "No replica would change."));
  }
  const short = p.models.filter((m) => m.served_fraction < 0.999);
  if (short.length) parts.push(el("p", { class: "bad" }, "Not fully served: " + short.map((m) => m.name + " / " + m.class + " " + pct(m.served_fraction)).join(", ")));
  if (p.binding.length) {
    parts.push(el("ul", { class: "reasons" }, p.binding.map((b) => { const [h, t] = bindingText(b); return el("li", {}, el("b", {}, h), t); })));
  }
  const result = replace("whatif-result", parts);
  result.dataset.state = "done";
}

document.addEventListener("DOMContentLoaded", poll);
