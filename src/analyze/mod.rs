//! Analysis: from fitted latency profiles to per-replica capacity at an SLO (DESIGN §3).
//!
//! Everything here is pure f64 math on validated inputs.

pub mod capacity;
pub mod fit;
pub mod fleet;
pub mod queue;

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

/// Fitted latency parameters of one model on one accelerator arrangement (DESIGN §3), in ms.
///
/// `ITL(n) = α + β·n + η·n·L` and `prefill(n) = γ + δ·I·n + ε·I²·n`, with n requests in the
/// batch, I mean input tokens and L the mean context length (I + O/2).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LatencyParams {
    /// α: decode step time at an empty batch (ms).
    pub alpha_ms: f64,
    /// β: decode step time added per request in the batch (ms/request).
    pub beta_ms: f64,
    /// γ: fixed prefill time (ms).
    pub gamma_ms: f64,
    /// δ: prefill time per prompt token in the batch (ms/token).
    pub delta_ms: f64,
    /// ε: prefill time per squared prompt token per request (ms/token²); 0 when not fitted.
    #[serde(default)]
    pub prefill_quadratic_ms: f64,
    /// η: decode step time per context token per request (ms/token); 0 when not fitted.
    #[serde(default)]
    pub itl_context_ms: f64,
}
