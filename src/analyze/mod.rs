//! Analysis: from fitted latency profiles to per-replica capacity at an SLO (DESIGN §3).
//!
//! Everything here is pure f64 math on validated inputs.

pub mod capacity;
pub mod engine;
pub mod fit;
pub mod fleet;
mod normal;
pub mod queue;
pub mod sizes;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Which part of the request a replica serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Ordinary vLLM: prefill and decode on the same replica.
    #[default]
    Both,
    /// Disaggregated prefill: produces the first token and the KV cache.
    Prefill,
    /// Disaggregated decode: produces the remaining tokens.
    Decode,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Both => "both",
            Role::Prefill => "prefill",
            Role::Decode => "decode",
        }
    }
}

/// The statistic an SLO target constrains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Statistic {
    #[default]
    Mean,
    P50,
    P90,
    P95,
    P99,
}

impl Statistic {
    /// The quantile level, `None` for the mean.
    pub fn quantile(self) -> Option<f64> {
        match self {
            Statistic::Mean => None,
            Statistic::P50 => Some(0.50),
            Statistic::P90 => Some(0.90),
            Statistic::P95 => Some(0.95),
            Statistic::P99 => Some(0.99),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Statistic::Mean => "mean",
            Statistic::P50 => "p50",
            Statistic::P90 => "p90",
            Statistic::P95 => "p95",
            Statistic::P99 => "p99",
        }
    }
}

/// Which requests an ITL statistic is taken over (DESIGN §3: one meaning per statistic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum ItlPopulation {
    /// Each request's mean time per output token after the first: what GuideLLM and `vllm bench`
    /// report, what per-request attainment counts, and vLLM's
    /// `vllm:request_time_per_output_token_seconds` histogram.
    #[default]
    Request,
    /// Every generated token's gap to the previous one: vLLM's `vllm:inter_token_latency_seconds`
    /// (formerly `vllm:time_per_output_token_seconds`) histogram.
    Token,
}

impl ItlPopulation {
    pub fn as_str(self) -> &'static str {
        match self {
            ItlPopulation::Request => "request",
            ItlPopulation::Token => "token",
        }
    }
}

/// Fitted latency parameters of one model on one accelerator arrangement (DESIGN §3), in ms.
///
/// One engine step with k decoding requests (context tokens C in total) and P prompt tokens
/// to prefill takes `α + β·k + η·C + ζ·k²` (the decode part, when k > 0) plus
/// `γ + δ·P + ε·Σ I·p` (the prefill part, when P > 0; p of a prompt of I tokens). A request's
/// TTFT adds `ttft_overhead_ms` outside the engine (API server, tokenization, network) and,
/// when the engine is busy, `scheduling_delay_steps` whole steps before the step that takes it
/// in (vLLM V1 schedules the next step while one runs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LatencyParams {
    /// α: decode step time at an empty batch (ms).
    pub alpha_ms: f64,
    /// β: decode step time added per request in the batch (ms/request).
    pub beta_ms: f64,
    /// γ: fixed time of a step that prefills (ms).
    pub gamma_ms: f64,
    /// δ: prefill time per prompt token in the step (ms/token).
    pub delta_ms: f64,
    /// ε: prefill time per prompt token times the prompt's length (ms/token²); 0 when not fitted.
    #[serde(default)]
    pub prefill_quadratic_ms: f64,
    /// η: decode step time per context token of the requests in the batch (ms/token).
    #[serde(default)]
    pub itl_context_ms: f64,
    /// ζ: decode step time per squared batch size (ms/request²): the super-linear growth real
    /// engines show at high concurrency; 0 when not fitted.
    #[serde(default)]
    pub itl_quadratic_ms: f64,
    /// Time to first token spent outside the engine (ms).
    #[serde(default)]
    pub ttft_overhead_ms: f64,
    /// Whole steps between a request's arrival at a busy engine and the step that prefills it,
    /// beyond the rest of the step in flight (0 to 2).
    #[serde(default)]
    pub scheduling_delay_steps: f64,
}

impl LatencyParams {
    /// The parameters by name, in the order profiles list them (for validation and fit reports).
    pub fn named(&self) -> [(&'static str, f64); 9] {
        [
            ("alpha_ms", self.alpha_ms),
            ("beta_ms", self.beta_ms),
            ("gamma_ms", self.gamma_ms),
            ("delta_ms", self.delta_ms),
            ("prefill_quadratic_ms", self.prefill_quadratic_ms),
            ("itl_context_ms", self.itl_context_ms),
            ("itl_quadratic_ms", self.itl_quadratic_ms),
            ("ttft_overhead_ms", self.ttft_overhead_ms),
            ("scheduling_delay_steps", self.scheduling_delay_steps),
        ]
    }
}
