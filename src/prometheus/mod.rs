//! Prometheus adapter: load and latency per model from vLLM's metrics through Prometheus's HTTP
//! API (DESIGN §5). These types are what the rest of the controller consumes; [`PrometheusCollector`]
//! fills them from a real Prometheus, over [`PrometheusClient`].

use std::collections::BTreeMap;
use std::future::Future;

mod client;
mod collector;

pub use client::{ClientSettings, ConfigError, PrometheusClient, QueryError, Sample, parse_response};
pub use collector::{CollectorSettings, GatewayQueueSettings, PrometheusCollector, is_label_name, is_metric_name};

/// What Prometheus says about one model (`model_name` label of vLLM's metrics) over the window.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelMetrics {
    pub model: String,
    /// Arrivals: completions plus the growth of running + waiting requests, req/s. Completions
    /// alone under-count demand exactly when the model is overloaded.
    pub arrival_rps: f64,
    /// Completions, req/s.
    pub completion_rps: f64,
    /// Mean prompt tokens per request; `None` when no request finished in the window.
    pub input_tokens: Option<f64>,
    /// Mean generated tokens per request; `None` when no request finished in the window.
    pub output_tokens: Option<f64>,
    /// The prompt-size distribution over the window (`vllm:request_prompt_tokens`'s buckets);
    /// `None` when no request finished or the buckets are unusable (the mean still plans).
    pub input_histogram: Option<TokenHistogram>,
    /// The same for generated tokens (`vllm:request_generation_tokens`).
    pub output_histogram: Option<TokenHistogram>,
    /// Requests in batches now, all replicas together.
    pub running: f64,
    /// Requests queued now, all replicas together.
    pub waiting: f64,
    /// Observed mean time to first token over the window, seconds.
    pub ttft_mean_s: Option<f64>,
    /// Observed mean inter-token latency over the window, seconds.
    pub itl_mean_s: Option<f64>,
    /// The fullest KV cache of the model's servers now (0–1: vLLM's `kv_cache_usage_perc`, or
    /// `gpu_cache_usage_perc` before v0.10); `None` where not exported or not a usable number.
    pub kv_usage_max: Option<f64>,
    /// Age of the newest sample behind these numbers, seconds.
    pub age_s: f64,
}

/// A token-count histogram over the rate window, all replicas together: the rate of observations
/// at or below each finite bucket bound (ascending, non-decreasing) and of all observations.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenHistogram {
    /// `(le, cumulative observations per second)`.
    pub buckets: Vec<(f64, f64)>,
    /// Observations per second (the `+Inf` bucket).
    pub count: f64,
}

/// Why a model has no usable metrics this cycle (the controller holds it, never scales it down).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum MetricsProblem {
    /// Prometheus could not be reached or answered with an error.
    #[error("prometheus unavailable: {0}")]
    Unavailable(String),
    /// No series for the model.
    #[error("no metrics for model {0}")]
    Missing(String),
    /// The newest sample is older than the staleness limit.
    #[error("metrics for model {model} are {age_s:.0} s old (limit {limit_s:.0} s)")]
    Stale { model: String, age_s: f64, limit_s: f64 },
    /// A value was NaN, infinite or negative.
    #[error("metric {metric} for model {model} is not a usable number: {value}")]
    Invalid { model: String, metric: String, value: String },
    /// Requests are in flight but the counters did not move over the whole window: the exporter
    /// (or the engine behind it) is stuck, and flat counters would read as zero load.
    #[error(
        "metrics for model {model} look stuck: {in_flight:.0} requests in flight but none finished or arrived over the window"
    )]
    Stuck { model: String, in_flight: f64 },
}

/// Per model name, its metrics or why there are none.
pub type Collected = BTreeMap<String, Result<ModelMetrics, MetricsProblem>>;

/// Where the controller gets load from: Prometheus in a cluster, a test double in tests.
pub trait LoadSource: Send + Sync + 'static {
    /// Metrics of each of `models` (vLLM `model_name`s); one entry per requested model.
    fn collect(&self, models: &[String]) -> impl Future<Output = Collected> + Send;

    /// Requests waiting at the gateway for each of `models` that has some: what brings a model
    /// scaled to zero back, since it has no server to report load. A source without a gateway
    /// reports none.
    fn gateway_waiting(
        &self,
        models: &[String],
    ) -> impl Future<Output = Result<BTreeMap<String, f64>, MetricsProblem>> + Send {
        let _ = models;
        async { Ok(BTreeMap::new()) }
    }
}
