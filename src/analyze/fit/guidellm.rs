//! GuideLLM benchmark exports: the CSV of GuideLLM 0.5.x and the JSON of its earlier versions.
//!
//! **CSV (0.5.x).** Three header rows, then one row per benchmark (synchronous, throughput,
//! then the constant-rate runs). The header is written from the first benchmark, and every
//! later row carries one block per request status with data (Successful, Incomplete, Errored),
//! so rows are read by position rules, not by header (layout in
//! `shared/data/benchmarks/README.md`): columns 0–22 fixed, then 4-cell blocks (mean, median,
//! std, percentile list [min, p0.1, p1, p5, p10, p25, p75, p90, p95, p99, max]) from column 23.
//! Units are checked against the header: latency in seconds, TTFT and ITL in ms.
//!
//! **JSON (earlier GuideLLM).** `{"benchmarks": [...]}` with `args.strategy`, `duration`,
//! `run_stats.requests_made` and `metrics.<name>.successful` distributions.

use serde_json::Value;

use super::measurement::{Load, Measurement, Observed};
use crate::analyze::sizes::SizeDistribution;

/// Why a GuideLLM export could not be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct GuidellmError {
    pub file: String,
    pub message: String,
}

fn error(source: &str, message: impl Into<String>) -> GuidellmError {
    GuidellmError { file: source.to_string(), message: message.into() }
}

/// Whether `text` looks like a GuideLLM CSV export (its first header row).
pub fn is_csv(text: &str) -> bool {
    text.trim_start().starts_with("Run Info")
}

/// Whether `text` looks like a GuideLLM JSON export.
pub fn is_json(value: &Value) -> bool {
    value
        .get("benchmarks")
        .and_then(Value::as_array)
        .is_some_and(|b| b.first().is_some_and(|first| first.get("metrics").is_some() && first.get("args").is_some()))
}

/// Levels of the 11-value percentile lists.
const LIST_LEVELS: [f64; 11] = [0.0, 0.001, 0.01, 0.05, 0.10, 0.25, 0.75, 0.90, 0.95, 0.99, 1.0];

/// One distribution block of a CSV row.
struct Block {
    mean: f64,
    median: f64,
    list: Vec<f64>,
}

impl Block {
    fn percentile(&self, level: f64) -> Option<f64> {
        if level == 0.5 {
            return Some(self.median);
        }
        LIST_LEVELS.iter().position(|l| (*l - level).abs() < 1e-12).and_then(|i| self.list.get(i).copied())
    }

    fn observed(&self, scale: f64) -> Observed {
        Observed {
            mean_ms: Some(self.mean * scale),
            p50_ms: Some(self.median * scale),
            p90_ms: self.percentile(0.90).map(|v| v * scale),
            p99_ms: self.percentile(0.99).map(|v| v * scale),
        }
    }

    /// The token-count distribution this block describes.
    fn sizes(&self) -> Option<SizeDistribution> {
        let mut points: Vec<(f64, f64)> = Vec::new();
        for (level, v) in LIST_LEVELS.iter().zip(&self.list).filter(|(l, _)| **l > 0.0 && **l < 1.0) {
            if *level > 0.5 && points.last().is_none_or(|p| p.0 < 0.5) {
                points.push((0.5, self.median));
            }
            points.push((*level, *v));
        }
        // Percentile lists are non-decreasing; the median sits between p25 and p75.
        for i in 1..points.len() {
            points[i].1 = points[i].1.max(points[i - 1].1);
        }
        let max = self.list.last().copied();
        SizeDistribution::from_percentiles(Some(self.mean), &points, max).ok().map(|(d, _)| d)
    }
}

