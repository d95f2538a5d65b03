//! Every PromQL expression Allot ships — Grafana panels and annotations in
//! `deploy/grafana/allot.json`, recording rules and alerts in `deploy/prometheus/rules.yaml` — as
//! plain text a real Prometheus can evaluate, plus the metric names each one reads.
//!
//! Grafana variables become what matches everything: `$model`, `${class}`, … → `.*` (the dashboard
//! only uses them after `=~`), and interval macros become durations (`$__rate_interval` → `1m`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Where an expression comes from, for failure messages.
#[derive(Clone, Debug)]
pub struct Expr {
    /// `panel "Title" (A)`, `annotation "Plan changes"`, `record allot:…`, `alert AllotX`.
    pub source: String,
    /// As written in the file.
    pub raw: String,
    /// With Grafana variables substituted: ready to send to Prometheus.
    pub promql: String,
}

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn dashboard_path() -> PathBuf {
    repo_path("deploy/grafana/allot.json")
}

pub fn rules_path() -> PathBuf {
    repo_path("deploy/prometheus/rules.yaml")
}

/// The dashboard as JSON.
pub fn dashboard() -> Result<Value> {
    let path = dashboard_path();
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Every panel, rows' nested panels included (collapsed rows hold theirs in `panels`).
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every panel target's and every Prometheus annotation's expression.
pub fn dashboard_exprs() -> Result<Vec<Expr>> {
    let dashboard = dashboard()?;
    let mut out = Vec::new();
    for panel in panels(&dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let raw = target["expr"].as_str().unwrap_or_default().to_string();
            let source = format!("panel {} ({})", panel["title"], target["refId"].as_str().unwrap_or("?"));
            out.push(Expr { source, promql: substitute(&raw), raw });
        }
    }
    for annotation in dashboard["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(raw) = annotation["expr"].as_str() {
            let source = format!("annotation {}", annotation["name"]);
            out.push(Expr { source, promql: substitute(raw), raw: raw.to_string() });
        }
    }
    Ok(out)
}

/// The groups of a plain Prometheus rule file, as JSON.
pub fn rule_groups(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: Value = serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(file["groups"].clone())
}

/// Every recording rule's and alert's expression in `rules.yaml`.
pub fn rule_exprs() -> Result<Vec<Expr>> {
    let groups = rule_groups(&rules_path())?;
    let mut out = Vec::new();
    for group in groups.as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let source = match (rule["record"].as_str(), rule["alert"].as_str()) {
                (Some(name), _) => format!("record {name}"),
                (_, Some(name)) => format!("alert {name}"),
                _ => bail!("a rule in group {} is neither a record nor an alert", group["name"]),
            };
            let raw = rule["expr"].as_str().unwrap_or_default().trim().to_string();
            out.push(Expr { source, promql: substitute(&raw), raw });
        }
    }
    Ok(out)
}

/// Names recorded by `rules.yaml`.
pub fn recorded_names() -> Result<BTreeSet<String>> {
    let groups = rule_groups(&rules_path())?;
    Ok(groups
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["record"].as_str().map(str::to_string))
        .collect())
}

/// Replaces Grafana variables: interval macros by durations, everything else by `.*`.
pub fn substitute(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                // `${name:format}` keeps only the name.
                Some(end) => (braced[..end].split(':').next().unwrap_or(""), end + 2),
                None => ("", 0),
            }
        } else {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (&after[..end], end)
        };
        if name.is_empty() {
            // A lone `$` (end of a regex): keep it.
            out.push('$');
            rest = after;
            continue;
        }
        match name {
            "__rate_interval" | "__interval" => out.push_str("1m"),
            "__range" => out.push_str("5m"),
            "__range_s" => out.push_str("300"),
            // Regex back-references such as label_replace's "$1" are not variables.
            _ if name.starts_with(|c: char| c.is_ascii_digit()) => {
                out.push('$');
                out.push_str(name);
            }
            _ => out.push_str(".*"),
        }
        rest = &after[consumed..];
    }
    out.push_str(rest);
    out
}

