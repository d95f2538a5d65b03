//! The comparison table and the self-contained HTML report (inline SVG drawn here: no script,
//! no network, opens offline).

use std::collections::BTreeSet;
use std::fmt::Write;

use super::engine::SimOutcome;
use super::{Request, Summary, quantile};
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
        " {:>8} {:>9} {:>8} {:>10} {:>8} {:>6} {:>12} {:>11} {:>5} {:>6}",
        "GPU-H", "COST $", "CHANGES", "PENDING s", "DROPPED", "UNFIN", "TTFT p95 ms", "ITL p95 ms", "BUSY", "BATCH"
    );
    for r in rows {
        let _ = write!(out, "{:<8} {:>7.1}%", r.policy, 100.0 * r.attainment.share());
        for c in &classes {
            let cell = r.by_class.get(c).map_or("-".to_string(), |a| format!("{:.1}%", 100.0 * a.share()));
            let _ = write!(out, " {cell:>10}");
        }
        let _ = writeln!(
            out,
            " {:>8.1} {:>9.2} {:>8} {:>10.0} {:>8} {:>6} {:>12.0} {:>11.1} {:>4.0}% {:>5.0}%",
            r.gpu_hours,
            r.cost_usd,
            r.replica_changes,
            r.pending_replica_s,
            r.dropped,
            r.unfinished,
            r.ttft_p95_ms,
            r.itl_p95_ms,
            100.0 * r.busy_fraction,
            100.0 * r.batch_fraction
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

/// One named line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart as inline SVG; `limits` are dashed horizontal lines (SLO targets), and values
/// above 4× the largest limit are drawn at the top edge.
pub fn line_chart(title: &str, y_label: &str, series: &[Series], limits: &[(String, f64)], step: bool) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 260.0, 60.0, 170.0, 28.0, 36.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let x_max = xs.fold(1.0_f64, f64::max);
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).chain(limits.iter().map(|l| l.1));
    let mut y_max = ys.fold(0.0_f64, f64::max).max(1e-9) * 1.08;
    // Against a target, what matters is near it: clip at 4× the largest target.
    if let Some(limit) = limits.iter().map(|l| l.1).reduce(f64::max) {
        y_max = y_max.min(4.0 * limit);
    }
    let sx = |x: f64| left + pw * x / x_max;
    let sy = |y: f64| top + ph * (1.0 - y.min(y_max) / y_max);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(svg, r#"<text x="{left}" y="16" font-size="13" font-weight="bold">{}</text>"#, escape(title));
    let _ = write!(svg, r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##);
    let ystep = nice_step(y_max, 5.0);
    let mut y = 0.0;
    while y <= y_max {
        let py = sy(y);
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + pw,
            left - 4.0,
            py + 4.0,
            trim_number(y)
        );
        y += ystep;
    }
    let xstep = nice_step(x_max, 8.0);
    let mut x = 0.0;
    while x <= x_max {
        let px = sx(x);
        let _ = write!(
            svg,
            r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            top + ph + 14.0,
            trim_number(x)
        );
        x += xstep;
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time (s)</text><text x="12" y="{:.1}" transform="rotate(-90 12 {:.1})" text-anchor="middle">{}</text>"#,
        left + pw / 2.0,
        h - 4.0,
        top + ph / 2.0,
        top + ph / 2.0,
        escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut d = String::new();
        let mut prev: Option<(f64, f64)> = None;
        for &(x, y) in &s.points {
            match prev {
                None => {
                    let _ = write!(d, "M{:.1},{:.1}", sx(x), sy(y));
                }
                Some((_, py)) if step => {
                    let _ = write!(d, " L{:.1},{:.1} L{:.1},{:.1}", sx(x), sy(py), sx(x), sy(y));
                }
                Some(_) => {
                    let _ = write!(d, " L{:.1},{:.1}", sx(x), sy(y));
                }
            }
            prev = Some((x, y));
        }
        let _ = write!(svg, r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="1.5"/>"#);
        let ly = top + 12.0 + 14.0 * i as f64;
        let _ = write!(
            svg,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            left + pw + 8.0,
            left + pw + 24.0,
            left + pw + 28.0,
            ly + 4.0,
            escape(&truncate(&s.name, 24))
        );
    }
    for (j, (name, y)) in limits.iter().enumerate() {
        let py = sy(*y);
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#000" stroke-dasharray="5,4"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            left + pw,
            left + pw + 8.0,
            top + 12.0 + 14.0 * (series.len() + j) as f64 + 4.0,
            escape(&format!("- - {name}"))
        );
    }
    svg.push_str("</svg>");
    svg
}

fn trim_number(v: f64) -> String {
    if v >= 100.0 || v == v.round() { format!("{v:.0}") } else { format!("{v:.2}") }
}

/// Per-bucket percentile of a latency by arrival time.
fn latency_series(
    requests: &[Request],
    outcome: &SimOutcome,
    bucket_s: f64,
    q: f64,
    latency: impl Fn(&Request, &super::engine::RequestOutcome) -> Option<f64>,
) -> Vec<(f64, f64)> {
    let buckets = (outcome.horizon_s / bucket_s).floor() as usize + 1;
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); buckets];
    for (r, o) in requests.iter().zip(&outcome.requests) {
        if let Some(v) = latency(r, o) {
            let b = ((r.arrival_s / bucket_s) as usize).min(buckets - 1);
            values[b].push(v);
        }
    }
    values
        .iter_mut()
        .enumerate()
        .filter(|(_, v)| !v.is_empty())
        .map(|(b, v)| ((b as f64 + 0.5) * bucket_s, quantile(v, q)))
        .collect()
}