/// Parse a GuideLLM 0.5.x CSV export; `mix` names the sweep (e.g. the file stem).
pub fn parse_csv(text: &str, source: &str, mix: &str) -> Result<Vec<Measurement>, GuidellmError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
    let mut rows: Vec<Vec<String>> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| error(source, format!("malformed CSV: {e}")))?;
        rows.push(record.iter().map(str::to_string).collect());
    }
    if rows.len() < 4 {
        return Err(error(source, "expected three header rows and at least one benchmark row"));
    }
    let header = |r: usize, c: usize| rows[r].get(c).map(String::as_str).unwrap_or("");
    if header(0, 0) != "Run Info" || header(0, 23) != "Request Latency" {
        return Err(error(
            source,
            "not a GuideLLM 0.5 CSV export (row 1 must start with \"Run Info\" and column 24 be \"Request Latency\")",
        ));
    }
    // Units of the first row's blocks, as the header names them.
    if header(1, 23) != "Successful Sec" {
        return Err(error(source, format!("request latency must be in seconds (header {:?})", header(1, 23))));
    }
    let profile: Value = serde_json::from_str(header(3, 2))
        .map_err(|e| error(source, format!("row 4, column 3 (Profile): not JSON: {e}")))?;
    let strategies = profile.get("completed_strategies").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out = Vec::new();
    for (i, row) in rows[3..].iter().enumerate() {
        let line = i + 4;
        let at = |c: usize| row.get(c).map(String::as_str).unwrap_or("");
        let number = |c: usize, what: &str| -> Result<f64, GuidellmError> {
            at(c)
                .trim()
                .parse::<f64>()
                .map_err(|_| error(source, format!("row {line}, column {}: {what} {:?} is not a number", c + 1, at(c))))
        };
        let block = |b: usize| -> Result<Block, GuidellmError> {
            let c = 23 + 4 * b;
            let list: Vec<f64> = serde_json::from_str(at(c + 3))
                .map_err(|_| error(source, format!("row {line}, column {}: expected a percentile list", c + 4)))?;
            if list.len() != LIST_LEVELS.len() {
                return Err(error(
                    source,
                    format!("row {line}, column {}: {} percentiles, expected 11", c + 4, list.len()),
                ));
            }
            Ok(Block { mean: number(c, "mean")?, median: number(c + 1, "median")?, list })
        };
        let whole = |b: usize| -> bool {
            serde_json::from_str::<Vec<f64>>(at(23 + 4 * b + 3)).is_ok_and(|l| l.iter().all(|v| v.fract() == 0.0))
        };
        let strategy = at(8).to_string();
        let completed = number(19, "successful requests")? as u64;
        let incomplete = number(20, "incomplete requests")? as u64;
        let errored = number(21, "errored requests")? as u64;
        let duration_s = number(16, "duration")?;
        // k Streaming Iterations blocks (1 to 3) from block 1; the others follow.
        let mut k = 0;
        while k < 3 && whole(1 + k) {
            k += 1;
        }
        if k == 0 {
            return Err(error(source, format!("row {line}: no Streaming Iterations block at column 28")));
        }
        let latency = block(0)?;
        let ttft = block(1 + k)?;
        let itl = block(1 + 3 * k)?;
        let rps = block(1 + 4 * k)?;
        let concurrency_block = 1 + 4 * k + 1 + usize::from(errored > 0);
        let concurrency = block(concurrency_block)?;
        let input_block = concurrency_block + 1 + usize::from(incomplete > 0) + usize::from(errored > 0);
        let input = block(input_block)?;
        let output = block(input_block + 1 + usize::from(incomplete > 0) + usize::from(errored > 0))?;
        // Plausibility of the block positions: Little's law links rate, latency and concurrency.
        let little = rps.mean * latency.mean;
        if strategy != "synchronous" && little > 0.0 && !(0.5..=2.0).contains(&(concurrency.mean / little)) {
            return Err(error(
                source,
                format!(
                    "row {line}: concurrency {:.2} does not match rate × latency {:.2}: unexpected column layout",
                    concurrency.mean, little
                ),
            ));
        }
        let (Some(input_sizes), Some(output_sizes)) = (input.sizes(), output.sizes()) else {
            return Err(error(source, format!("row {line}: token-count percentiles are not a distribution")));
        };
        let target_rps = strategies.get(i).and_then(|s| s.get("rate")).and_then(Value::as_f64);
        let load = match strategy.as_str() {
            "synchronous" => Load::Synchronous,
            "constant" | "poisson" => match target_rps {
                Some(rate) => {
                    Load::Rate { target_rps: rate, arrival_cv2: if strategy == "constant" { 0.0 } else { 1.0 } }
                }
                None => return Err(error(source, format!("row {line}: {strategy} run without a rate in the profile"))),
            },
            "throughput" | "concurrent" => Load::Concurrency { requests: concurrency.mean },
            other => return Err(error(source, format!("row {line}: unknown strategy {other:?}"))),
        };
        let label = match load {
            Load::Rate { target_rps, .. } => format!("{mix} {strategy} {target_rps:.3} req/s"),
            _ => format!("{mix} {strategy}"),
        };
        out.push(Measurement {
            mix: mix.to_string(),
            label,
            load,
            achieved_rps: rps.mean,
            concurrency: Some(concurrency.mean),
            mean_input_tokens: input.mean,
            mean_output_tokens: output.mean,
            input: input_sizes,
            output: output_sizes,
            ttft: ttft.observed(1.0),
            itl_request: itl.observed(1.0),
            itl_token: Observed::default(),
            mean_latency_s: Some(latency.mean),
            duration_s: Some(duration_s),
            completed,
            incomplete,
            errored,
        });
    }
    Ok(out)
}

