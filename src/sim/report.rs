//! The comparison table and the self-contained HTML report (inline SVG drawn here: no script,
//! no network, opens offline).
//!
//! The report reads top-down: a comparison of the policies side by side (per-request attainment,
//! window compliance, GPU-hours, cost; one chart), the load, then one section per policy whose
//! charts all share one time axis. Values above a chart's top are drawn at the edge and labelled
//! with their true value; requests that were dropped or never finished are counted and drawn;
//! series that coincide are told apart by dash, width and a "same as" note; the last, partial
//! bucket of a chart is divided by the time it covers, not by a whole bucket.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::engine::{RequestOutcome, SimOutcome};
use super::{Request, Summary, meets_slo, quantile};
use crate::scenario::Snapshot;

/// Class names over all rows, sorted.
fn classes(rows: &[Summary]) -> Vec<String> {
    rows.iter().flat_map(|r| r.by_class.keys().cloned()).collect::<BTreeSet<_>>().into_iter().collect()
}

/// One row per policy.
pub fn table(rows: &[Summary]) -> String {
    let classes = classes(rows);
    let mut out = String::new();
    let _ = write!(out, "{:<8} {:>8}", "POLICY", "SLO MET");
    for c in &classes {
        let _ = write!(out, " {:>10}", truncate(c, 10));
    }
    let _ = writeln!(
        out,
        " {:>8} {:>9} {:>8} {:>10} {:>8} {:>6} {:>12} {:>11} {:>5} {:>6} {:>9}",
        "GPU-H",
        "COST $",
        "CHANGES",
        "PENDING s",
        "DROPPED",
        "UNFIN",
        "TTFT p95 ms",
        "ITL p95 ms",
        "BUSY",
        "BATCH",
        "WINDOWS"
    );
    for r in rows {
        let _ = write!(out, "{:<8} {:>7.1}%", r.policy, 100.0 * r.attainment.share());
        for c in &classes {
            let cell = r.by_class.get(c).map_or("-".to_string(), |a| format!("{:.1}%", 100.0 * a.share()));
            let _ = write!(out, " {cell:>10}");
        }
        let _ = writeln!(
            out,
            " {:>8.1} {:>9.2} {:>8} {:>10.0} {:>8} {:>6} {:>12.0} {:>11.1} {:>4.0}% {:>5.0}% {:>8.1}%",
            r.gpu_hours,
            r.cost_usd,
            r.replica_changes,
            r.pending_replica_s,
            r.dropped,
            r.unfinished,
            r.ttft_p95_ms,
            r.itl_p95_ms,
            100.0 * r.busy_fraction,
            100.0 * r.batch_fraction,
            100.0 * r.windows.share()
        );
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const COLORS: [&str; 10] =
    ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

/// Dash patterns by series index, so coinciding lines stay apart even in one color.
const DASHES: [&str; 5] = ["", "7 3", "2 3", "9 3 2 3", "4 2"];

/// A "nice" step (1, 2 or 5 × 10^k) giving about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(1e-12);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    mag * if norm < 1.5 {
        1.0
    } else if norm < 3.5 {
        2.0
    } else if norm < 7.5 {
        5.0
    } else {
        10.0
    }
}

/// How a series is drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct Style {
    pub color: String,
    /// SVG `stroke-dasharray`; empty for solid.
    pub dash: String,
    pub width: f64,
}

/// One named line of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// `None`: by position (color and dash from the series' index, later lines thinner).
    pub style: Option<Style>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { name: name.into(), points, style: None }
    }

    fn styled(mut self, color: &str, dash: &str, width: f64) -> Self {
        self.style = Some(Style { color: color.into(), dash: dash.into(), width });
        self
    }
}

/// A time chart: every chart of a report gets the same `x_max`, so time lines up down the page.
pub struct Chart<'a> {
    pub title: &'a str,
    pub y_label: &'a str,
    /// Right end of the time axis, seconds.
    pub x_max: f64,
    pub series: Vec<Series>,
    /// Dashed horizontal lines (SLO targets); the top is at most 4× the largest.
    pub limits: Vec<(String, f64)>,
    /// Hold each value until the next point (replica counts, per-bucket rates).
    pub step: bool,
    /// Stack the series as filled areas (first at the bottom) instead of lines.
    pub stacked: bool,
}

const W: f64 = 900.0;
const H: f64 = 250.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 22.0;
const BOTTOM: f64 = 34.0;

fn style_of(i: usize, s: &Series) -> Style {
    s.style.clone().unwrap_or_else(|| Style {
        color: COLORS[i % COLORS.len()].to_string(),
        dash: DASHES[(i / COLORS.len() + i) % DASHES.len()].to_string(),
        width: (2.6 - 0.3 * i as f64).max(1.2),
    })
}

/// A value as a reader wants it: ms below 10 s, else s.
fn latency_text(ms: f64) -> String {
    if !ms.is_finite() {
        "∞".into()
    } else if ms >= 10_000.0 {
        format!("{:.0} s", ms / 1e3)
    } else {
        format!("{ms:.0} ms")
    }
}

