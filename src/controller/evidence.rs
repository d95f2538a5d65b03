//! What a cluster measured, beyond the load it plans on: per variant, the latency its servers
//! delivered and how full they ran (calibration and panic evidence); per model, the requests
//! waiting at the gateway; per variant, how long replicas took to start; and what a previous
//! controller recorded (its calibration, after a restart). Plain data, filled by the cluster
//! adapters (the simulator, Kubernetes + Prometheus) and read by [`super::decide`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::analyze::Statistic;

/// Everything beyond the scenario an observation carries; empty where a cluster cannot tell.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evidence {
    /// Per variant name: what its servers measured over the window.
    pub served: BTreeMap<String, ServedStats>,
    /// Per model name: requests waiting at the gateway for a replica (none ready, or an
    /// activation metric); they count as load the plan must serve.
    pub backlog: BTreeMap<String, f64>,
    /// Per variant name: start-up times (scheduled to ready, seconds) of replicas that became
    /// ready since the previous observation.
    pub startups_s: BTreeMap<String, Vec<f64>>,
    /// Per variant name: the declared start-up time (`spec.startupSeconds`), the learner's prior.
    pub startup_spec_s: BTreeMap<String, f64>,
    /// Per variant name: the calibration a previous controller recorded (VariantAutoscaling
    /// status), taken up when this controller has none of its own.
    pub restored: BTreeMap<String, RestoredCalibration>,
}

/// Latency of the requests one variant finished over the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub mean_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

impl LatencySummary {
    /// The statistic a target declares, when it was measured.
    pub fn get(&self, statistic: Statistic) -> Option<f64> {
        match statistic {
            Statistic::Mean => Some(self.mean_ms),
            Statistic::P50 => self.p50_ms,
            Statistic::P90 => self.p90_ms,
            Statistic::P95 => self.p95_ms,
            Statistic::P99 => self.p99_ms,
        }
    }

    /// Mean and nearest-rank quantiles of `values` (ms); `None` for none.
    pub fn of(values: &mut [f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let q = |p: f64| {
            let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values[rank - 1]
        };
        Some(Self {
            mean_ms: values.iter().sum::<f64>() / values.len() as f64,
            p50_ms: Some(q(0.50)),
            p90_ms: Some(q(0.90)),
            p95_ms: Some(q(0.95)),
            p99_ms: Some(q(0.99)),
        })
    }
}

/// What one variant's servers measured over the observation window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServedStats {
    /// Length of the window, seconds.
    pub window_s: f64,
    /// Ready replicas, averaged over the window.
    pub ready_replicas: f64,
    /// Requests routed to the variant, req/s (all its replicas).
    pub arrival_rps: f64,
    /// Requests it finished, req/s.
    pub completion_rps: f64,
    /// Requests it finished in the window.
    pub finished: u64,
    /// Mean prompt and output tokens of the finished requests.
    pub input_tokens: Option<f64>,
    pub output_tokens: Option<f64>,
    /// Time to first token of the finished requests.
    pub ttft: Option<LatencySummary>,
    /// Each finished request's mean inter-token latency.
    pub itl: Option<LatencySummary>,
    /// Requests queued per ready replica, now.
    pub waiting_per_replica: f64,
    /// Share of the window in which its replicas were saturated: requests waiting while every
    /// batch (or KV cache) was full. 1: saturated throughout.
    pub saturated_fraction: f64,
    /// Highest KV-cache usage of one of its replicas (0–1), where the servers export it.
    pub kv_usage_max: Option<f64>,
}

/// A calibration as recorded in a VariantAutoscaling's status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestoredCalibration {
    pub prefill_factor: f64,
    pub decode_factor: f64,
    pub confidence: f64,
    /// Digest of the profile and engine settings it was learned for; a different one is ignored.
    pub profile_digest: String,
}