/// The metric names an expression reads: identifiers outside strings, label matchers, ranges and
/// grouping lists that are not functions, keywords or numbers.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    // Blank out string literals, `{…}` and `[…]`.
    let mut cleaned = String::with_capacity(expr.len());
    let mut quote: Option<char> = None;
    let mut depth = 0usize;
    let mut escaped = false;
    for c in expr.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                continue;
            }
            None if c == '"' || c == '\'' || c == '`' => {
                quote = Some(c);
                cleaned.push(' ');
                continue;
            }
            None => {}
        }
        match c {
            '{' | '[' => {
                depth += 1;
                cleaned.push(' ');
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                cleaned.push(' ');
            }
            _ if depth > 0 => {}
            _ => cleaned.push(c),
        }
    }
    // Tokens: identifiers and single punctuation characters.
    let mut tokens: Vec<String> = Vec::new();
    let mut chars = cleaned.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '.' {
            let mut token = c.to_string();
            while let Some(&n) = chars.peek() {
                if n.is_ascii_alphanumeric() || n == '_' || n == ':' || n == '.' {
                    token.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(token);
        } else if !c.is_whitespace() {
            tokens.push(c.to_string());
        }
    }
    const GROUPING: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    // Aggregators may be followed by `by (…)` rather than `(`, so they are keywords too.
    const KEYWORDS: [&str; 20] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "atan2",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i].as_str();
        let next = tokens.get(i + 1).map(String::as_str);
        if GROUPING.contains(&token.to_ascii_lowercase().as_str()) {
            // Skip the label list, if any.
            if next == Some("(") {
                while i < tokens.len() && tokens[i] != ")" {
                    i += 1;
                }
            }
        } else if token.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && next != Some("(")
            && !KEYWORDS.contains(&token.to_ascii_lowercase().as_str())
        {
            names.insert(token.to_string());
        }
        i += 1;
    }
    names
}

/// Metrics Allot exports on `/metrics` (the controller's contract with the dashboard and rules).
pub const ALLOT_METRICS: &[&str] = &[
    "allot_desired_replicas",
    "allot_planned_replicas",
    "allot_current_replicas",
    "allot_ready_replicas",
    "allot_pending_replicas",
    "allot_predicted_ttft_seconds",
    "allot_predicted_itl_seconds",
    "allot_predicted_slo_met",
    "allot_demand_requests_per_second",
    "allot_served_ratio",
    "allot_unmet_demand_requests_per_second",
    "allot_predicted_slo_attainment_ratio",
    "allot_slo_objective_ratio",
    "allot_slo_target_seconds",
    "allot_slo_target_bucket_info",
    "allot_cost_dollars_per_hour",
    "allot_gpus",
    "allot_plan_duration_seconds_bucket",
    "allot_plan_duration_seconds_sum",
    "allot_plan_duration_seconds_count",
    "allot_solver_time_seconds",
    "allot_solver_gap_ratio",
    "allot_solver_status",
    "allot_plans_total",
    "allot_plan_changes_total",
    "allot_fair_share_active",
    "allot_last_plan_timestamp_seconds",
    "allot_metric_age_seconds",
    "allot_metric_stale",
    "allot_actuation_errors_total",
    "allot_observe_errors_total",
    "allot_configured",
    "allot_cycles_total",
    "allot_leader",
    "allot_model_error_ratio",
    "allot_model_correction_ratio",
    "allot_model_calibration_confidence_ratio",
    "allot_model_drift",
    "allot_forecast_requests_per_second",
    "allot_forecast_horizon_seconds",
    "allot_panic",
];

/// vLLM's metrics that the rules and the collector read.
pub const VLLM_METRICS: &[&str] = &[
    "vllm:request_success_total",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:time_to_first_token_seconds_sum",
    "vllm:time_to_first_token_seconds_count",
    "vllm:time_per_output_token_seconds_bucket",
    "vllm:time_per_output_token_seconds_sum",
    "vllm:time_per_output_token_seconds_count",
    "vllm:request_prompt_tokens_sum",
    "vllm:request_prompt_tokens_count",
    "vllm:request_generation_tokens_sum",
    "vllm:request_generation_tokens_count",
];

/// Every name an expression may read: Allot's, vLLM's and the recording rules'.
pub fn known_metric_names() -> Result<BTreeSet<String>> {
    let mut known: BTreeSet<String> = ALLOT_METRICS.iter().chain(VLLM_METRICS).map(|s| s.to_string()).collect();
    known.extend(recorded_names()?);
    Ok(known)
}