/// Parse an earlier GuideLLM JSON export.
pub fn parse_json(value: &Value, source: &str, mix: &str) -> Result<Vec<Measurement>, GuidellmError> {
    let benchmarks =
        value.get("benchmarks").and_then(Value::as_array).ok_or_else(|| error(source, "no \"benchmarks\" list"))?;
    let mut out = Vec::new();
    for (i, b) in benchmarks.iter().enumerate() {
        let path = format!("benchmarks[{i}]");
        let get = |p: &[&str]| p.iter().try_fold(b, |v, k| v.get(*k));
        let successful = |metric: &str| get(&["metrics", metric, "successful"]);
        let observed = |metric: &str, scale: f64| -> Observed {
            let d = successful(metric);
            let f = |key: &str| d.and_then(|d| d.get(key)).and_then(Value::as_f64).map(|v| v * scale);
            let p = |key: &str| {
                d.and_then(|d| d.get("percentiles")).and_then(|p| p.get(key)).and_then(Value::as_f64).map(|v| v * scale)
            };
            Observed { mean_ms: f("mean"), p50_ms: f("median").or(p("p50")), p90_ms: p("p90"), p99_ms: p("p99") }
        };
        let sizes = |metric: &str| -> Option<(f64, SizeDistribution)> {
            let d = successful(metric)?;
            let mean = d.get("mean")?.as_f64()?;
            let pct = d.get("percentiles");
            let mut points = Vec::new();
            for (key, level) in [
                ("p01", 0.01),
                ("p05", 0.05),
                ("p10", 0.1),
                ("p25", 0.25),
                ("p50", 0.5),
                ("p75", 0.75),
                ("p90", 0.9),
                ("p95", 0.95),
                ("p99", 0.99),
            ] {
                if let Some(v) = pct.and_then(|p| p.get(key)).and_then(Value::as_f64) {
                    let v = points.last().map_or(v, |&(_, last): &(f64, f64)| v.max(last));
                    points.push((level, v));
                }
            }
            let max = d.get("max").and_then(Value::as_f64);
            let dist = if points.is_empty() {
                SizeDistribution::from_mean(mean)
            } else {
                SizeDistribution::from_percentiles(Some(mean), &points, max).ok()?.0
            };
            Some((mean, dist))
        };
        let strategy = get(&["args", "strategy", "type_"]).and_then(Value::as_str).unwrap_or("");
        let rate = get(&["args", "strategy", "rate"]).and_then(Value::as_f64);
        let count =
            |status: &str| -> u64 { get(&["run_stats", "requests_made", status]).and_then(Value::as_u64).unwrap_or(0) };
        let achieved =
            successful("requests_per_second").and_then(|d| d.get("mean")).and_then(Value::as_f64).unwrap_or(0.0);
        let concurrency = successful("request_concurrency").and_then(|d| d.get("mean")).and_then(Value::as_f64);
        let load = match strategy {
            "synchronous" => Load::Synchronous,
            "constant" | "poisson" => Load::Rate {
                target_rps: rate
                    .ok_or_else(|| error(source, format!("{path}.args.strategy: {strategy} without a rate")))?,
                arrival_cv2: if strategy == "constant" { 0.0 } else { 1.0 },
            },
            "throughput" | "concurrent" => Load::Concurrency { requests: concurrency.unwrap_or(0.0) },
            other => return Err(error(source, format!("{path}.args.strategy.type_: unknown strategy {other:?}"))),
        };
        let (Some((mean_in, input)), Some((mean_out, output))) =
            (sizes("prompt_token_count"), sizes("output_token_count"))
        else {
            return Err(error(source, format!("{path}.metrics: no prompt_token_count / output_token_count")));
        };
        let latency_s = successful("request_latency").and_then(|d| d.get("mean")).and_then(Value::as_f64);
        let label = match load {
            Load::Rate { target_rps, .. } => format!("{mix} {strategy} {target_rps:.3} req/s"),
            _ => format!("{mix} {strategy}"),
        };
        out.push(Measurement {
            mix: mix.to_string(),
            label,
            load,
            achieved_rps: achieved,
            concurrency,
            input,
            output,
            mean_input_tokens: mean_in,
            mean_output_tokens: mean_out,
            ttft: observed("time_to_first_token_ms", 1.0),
            itl_request: observed("inter_token_latency_ms", 1.0),
            itl_token: Observed::default(),
            mean_latency_s: latency_s,
            duration_s: b.get("duration").and_then(Value::as_f64),
            completed: count("successful"),
            incomplete: count("incomplete"),
            errored: count("errored"),
        });
    }
    Ok(out)
}

/// The model a GuideLLM JSON export names, if any.
pub fn json_model(value: &Value) -> Option<String> {
    value.get("benchmarks")?.as_array()?.first()?.get("worker")?.get("backend_model")?.as_str().map(str::to_string)
}