/// The chart as inline SVG (scales with its container) followed by an HTML legend.
pub fn line_chart(chart: &Chart<'_>) -> String {
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x_max = chart.x_max.max(1e-9);
    let stacked_tops: Vec<Vec<(f64, f64)>> = if chart.stacked { stack(&chart.series) } else { Vec::new() };
    let drawn: Vec<&Vec<(f64, f64)>> =
        if chart.stacked { stacked_tops.iter().collect() } else { chart.series.iter().map(|s| &s.points).collect() };
    let data_max = drawn.iter().flat_map(|p| p.iter().map(|q| q.1)).filter(|y| y.is_finite()).fold(0.0_f64, f64::max);
    let limit_max = chart.limits.iter().map(|l| l.1).reduce(f64::max);
    let mut y_max = data_max.max(limit_max.unwrap_or(0.0)).max(1e-9) * 1.08;
    // Against a target, what matters is near it: the top is at most 4× the largest target, and
    // what lies above is marked with its true value.
    if let Some(limit) = limit_max {
        y_max = y_max.min(4.0 * limit);
    }
    let sx = |x: f64| LEFT + pw * x.clamp(0.0, x_max) / x_max;
    let sy = |y: f64| TOP + ph * (1.0 - y.clamp(0.0, y_max) / y_max);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" role="img" aria-label="{}" font-family="sans-serif" font-size="12">"#,
        escape(chart.title)
    );
    let _ = write!(svg, r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>"##);
    let ystep = nice_step(y_max, 5.0);
    let mut y = 0.0;
    while y <= y_max * 1.0001 {
        let py = sy(y);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">{}</text>"##,
            LEFT + pw,
            LEFT - 5.0,
            py + 4.0,
            trim_number(y)
        );
        y += ystep;
    }
    let xstep = nice_step(x_max, 10.0);
    let mut x = 0.0;
    while x <= x_max * 1.0001 {
        let px = sx(x);
        let _ = write!(
            svg,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#f2f2f2"/><text x="{px:.1}" y="{:.1}" text-anchor="middle" fill="#444">{}</text>"##,
            TOP + ph,
            TOP + ph + 15.0,
            trim_number(x)
        );
        x += xstep;
    }
    axis_titles(&mut svg, "time (s)", chart.y_label, (LEFT, TOP, pw, ph), H);
    for (i, s) in chart.series.iter().enumerate() {
        let st = style_of(i, s);
        if chart.stacked {
            // The band between this series' top and the one below, both drawn as the chart draws lines.
            let expand = |p: &[(f64, f64)]| if chart.step { step_vertices(p) } else { p.to_vec() };
            let top = expand(&stacked_tops[i]);
            if top.is_empty() {
                continue;
            }
            let below = if i == 0 { top.iter().map(|p| (p.0, 0.0)).collect() } else { expand(&stacked_tops[i - 1]) };
            let mut d = path(&top, false, &sx, &sy);
            let back = path(&below.iter().rev().copied().collect::<Vec<_>>(), false, &sx, &sy).replacen('M', "L", 1);
            d.push_str(&back);
            let _ = write!(
                svg,
                r#"<path d="{d}Z" fill="{}" fill-opacity="0.55" stroke="{}" stroke-width="1"/>"#,
                st.color, st.color
            );
        } else {
            let d = path(&s.points, chart.step, &sx, &sy);
            if !d.is_empty() {
                let _ = write!(
                    svg,
                    r#"<path d="{d}" fill="none" stroke="{}" stroke-width="{:.1}" stroke-dasharray="{}" stroke-linejoin="round"/>"#,
                    st.color, st.width, st.dash
                );
            }
            // Clipped: one marker per run above the top, at the run's largest value.
            for (x, value) in clipped_peaks(&s.points, y_max) {
                // Series that run off the top together get their labels one above the other.
                let (px, py) = (sx(x), TOP + 1.0 + 13.0 * i as f64);
                let label = if limit_max.is_some() { latency_text(value) } else { trim_number(value) };
                let _ = write!(
                    svg,
                    r#"<path class="clipped" d="M{:.1},{:.1} l5,9 h-10 z" fill="{}"/><text x="{:.1}" y="{:.1}" fill="{}" font-weight="bold" data-true-value="{value}">{}</text>"#,
                    px,
                    py,
                    st.color,
                    px + 7.0,
                    py + 10.0,
                    st.color,
                    escape(&label)
                );
            }
        }
    }
    for (j, (name, y)) in chart.limits.iter().enumerate() {
        let py = sy(*y);
        // Alternate sides so that close targets keep readable labels.
        let (tx, anchor) = if j % 2 == 0 { (LEFT + pw - 4.0, "end") } else { (LEFT + 4.0, "start") };
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#000" stroke-dasharray="5,4"/><text x="{tx:.1}" y="{:.1}" text-anchor="{anchor}" fill="#000">{}</text>"##,
            LEFT + pw,
            py - 4.0,
            escape(name)
        );
    }
    svg.push_str("</svg>");

    let mut legend = String::from(r#"<div class="legend">"#);
    for (i, s) in chart.series.iter().enumerate() {
        let st = style_of(i, s);
        let note = if !s.points.is_empty() && s.points.iter().all(|p| p.1 == 0.0) {
            Some("0 throughout".to_string())
        } else if chart.stacked {
            None
        } else {
            chart.series[..i]
                .iter()
                .find(|e| e.points == s.points && !s.points.is_empty())
                .map(|e| format!("same as {}", e.name))
        };
        let swatch = if chart.stacked {
            format!(r#"<rect x="1" y="1" width="24" height="10" fill="{}" fill-opacity="0.55"/>"#, st.color)
        } else {
            format!(
                r#"<line x1="1" y1="6" x2="25" y2="6" stroke="{}" stroke-width="{:.1}" stroke-dasharray="{}"/>"#,
                st.color, st.width, st.dash
            )
        };
        let _ = write!(
            legend,
            r#"<span><svg viewBox="0 0 26 12" width="26" height="12">{swatch}</svg>{}{}</span>"#,
            escape(&s.name),
            note.map_or(String::new(), |n| format!(r#" <em class="same">({})</em>"#, escape(&n)))
        );
    }
    for (name, _) in &chart.limits {
        let _ = write!(legend, r#"<span class="limit">- - {}</span>"#, escape(name));
    }
    legend.push_str("</div>");
    format!(r#"<figure class="chart"><figcaption>{}</figcaption>{svg}{legend}</figure>"#, escape(chart.title))
}

/// The x title under the plot area and the y title turned along its left side; `plot` is
/// (left, top, width, height) of the plot area, `height` the whole chart's.
fn axis_titles(svg: &mut String, x_title: &str, y_title: &str, plot: (f64, f64, f64, f64), height: f64) {
    let (left, top, pw, ph) = plot;
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#444">{}</text><text x="13" y="{:.1}" transform="rotate(-90 13 {:.1})" text-anchor="middle" fill="#444">{}</text>"##,
        left + pw / 2.0,
        height - 3.0,
        escape(x_title),
        top + ph / 2.0,
        top + ph / 2.0,
        escape(y_title)
    );
}

/// The SVG path of a series (`M`/`L`, or horizontal-then-vertical steps).
fn path(points: &[(f64, f64)], step: bool, sx: &dyn Fn(f64) -> f64, sy: &dyn Fn(f64) -> f64) -> String {
    let mut d = String::new();
    let mut prev: Option<(f64, f64)> = None;
    for &(x, y) in points {
        if !y.is_finite() {
            continue;
        }
        match prev {
            None => {
                let _ = write!(d, "M{:.1},{:.1}", sx(x), sy(y));
            }
            Some(_) if step => {
                let _ = write!(d, " H{:.1} V{:.1}", sx(x), sy(y));
            }
            Some(_) => {
                let _ = write!(d, " L{:.1},{:.1}", sx(x), sy(y));
            }
        }
        prev = Some((x, y));
    }
    d
}

/// The corners of a step line: each value held until the next point's x.
fn step_vertices(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for (j, &(x, y)) in points.iter().enumerate() {
        if j > 0 {
            out.push((x, points[j - 1].1));
        }
        out.push((x, y));
    }
    out
}

/// Cumulative sums of the series at each of the first series' x (all series share their x).
fn stack(series: &[Series]) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    for s in series {
        let below = out.last();
        let top = s
            .points
            .iter()
            .enumerate()
            .map(|(j, &(x, y))| (x, y + below.and_then(|b| b.get(j)).map_or(0.0, |p| p.1)))
            .collect();
        out.push(top);
    }
    out
}

/// (x, true value) of the largest point of each run of points above `y_max`.
pub fn clipped_peaks(points: &[(f64, f64)], y_max: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut run: Option<(f64, f64)> = None;
    for &(x, y) in points {
        if y > y_max {
            run = Some(match run {
                Some(r) if r.1 >= y => r,
                _ => (x, y),
            });
        } else if let Some(r) = run.take() {
            out.push(r);
        }
    }
    out.extend(run);
    out
}

fn trim_number(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}").trim_end_matches('0').to_string()
    }
}

/// Buckets of `bucket_s` over [0, end_s]: (start, covered length); the last may be partial. A
/// sliver under 1 % of a bucket joins the one before, so no rate is divided by next to nothing.
fn buckets(end_s: f64, bucket_s: f64) -> Vec<(f64, f64)> {
    let mut n = (end_s / bucket_s).ceil().max(1.0) as usize;
    if n > 1 && end_s - (n - 1) as f64 * bucket_s < 0.01 * bucket_s {
        n -= 1;
    }
    (0..n)
        .map(|b| {
            let start = b as f64 * bucket_s;
            let len = if b + 1 == n { end_s - start } else { bucket_s };
            (start, len.max(1e-9))
        })
        .collect()
}

fn bucket_of(t_s: f64, bucket_s: f64, n: usize) -> usize {
    ((t_s.max(0.0) / bucket_s) as usize).min(n - 1)
}

/// A per-bucket rate as a step series: each bucket's count over the time it covers, held to
/// its end (a partial last bucket is not a drop).
fn rate_steps(counts: &[f64], spans: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = counts.iter().zip(spans).map(|(c, (start, len))| (*start, c / len)).collect();
    if let (Some(&(_, last)), Some(&(start, len))) = (points.last(), spans.last()) {
        points.push((start + len, last));
    }
    points
}

/// Per-bucket percentile of a latency by arrival time, at the middle of what each bucket covers.
fn latency_series(
    requests: &[Request],
    outcome: &SimOutcome,
    spans: &[(f64, f64)],
    bucket_s: f64,
    q: f64,
    latency: impl Fn(&Request, &RequestOutcome) -> Option<f64>,
) -> Vec<(f64, f64)> {
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); spans.len()];
    for (r, o) in requests.iter().zip(&outcome.requests) {
        if let Some(v) = latency(r, o) {
            values[bucket_of(r.arrival_s, bucket_s, spans.len())].push(v);
        }
    }
    values
        .iter_mut()
        .zip(spans)
        .filter(|(v, _)| !v.is_empty())
        .map(|(v, (start, len))| (start + len / 2.0, quantile(v, q)))
        .collect()
}

