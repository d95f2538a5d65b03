//! `vllm bench serve --save-result` JSON (vLLM's `benchmark_serving.py`): one file per run.
//!
//! The keys vLLM writes: `request_rate` (a number, or `inf`/`Infinity` for "all at once"),
//! `burstiness` (arrivals are gamma-distributed with shape = burstiness, so the inter-arrival
//! CV² is 1/burstiness; 1 = Poisson), `max_concurrency`, `duration` (s), `completed`,
//! `request_throughput` (req/s), `total_input_tokens`, `total_output_tokens`, and per metric
//! `mean_*_ms`, `median_*_ms`, `p{N}_*_ms` for `ttft`, `tpot` (per request: (latency − TTFT) /
//! (output − 1)), `itl` (per token) and `e2el` (latency). With `--save-detailed` it adds
//! per-request `input_lens`, `output_lens`, `ttfts` (s) and `itls` (s, per request a list).

use serde_json::Value;

use super::measurement::{Load, Measurement, Observed};
use crate::analyze::sizes::SizeDistribution;

/// Why a vLLM benchmark result could not be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct VllmBenchError {
    pub file: String,
    pub message: String,
}

/// Whether a JSON document looks like a `vllm bench serve` result.
pub fn is_result(value: &Value) -> bool {
    value.get("request_throughput").is_some() && value.get("mean_ttft_ms").is_some()
}

/// Python's `json.dump` writes `Infinity` for `float("inf")` (the default request rate), which
/// is not JSON; it is read as a string here.
pub fn sanitize(text: &str) -> String {
    text.replace(": Infinity", ": \"inf\"").replace(":Infinity", ":\"inf\"")
}

/// Parse one result; `mix` groups runs of one workload (for leave-one-out), `label` names it.
pub fn parse(value: &Value, source: &str, mix: &str) -> Result<Measurement, VllmBenchError> {
    let err = |message: String| VllmBenchError { file: source.to_string(), message };
    let num = |key: &str| value.get(key).and_then(Value::as_f64);
    let need = |key: &str| num(key).ok_or_else(|| err(format!("missing or non-numeric `{key}`")));
    let completed = need("completed")? as u64;
    let duration = need("duration")?;
    let throughput = need("request_throughput")?;
    let rate = match value.get("request_rate") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("inf") || s.eq_ignore_ascii_case("infinity") => None,
        None => None,
        Some(other) => return Err(err(format!("`request_rate` {other} is neither a number nor inf"))),
    };
    let burstiness = num("burstiness").unwrap_or(1.0);
    if !(burstiness.is_finite() && burstiness > 0.0) {
        return Err(err(format!("`burstiness` must be > 0, got {burstiness}")));
    }
    let max_concurrency = num("max_concurrency");
    let load = match (rate, max_concurrency) {
        (Some(r), None) if r.is_finite() && r > 0.0 => Load::Rate { target_rps: r, arrival_cv2: 1.0 / burstiness },
        (_, Some(c)) => Load::Concurrency { requests: c },
        _ => Load::Concurrency { requests: completed as f64 },
    };
    let stats = |metric: &str| Observed {
        mean_ms: num(&format!("mean_{metric}_ms")),
        p50_ms: num(&format!("median_{metric}_ms")).or_else(|| num(&format!("p50_{metric}_ms"))),
        p90_ms: num(&format!("p90_{metric}_ms")),
        p99_ms: num(&format!("p99_{metric}_ms")),
    };
    // Sizes: per request when saved, else the totals' means (the default lognormal shape).
    let lens = |key: &str| -> Option<Vec<f64>> {
        value.get(key)?.as_array()?.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>().filter(|v| !v.is_empty())
    };
    let sizes = |lens_key: &str, total_key: &str| -> Result<(f64, SizeDistribution), VllmBenchError> {
        if let Some(v) = lens(lens_key) {
            let d = SizeDistribution::from_samples(&v).map_err(|e| err(format!("`{lens_key}`: {e}")))?;
            return Ok((d.mean(), d));
        }
        let total = need(total_key)?;
        let mean = total / (completed.max(1) as f64);
        Ok((mean, SizeDistribution::from_mean(mean.max(1.0))))
    };
    let (mean_in, input) = sizes("input_lens", "total_input_tokens")?;
    let (mean_out, output) = sizes("output_lens", "total_output_tokens")?;
    for (key, v) in [("mean_ttft_ms", num("mean_ttft_ms")), ("mean_tpot_ms", num("mean_tpot_ms"))] {
        if let Some(v) = v
            && !(v.is_finite() && v >= 0.0)
        {
            return Err(err(format!("`{key}` must be a finite time in ms ≥ 0, got {v}")));
        }
    }
    let label = match load {
        Load::Rate { target_rps, .. } => format!("{mix} {target_rps:.3} req/s"),
        Load::Concurrency { requests } => format!("{mix} concurrency {requests:.0}"),
        Load::Synchronous => mix.to_string(),
    };
    let e2e = num("mean_e2el_ms").map(|ms| ms / 1000.0);
    Ok(Measurement {
        mix: mix.to_string(),
        label,
        load,
        achieved_rps: throughput,
        concurrency: e2e.map(|l| l * throughput),
        input,
        output,
        mean_input_tokens: mean_in,
        mean_output_tokens: mean_out,
        ttft: stats("ttft"),
        itl_request: stats("tpot"),
        itl_token: stats("itl"),
        mean_latency_s: e2e,
        duration_s: Some(duration),
        completed,
        incomplete: 0,
        errored: num("num_prompts").map_or(0, |n| (n as u64).saturating_sub(completed)),
    })
}

/// The model a result names, if any.
pub fn model(value: &Value) -> Option<String> {
    value.get("model_id").and_then(Value::as_str).map(str::to_string)
}