/// The HTML report: the table, the load, and per policy its replicas and latency percentiles.
pub fn html(snapshot: &Snapshot, requests: &[Request], runs: &[(Summary, SimOutcome)], header: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Allot simulation</title><style>\
         body{{font-family:sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse}} \
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} th{{background:#f4f4f4}} \
         td:first-child{{text-align:left}} h2{{margin-top:32px}}</style></head><body>\
         <h1>Allot simulation</h1><p>{}</p>",
        escape(header)
    );
    let rows: Vec<Summary> = runs.iter().map(|r| r.0.clone()).collect();
    let classes = classes(&rows);
    out.push_str("<table><tr><th>policy</th><th>SLO met</th>");
    for c in &classes {
        let _ = write!(out, "<th>{}</th>", escape(c));
    }
    out.push_str("<th>GPU-hours</th><th>cost $</th><th>replica changes</th><th>pending replica-s</th><th>dropped</th><th>unfinished</th><th>TTFT p95 ms</th><th>ITL p95 ms</th><th>replicas busy</th><th>batch full</th></tr>");
    for r in &rows {
        let _ = write!(out, "<tr><td>{}</td><td>{:.1} %</td>", escape(&r.policy), 100.0 * r.attainment.share());
        for c in &classes {
            let cell = r.by_class.get(c).map_or("-".to_string(), |a| format!("{:.1} %", 100.0 * a.share()));
            let _ = write!(out, "<td>{cell}</td>");
        }
        let _ = write!(
            out,
            "<td>{:.1}</td><td>{:.2}</td><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.1}</td><td>{:.0} %</td><td>{:.0} %</td></tr>",
            r.gpu_hours,
            r.cost_usd,
            r.replica_changes,
            r.pending_replica_s,
            r.dropped,
            r.unfinished,
            r.ttft_p95_ms,
            r.itl_p95_ms,
            100.0 * r.busy_fraction,
            100.0 * r.batch_fraction
        );
    }
    out.push_str("</table><p>SLO met: share of requests whose own TTFT and mean ITL are both within their class's target values. Replicas busy: time with a step running over ready time. Batch full: mean requests in the batch over B.</p>");

    // Load: the same trace for every policy.
    if let Some((_, first)) = runs.first() {
        let bucket_s = (first.horizon_s / 120.0).max(5.0);
        let buckets = (first.horizon_s / bucket_s).floor() as usize + 1;
        let mut series = Vec::new();
        for (m, model) in snapshot.models.iter().enumerate() {
            let mut counts = vec![0u32; buckets];
            for r in requests.iter().filter(|r| r.model == m) {
                counts[((r.arrival_s / bucket_s) as usize).min(buckets - 1)] += 1;
            }
            if counts.iter().any(|&c| c > 0) {
                let points =
                    counts.iter().enumerate().map(|(b, &c)| (b as f64 * bucket_s, f64::from(c) / bucket_s)).collect();
                series.push(Series { name: model.name.clone(), points });
            }
        }
        out.push_str("<h2>Load</h2>");
        out.push_str(&line_chart("Arrivals per model", "req/s", &series, &[], true));
    }

    let ttft_limits: Vec<(String, f64)> = targets(snapshot, true);
    let itl_limits: Vec<(String, f64)> = targets(snapshot, false);
    for (summary, outcome) in runs {
        let _ = write!(out, "<h2>{}</h2>", escape(&summary.policy));
        let mut series = Vec::new();
        for (v, variant) in snapshot.variants.iter().enumerate() {
            let points: Vec<(f64, f64)> =
                outcome.samples.iter().map(|s| (s.t_s, f64::from(s.variants[v].desired))).collect();
            if points.iter().any(|p| p.1 > 0.0) {
                series.push(Series { name: variant.name.clone(), points });
            }
        }
        out.push_str(&line_chart("Replicas per variant (asked for)", "replicas", &series, &[], true));
        let bucket_s = (outcome.horizon_s / 60.0).max(10.0);
        let mut ttft = Vec::new();
        let mut itl = Vec::new();
        for (q, label) in [(0.5, "p50"), (0.95, "p95")] {
            ttft.push(Series {
                name: format!("TTFT {label}"),
                points: latency_series(requests, outcome, bucket_s, q, |_, o| o.ttft_ms()),
            });
            itl.push(Series {
                name: format!("ITL {label}"),
                points: latency_series(requests, outcome, bucket_s, q, |r, o| {
                    o.itl_ms(r.output_tokens).filter(|_| r.output_tokens > 1)
                }),
            });
        }
        out.push_str(&line_chart("TTFT by arrival time", "ms", &ttft, &ttft_limits, false));
        out.push_str(&line_chart("ITL by arrival time", "ms", &itl, &itl_limits, false));
    }
    out.push_str("</body></html>\n");
    out
}

/// Distinct SLO target values (TTFT or ITL), labelled by model/class.
fn targets(snapshot: &Snapshot, ttft: bool) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for m in &snapshot.models {
        for d in &m.demands {
            let t = if ttft { d.slo.ttft } else { d.slo.itl };
            if let Some(t) = t
                && !out.iter().any(|(_, v)| *v == t.ms)
            {
                out.push((format!("{} {}", snapshot.classes[d.class].name, t.ms), t.ms));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_plain_svg_with_every_series_and_limit() {
        let s = vec![
            Series { name: "a<b".into(), points: vec![(0.0, 1.0), (10.0, 3.0)] },
            Series { name: "c".into(), points: vec![(0.0, 2.0), (10.0, 2.0)] },
        ];
        let svg = line_chart("t", "y", &s, &[("slo 2.5".into(), 2.5)], true);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<path").count(), 2);
        assert!(svg.contains("a&lt;b") && svg.contains("stroke-dasharray"));
        assert!(!svg.contains("<script"));
    }

    #[test]
    fn nice_steps_are_one_two_five() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(7.0, 5.0), 1.0);
        assert_eq!(nice_step(3600.0, 8.0), 500.0);
    }
}