/// Requests per second by arrival bucket and outcome: met the SLO, missed it, dropped, unfinished.
fn outcome_series(
    snapshot: &Snapshot,
    requests: &[Request],
    outcome: &SimOutcome,
    spans: &[(f64, f64)],
    bucket_s: f64,
) -> Vec<Series> {
    let mut counts = vec![[0.0_f64; 4]; spans.len()];
    for (r, o) in requests.iter().zip(&outcome.requests) {
        let kind = if o.dropped {
            2
        } else if o.done_s.is_none() {
            3
        } else if meets_slo(snapshot, r, o) {
            0
        } else {
            1
        };
        counts[bucket_of(r.arrival_s, bucket_s, spans.len())][kind] += 1.0;
    }
    let names = ["met the SLO", "missed the SLO", "dropped", "unfinished"];
    let colors = ["#2ca02c", "#ff7f0e", "#d62728", "#7f7f7f"];
    (0..4)
        .map(|k| {
            let c: Vec<f64> = counts.iter().map(|b| b[k]).collect();
            Series::new(names[k], rate_steps(&c, spans)).styled(colors[k], "", 1.0)
        })
        .collect()
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:0;color:#222;background:#f6f7f9}\
header{background:#18202f;color:#fff;padding:12px 20px}header h1{margin:0 0 4px;font-size:20px}header p{margin:0;color:#cfd6e2}\
nav{display:flex;flex-wrap:wrap;gap:14px;padding:6px 20px;background:#e9edf3;border-bottom:1px solid #d9dee7;position:sticky;top:0}\
nav a{color:#1f5fbf;text-decoration:none}main{padding:4px 20px 20px}\
section{background:#fff;border:1px solid #d9dee7;border-radius:6px;padding:8px 14px 14px;margin:12px 0}\
h2{font-size:18px;margin:6px 0}.hint{color:#5b6474;max-width:120ch}\
.scroll{overflow-x:auto}table{border-collapse:collapse;font-variant-numeric:tabular-nums}\
td,th{border-bottom:1px solid #e1e5ec;padding:4px 9px;text-align:right;white-space:nowrap}th{background:#f0f2f6}\
td:first-child,th:first-child{text-align:left}td.best{font-weight:bold;color:#1a7f37}table.detail{margin-top:10px}\
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:12px}\
figure.chart{margin:0;border:1px solid #e1e5ec;border-radius:4px;padding:6px 8px}figcaption{font-weight:600;margin-bottom:2px}\
svg.chart{width:100%;height:auto;display:block}.legend{display:flex;flex-wrap:wrap;gap:3px 14px;font-size:12px;color:#444}\
.legend span{display:inline-flex;align-items:center;gap:4px}.legend em.same{color:#9a6700}\
.note{font-size:12px;color:#5b6474;margin:4px 0 0}";

/// The HTML report: comparison first, then the load, then per policy with shared time axes.
pub fn html(snapshot: &Snapshot, requests: &[Request], runs: &[(Summary, SimOutcome)], header: &str) -> String {
    let rows: Vec<Summary> = runs.iter().map(|r| r.0.clone()).collect();
    // One time axis for every chart: to the latest end of any run.
    let x_max = runs.iter().map(|(_, o)| o.end_s.max(o.horizon_s)).fold(1.0_f64, f64::max);
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Allot simulation</title><style>{STYLE}</style></head><body>\
         <header><h1>Allot simulation</h1><p>{}</p></header><nav><a href=\"#comparison\">Comparison</a><a href=\"#load\">Load</a>",
        escape(header)
    );
    for r in &rows {
        let _ = write!(out, "<a href=\"#policy-{}\">{}</a>", escape(&r.policy), escape(&r.policy));
    }
    out.push_str("</nav><main>");
    comparison(&mut out, &rows);
    load(&mut out, snapshot, requests, runs, x_max);
    let ttft_limits = targets(snapshot, true);
    let itl_limits = targets(snapshot, false);
    for (summary, outcome) in runs {
        policy_section(&mut out, snapshot, requests, summary, outcome, x_max, &ttft_limits, &itl_limits);
    }
    out.push_str("</main></body></html>\n");
    out
}

fn comparison(out: &mut String, rows: &[Summary]) {
    let best_attainment = rows.iter().map(|r| r.attainment.share()).fold(0.0_f64, f64::max);
    let best_windows = rows.iter().map(|r| r.windows.share()).fold(0.0_f64, f64::max);
    let cheapest = rows.iter().map(|r| r.cost_usd).fold(f64::INFINITY, f64::min);
    let best = |v: f64, b: f64| if (v - b).abs() < 1e-12 { " class=\"best\"" } else { "" };
    out.push_str(
        "<section id=\"comparison\"><h2>Comparison</h2><div class=\"scroll\"><table><tr><th>policy</th><th>SLO met \
         (requests)</th><th>windows compliant</th><th>GPU-hours</th><th>cost $</th><th>dropped</th><th>unfinished</th>\
         <th>replica changes</th><th>pending replica-s</th></tr>",
    );
    for r in rows {
        let _ = write!(
            out,
            "<tr data-policy=\"{0}\"><td>{0}</td><td{1}>{2:.1} %</td><td{3}>{4:.1} % <small>({5} of {6})</small></td>\
             <td>{7:.1}</td><td{8}>{9:.2}</td><td>{10}</td><td>{11}</td><td>{12}</td><td>{13:.0}</td></tr>",
            escape(&r.policy),
            best(r.attainment.share(), best_attainment),
            100.0 * r.attainment.share(),
            best(r.windows.share(), best_windows),
            100.0 * r.windows.share(),
            r.windows.met,
            r.windows.total,
            r.gpu_hours,
            best(r.cost_usd, cheapest),
            r.cost_usd,
            r.dropped,
            r.unfinished,
            r.replica_changes,
            r.pending_replica_s
        );
    }
    out.push_str("</table></div>");
    out.push_str(&tradeoff_chart(rows));
    // Per class and the latency tails, in a second table so the first fits a screen.
    let classes = classes(rows);
    out.push_str("<div class=\"scroll\"><table class=\"detail\"><tr><th>policy</th>");
    for c in &classes {
        let _ = write!(out, "<th>{0}: requests</th><th>{0}: windows</th>", escape(c));
    }
    out.push_str("<th>TTFT p95 ms</th><th>ITL p95 ms</th><th>replicas busy</th><th>batch full</th></tr>");
    for r in rows {
        let _ = write!(out, "<tr data-policy-detail=\"{0}\"><td>{0}</td>", escape(&r.policy));
        for c in &classes {
            let req = r.by_class.get(c).map_or("-".to_string(), |a| format!("{:.1} %", 100.0 * a.share()));
            let win = r.windows_by_class.get(c).map_or("-".to_string(), |a| format!("{:.1} %", 100.0 * a.share()));
            let _ = write!(out, "<td>{req}</td><td>{win}</td>");
        }
        let _ = write!(
            out,
            "<td>{:.0}</td><td>{:.1}</td><td>{:.0} %</td><td>{:.0} %</td></tr>",
            r.ttft_p95_ms,
            r.itl_p95_ms,
            100.0 * r.busy_fraction,
            100.0 * r.batch_fraction
        );
    }
    out.push_str("</table></div>");
    out.push_str(
        "<p class=\"hint\"><b>SLO met (requests)</b>: share of requests whose own TTFT and mean ITL are both within \
         their class's target values (dropped and unfinished requests count as missed). <b>Windows compliant</b>: share of \
         (5-minute window, class) pairs in which the statistic each target declares (p90, p95, mean…) of the requests \
         arriving in the window met the target; a request that never got a token counts as infinitely slow. Bold: the \
         best value. <b>Replicas busy</b>: time with a step running over ready time; <b>batch full</b>: mean requests in \
         the batch over B.</p></section>",
    );
}

/// Cost against attainment, one point pair per policy: ● requests met, ◆ windows compliant.
fn tradeoff_chart(rows: &[Summary]) -> String {
    let (w, h, left, right, top, bottom) = (W, 300.0, 64.0, 150.0, 20.0, 40.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let cost_max = rows.iter().map(|r| r.cost_usd).fold(0.0_f64, f64::max).max(1e-9) * 1.1;
    let lowest = rows.iter().flat_map(|r| [r.attainment.share(), r.windows.share()]).fold(1.0_f64, f64::min);
    // Zoom the attainment axis to what differs, in 10 % steps.
    let y_min = ((lowest * 10.0).floor() / 10.0 - 0.1).clamp(0.0, 0.9);
    let sx = |x: f64| left + pw * x / cost_max;
    let sy = |y: f64| top + ph * (1.0 - (y - y_min) / (1.0 - y_min));
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<figure class="chart" id="tradeoff"><figcaption>Cost against SLO attainment (up and left is better)</figcaption><svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img" aria-label="cost against attainment" font-family="sans-serif" font-size="12"><rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>"##
    );
    let mut y = y_min;
    while y <= 1.0001 {
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#eee"/><text x="{2:.1}" y="{3:.1}" text-anchor="end" fill="#444">{4:.0} %</text>"##,
            sy(y),
            left + pw,
            left - 5.0,
            sy(y) + 4.0,
            100.0 * y
        );
        y += 0.1;
    }
    let step = nice_step(cost_max, 8.0);
    let mut x = 0.0;
    while x <= cost_max {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#444">{}</text>"##,
            sx(x),
            top + ph + 15.0,
            trim_number(x)
        );
        x += step;
    }
    axis_titles(&mut svg, "cost of the run ($)", "attainment", (left, top, pw, ph), h);
    for (i, r) in rows.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let same_point = |o: &Summary| {
            o.cost_usd == r.cost_usd
                && o.attainment.share() == r.attainment.share()
                && o.windows.share() == r.windows.share()
        };
        // Policies that land on the same point are drawn once, labelled together.
        if rows[..i].iter().any(same_point) {
            continue;
        }
        let label =
            rows[i..].iter().filter(|o| same_point(o)).map(|o| o.policy.as_str()).collect::<Vec<_>>().join(" = ");
        let (px, pa, pwin) = (sx(r.cost_usd), sy(r.attainment.share()), sy(r.windows.share()));
        let _ = write!(
            svg,
            r#"<line x1="{px:.1}" y1="{pa:.1}" x2="{px:.1}" y2="{pwin:.1}" stroke="{color}" stroke-width="1" stroke-dasharray="2 2"/><circle cx="{px:.1}" cy="{pa:.1}" r="6" fill="{color}"/><path d="M{px:.1},{:.1} l7,7 l-7,7 l-7,-7 z" fill="none" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}" fill="{color}" font-weight="bold">{}</text>"#,
            pwin - 7.0,
            px + 10.0,
            pa + 4.0,
            escape(&label)
        );
    }
    let _ = write!(
        svg,
        r##"<circle cx="{0:.1}" cy="{1:.1}" r="5" fill="#555"/><text x="{2:.1}" y="{3:.1}" fill="#444">requests met</text><path d="M{0:.1},{4:.1} l6,6 l-6,6 l-6,-6 z" fill="none" stroke="#555" stroke-width="2"/><text x="{2:.1}" y="{5:.1}" fill="#444">windows compliant</text>"##,
        left + pw + 18.0,
        top + 14.0,
        left + pw + 30.0,
        top + 18.0,
        top + 30.0,
        top + 40.0
    );
    svg.push_str("</svg></figure>");
    svg
}

fn load(out: &mut String, snapshot: &Snapshot, requests: &[Request], runs: &[(Summary, SimOutcome)], x_max: f64) {
    let Some((_, first)) = runs.first() else { return };
    let bucket_s = (first.horizon_s / 120.0).max(5.0);
    let spans = buckets(first.horizon_s, bucket_s);
    let mut series = Vec::new();
    for (m, model) in snapshot.models.iter().enumerate() {
        let mut counts = vec![0.0; spans.len()];
        for r in requests.iter().filter(|r| r.model == m) {
            counts[bucket_of(r.arrival_s, bucket_s, spans.len())] += 1.0;
        }
        if counts.iter().any(|&c| c > 0.0) {
            series.push(Series::new(model.name.clone(), rate_steps(&counts, &spans)));
        }
    }
    let _ = write!(
        out,
        "<section id=\"load\"><h2>Load</h2><p class=\"hint\">The same requests for every policy: arrivals per model, \
         in buckets of {bucket_s:.0} s (the last bucket is divided by the time it covers).</p>"
    );
    out.push_str(&line_chart(&Chart {
        title: "Arrivals per model",
        y_label: "req/s",
        x_max,
        series,
        limits: Vec::new(),
        step: true,
        stacked: false,
    }));
    out.push_str("</section>");
}

#[allow(clippy::too_many_arguments)]
fn policy_section(
    out: &mut String,
    snapshot: &Snapshot,
    requests: &[Request],
    summary: &Summary,
    outcome: &SimOutcome,
    x_max: f64,
    ttft_limits: &[(String, f64)],
    itl_limits: &[(String, f64)],
) {
    let _ = write!(
        out,
        "<section id=\"policy-{0}\"><h2>{0}</h2><p class=\"hint\">{1:.1} % of {2} requests met the SLO; {3:.1} % of \
         (window, class) pairs complied; {4} dropped, {5} unfinished; {6:.1} GPU-hours, ${7:.2}.</p><div class=\"charts\">",
        escape(&summary.policy),
        100.0 * summary.attainment.share(),
        summary.requests,
        100.0 * summary.windows.share(),
        summary.dropped,
        summary.unfinished,
        summary.gpu_hours,
        summary.cost_usd
    );
    // Replicas by state, all variants together.
    let total = |f: fn(&super::engine::VariantSample) -> u32| -> Vec<(f64, f64)> {
        outcome.samples.iter().map(|s| (s.t_s, f64::from(s.variants.iter().map(f).sum::<u32>()))).collect()
    };
    let states = vec![
        Series::new("ready", total(|v| v.ready)).styled("#2ca02c", "", 1.0),
        Series::new("booting", total(|v| v.booting)).styled("#ff7f0e", "", 1.0),
        Series::new("pending (no GPU)", total(|v| v.pending)).styled("#d62728", "", 1.0),
    ];
    out.push_str(&line_chart(&Chart {
        title: "Replicas by state (all variants)",
        y_label: "replicas",
        x_max,
        series: states,
        limits: Vec::new(),
        step: true,
        stacked: true,
    }));
    let mut per_variant = Vec::new();
    let mut k = 0;
    for (v, variant) in snapshot.variants.iter().enumerate() {
        let desired: Vec<(f64, f64)> =
            outcome.samples.iter().map(|s| (s.t_s, f64::from(s.variants[v].desired))).collect();
        if desired.iter().all(|p| p.1 == 0.0) {
            continue;
        }
        let ready: Vec<(f64, f64)> = outcome.samples.iter().map(|s| (s.t_s, f64::from(s.variants[v].ready))).collect();
        let color = COLORS[k % COLORS.len()];
        per_variant.push(Series::new(format!("{} ready", variant.name), ready).styled(color, "", 2.2));
        per_variant.push(Series::new(format!("{} asked for", variant.name), desired).styled(color, "6 3", 1.2));
        k += 1;
    }
    out.push_str(&line_chart(&Chart {
        title: "Replicas per variant: ready (solid) and asked for (dashed)",
        y_label: "replicas",
        x_max,
        series: per_variant,
        limits: Vec::new(),
        step: true,
        stacked: false,
    }));
    let bucket_s = (outcome.horizon_s / 60.0).max(10.0);
    let spans = buckets(outcome.horizon_s, bucket_s);
    let mut ttft = Vec::new();
    let mut itl = Vec::new();
    for (q, label) in [(0.5, "p50"), (0.95, "p95")] {
        ttft.push(Series::new(
            format!("TTFT {label}"),
            latency_series(requests, outcome, &spans, bucket_s, q, |_, o| o.ttft_ms()),
        ));
        itl.push(Series::new(
            format!("ITL {label}"),
            latency_series(requests, outcome, &spans, bucket_s, q, |r, o| {
                o.itl_ms(r.output_tokens).filter(|_| r.output_tokens > 1)
            }),
        ));
    }
    out.push_str(&line_chart(&Chart {
        title: "TTFT by arrival time (finished requests)",
        y_label: "ms",
        x_max,
        series: ttft,
        limits: ttft_limits.to_vec(),
        step: false,
        stacked: false,
    }));
    out.push_str(&line_chart(&Chart {
        title: "ITL by arrival time (finished requests)",
        y_label: "ms",
        x_max,
        series: itl,
        limits: itl_limits.to_vec(),
        step: false,
        stacked: false,
    }));
    out.push_str(&line_chart(&Chart {
        title: "Requests by outcome, by arrival time",
        y_label: "req/s",
        x_max,
        series: outcome_series(snapshot, requests, outcome, &spans, bucket_s),
        limits: Vec::new(),
        step: true,
        stacked: true,
    }));
    let _ = write!(
        out,
        "</div><p class=\"note\">▲ a value above the chart's top (4× the largest target), labelled with its true value. \
         Latency percentiles cover finished requests; the {} dropped and {} unfinished requests are in \
         \"Requests by outcome\".</p></section>",
        summary.dropped, summary.unfinished
    );
}

/// Distinct SLO target values (TTFT or ITL), labelled by class, statistic and value.
fn targets(snapshot: &Snapshot, ttft: bool) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for m in &snapshot.models {
        for d in &m.demands {
            let t = if ttft { d.slo.ttft } else { d.slo.itl };
            if let Some(t) = t
                && !out.iter().any(|(_, v)| *v == t.ms)
            {
                out.push((
                    format!(
                        "{} {} target {}",
                        snapshot.classes[d.class].name,
                        t.statistic.as_str(),
                        latency_text(t.ms)
                    ),
                    t.ms,
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(series: Vec<Series>, limits: Vec<(String, f64)>) -> String {
        line_chart(&Chart { title: "t", y_label: "y", x_max: 10.0, series, limits, step: true, stacked: false })
    }

    #[test]
    fn charts_are_plain_svg_with_every_series_and_limit() {
        let s =
            vec![Series::new("a<b", vec![(0.0, 1.0), (10.0, 3.0)]), Series::new("c", vec![(0.0, 2.0), (10.0, 2.0)])];
        let html = chart(s, vec![("slo 2.5".into(), 2.5)]);
        assert!(html.starts_with("<figure") && html.ends_with("</figure>"));
        assert_eq!(html.matches("<path").count(), 2);
        assert!(html.contains("a&lt;b") && html.contains("stroke-dasharray=\"5,4\""));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn values_above_the_top_are_marked_with_their_true_value() {
        // Target 20 ms: the top is 80 ms; a run of 500, 897 000 and 300 ms gets one marker at its peak.
        let s =
            vec![Series::new("TTFT p95", vec![(0.0, 10.0), (2.0, 500.0), (4.0, 897_000.0), (6.0, 300.0), (8.0, 10.0)])];
        let html = chart(s, vec![("target".into(), 20.0)]);
        assert_eq!(html.matches("class=\"clipped\"").count(), 1, "{html}");
        assert!(html.contains("data-true-value=\"897000\">897 s</text>"), "{html}");
        assert_eq!(clipped_peaks(&[(0.0, 5.0), (1.0, 9.0), (2.0, 1.0), (3.0, 7.0)], 4.0), vec![(1.0, 9.0), (3.0, 7.0)]);
    }

    #[test]
    fn coinciding_series_are_drawn_apart_and_named_as_the_same() {
        let p = vec![(0.0, 1.0), (10.0, 1.0)];
        let html = chart(vec![Series::new("hpa", p.clone()), Series::new("keda", p)], vec![]);
        assert!(html.contains("keda <em class=\"same\">(same as hpa)</em>"), "{html}");
        let (a, b) = (style_of(0, &Series::new("a", vec![])), style_of(1, &Series::new("b", vec![])));
        assert!(a.dash != b.dash && a.width > b.width && a.color != b.color);
    }

    #[test]
    fn a_partial_last_bucket_is_divided_by_the_time_it_covers() {
        // 25 s in buckets of 10: the last covers 5 s. 10 arrivals in each of the first two buckets
        // and 5 in the last are all 1 req/s.
        let spans = buckets(25.0, 10.0);
        assert_eq!(spans, vec![(0.0, 10.0), (10.0, 10.0), (20.0, 5.0)]);
        // A sliver past the last whole bucket joins it.
        assert_eq!(buckets(20.05, 10.0), vec![(0.0, 10.0), (10.0, 10.05)]);
        assert_eq!(bucket_of(20.05, 10.0, 2), 1);
        let steps = rate_steps(&[10.0, 10.0, 5.0], &spans);
        assert_eq!(steps, vec![(0.0, 1.0), (10.0, 1.0), (20.0, 1.0), (25.0, 1.0)]);
    }

    #[test]
    fn steps_hold_each_value_until_the_next_point() {
        assert_eq!(
            step_vertices(&[(0.0, 1.0), (5.0, 3.0), (9.0, 2.0)]),
            vec![(0.0, 1.0), (5.0, 1.0), (5.0, 3.0), (9.0, 3.0), (9.0, 2.0)]
        );
    }

    #[test]
    fn stacked_areas_add_up() {
        let s = vec![Series::new("a", vec![(0.0, 1.0), (1.0, 2.0)]), Series::new("b", vec![(0.0, 3.0), (1.0, 0.0)])];
        assert_eq!(stack(&s), vec![vec![(0.0, 1.0), (1.0, 2.0)], vec![(0.0, 4.0), (1.0, 2.0)]]);
    }

    fn summary(policy: &str, cost_usd: f64, met: u64, windows_met: u64) -> Summary {
        use super::super::Attainment;
        Summary {
            policy: policy.into(),
            requests: 100,
            attainment: Attainment { met, total: 100 },
            by_class: Default::default(),
            windows: Attainment { met: windows_met, total: 10 },
            windows_by_class: Default::default(),
            gpu_hours: 1.0,
            cost_usd,
            replica_changes: 0,
            pending_replica_s: 0.0,
            dropped: 0,
            unfinished: 0,
            ttft_p95_ms: 0.0,
            itl_p95_ms: 0.0,
            busy_fraction: 0.0,
            batch_fraction: 0.0,
        }
    }

    #[test]
    fn policies_on_one_point_of_the_comparison_share_one_label() {
        let rows = [summary("allot", 51.0, 80, 8), summary("hpa", 41.7, 70, 7), summary("keda", 41.7, 70, 7)];
        let svg = tradeoff_chart(&rows);
        assert!(svg.contains(">hpa = keda</text>") && svg.contains(">allot</text>"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 2 + 1, "two points and the legend's");
    }

    #[test]
    fn nice_steps_are_one_two_five() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(7.0, 5.0), 1.0);
        assert_eq!(nice_step(3600.0, 8.0), 500.0);
    }
}
