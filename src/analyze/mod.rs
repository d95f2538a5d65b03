//! Analysis: from fitted latency profiles to per-replica capacity at an SLO (DESIGN §3).
//!
//! Everything here is pure f64 math on validated inputs.

pub mod capacity;
pub mod engine;
pub mod fit;
pub mod fleet;
mod normal;
pub mod predict;
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
/// to prefill (p of a prompt of I tokens) has a memory-bound part `mem = α + η·C` (reading the
/// weights and the KV cache; 0 when nothing decodes) and a compute-bound part
/// `comp = β·k + ζ·k² + δ·P + ε·Σ I·p`, which overlap as in a roofline:
/// `step = (mem^r + comp^r)^(1/r) + γ·[P > 0]` with r = `roofline_exponent` ≥ 1. r = 1 adds
/// them (profiles of step timings measured in isolation, like Splitwise's); a larger r lets a
/// few prompt tokens ride along a memory-bound decode step almost free, as they do on real GPUs.
/// A request's TTFT adds `ttft_overhead_ms` outside the engine (API server, tokenization,
/// network) and, when the engine is busy, `scheduling_delay_steps` whole steps before the step
/// that takes it in (vLLM V1 schedules the next step while one runs).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
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
    /// r: how a step's memory- and compute-bound parts combine, (mem^r + comp^r)^(1/r); 1 (the
    /// default) adds them, larger values overlap them.
    #[serde(default = "additive", skip_serializing_if = "is_additive")]
    pub roofline_exponent: f64,
}

fn additive() -> f64 {
    1.0
}

fn is_additive(r: &f64) -> bool {
    *r == 1.0
}

impl Default for LatencyParams {
    fn default() -> Self {
        Self {
            alpha_ms: 0.0,
            beta_ms: 0.0,
            gamma_ms: 0.0,
            delta_ms: 0.0,
            prefill_quadratic_ms: 0.0,
            itl_context_ms: 0.0,
            itl_quadratic_ms: 0.0,
            ttft_overhead_ms: 0.0,
            scheduling_delay_steps: 0.0,
            roofline_exponent: 1.0,
        }
    }
}

impl LatencyParams {
    /// These parameters with the prefill terms (γ, δ, ε, TTFT overhead) times `prefill` and the
    /// decode terms (α, β, η and its quadratic) times `decode`: what calibration corrects.
    pub fn corrected(&self, prefill: f64, decode: f64) -> LatencyParams {
        LatencyParams {
            alpha_ms: self.alpha_ms * decode,
            beta_ms: self.beta_ms * decode,
            itl_context_ms: self.itl_context_ms * decode,
            itl_quadratic_ms: self.itl_quadratic_ms * decode,
            gamma_ms: self.gamma_ms * prefill,
            delta_ms: self.delta_ms * prefill,
            prefill_quadratic_ms: self.prefill_quadratic_ms * prefill,
            ttft_overhead_ms: self.ttft_overhead_ms * prefill,
            ..*self
        }
    }

    /// One engine step (ms) with `decoding` requests holding `context_tokens` of KV in all,
    /// prefilling `prefill_tokens` prompt tokens whose Σ I·p is `prefill_quadratic` (see the
    /// type's documentation). The simulator and the analytical model both use this.
    pub fn step_ms(&self, decoding: f64, context_tokens: f64, prefill_tokens: f64, prefill_quadratic: f64) -> f64 {
        let memory = if decoding > 0.0 { self.alpha_ms + self.itl_context_ms * context_tokens } else { 0.0 };
        let compute = self.beta_ms * decoding
            + self.itl_quadratic_ms * decoding * decoding
            + self.delta_ms * prefill_tokens
            + self.prefill_quadratic_ms * prefill_quadratic;
        let r = self.roofline_exponent.max(1.0);
        let body = if r == 1.0 || memory <= 0.0 || compute <= 0.0 {
            memory + compute
        } else {
            // max·(1 + (min/max)^r)^(1/r): no overflow for large r.
            let (hi, lo) = if memory >= compute { (memory, compute) } else { (compute, memory) };
            hi * (1.0 + (lo / hi).powf(r)).powf(1.0 / r)
        };
        body + if prefill_tokens > 0.0 { self.gamma_ms } else { 0.0 }
    }

    /// The parameters by name, in the order profiles list them (for validation and fit reports).
    pub fn named(&self) -> [(&'static str, f64); 10] {
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
            ("roofline_exponent", self.roofline_exponent),
        ]
    }
}
