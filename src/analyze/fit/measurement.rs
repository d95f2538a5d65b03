//! Benchmark measurements as the fit and the checks see them: one run of a load generator
//! against one server at one load, whatever tool wrote it (GuideLLM, `vllm bench serve`).

use serde::Serialize;

use crate::analyze::sizes::SizeDistribution;

/// How a run loaded the server.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Load {
    /// One request at a time (GuideLLM `synchronous`): a lone request.
    Synchronous,
    /// Open loop at a rate: `arrival_cv2` 0 for constant spacing (GuideLLM `constant`), 1 for
    /// Poisson (GuideLLM `poisson`, `vllm bench serve --request-rate R`), 1/burstiness for
    /// vLLM's gamma arrivals.
    Rate { target_rps: f64, arrival_cv2: f64 },
    /// Closed loop at a concurrency (GuideLLM `throughput`/`concurrent`, `--max-concurrency`
    /// or an infinite request rate): no arrival rate to predict at; reported, not fitted.
    Concurrency { requests: f64 },
}

/// Mean and percentiles of one latency over successful requests (ms).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Observed {
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Measurement {
    /// The workload mix the run belongs to (a file or sweep), for leave-one-mix-out.
    pub mix: String,
    /// Human label, e.g. `sweep-i64-o64 constant 16.42 req/s`.
    pub label: String,
    pub load: Load,
    /// Completed requests per second.
    pub achieved_rps: f64,
    /// Mean requests in flight at the client.
    pub concurrency: Option<f64>,
    #[serde(skip)]
    pub input: SizeDistribution,
    #[serde(skip)]
    pub output: SizeDistribution,
    pub mean_input_tokens: f64,
    pub mean_output_tokens: f64,
    pub ttft: Observed,
    /// Each request's mean time per output token after the first (GuideLLM ITL, vLLM TPOT).
    pub itl_request: Observed,
    /// Every token's gap, when the tool reports it (vLLM's ITL).
    pub itl_token: Observed,
    /// Mean request latency (s).
    pub mean_latency_s: Option<f64>,
    pub duration_s: Option<f64>,
    pub completed: u64,
    pub incomplete: u64,
    pub errored: u64,
}

/// Why a measurement is not used by a fit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Excluded {
    pub label: String,
    pub reason: String,
}

/// Fewest completed requests for a run to say anything about percentiles.
pub const MIN_COMPLETED: u64 = 50;
/// A run whose requests last longer than this share of its duration has not reached steady
/// state: its early requests met an emptier server, and its completed requests are the short ones.
pub const MAX_LATENCY_SHARE: f64 = 0.05;
/// An open-loop run completing less than this share of its target rate is overloaded.
pub const MIN_ACHIEVED_SHARE: f64 = 0.9;

impl Measurement {
    /// Whether the run is one the steady-state model describes, and if not, why.
    pub fn steady_state(&self) -> Result<(), String> {
        if self.completed < MIN_COMPLETED {
            return Err(format!(
                "only {} requests completed (at least {MIN_COMPLETED} needed for percentiles)",
                self.completed
            ));
        }
        if let Load::Concurrency { requests } = self.load {
            return Err(format!(
                "closed loop at {requests:.0} concurrent requests: no arrival rate (used only as the saturation bound)"
            ));
        }
        if let (Some(latency), Some(duration)) = (self.mean_latency_s, self.duration_s)
            && duration > 0.0
            && latency > MAX_LATENCY_SHARE * duration
        {
            return Err(format!(
                "not steady state: requests last {latency:.1} s on average, {:.0} % of the {duration:.0} s run \
                 (limit {:.0} %)",
                100.0 * latency / duration,
                100.0 * MAX_LATENCY_SHARE
            ));
        }
        if let Load::Rate { target_rps, .. } = self.load
            && self.achieved_rps < MIN_ACHIEVED_SHARE * target_rps
        {
            return Err(format!(
                "overloaded: {:.3} of the {target_rps:.3} req/s asked for completed ({:.0} %)",
                self.achieved_rps,
                100.0 * self.achieved_rps / target_rps
            ));
        }
        let errors = self.errored + self.incomplete;
        if errors > 0 && errors as f64 > 0.05 * self.completed as f64 + 20.0 {
            return Err(format!("{} of {} requests errored or did not finish", errors, errors + self.completed));
        }
        Ok(())
    }

    /// The arrival rate to predict at (req/s), 0 for a synchronous run.
    pub fn predict_rps(&self) -> Option<f64> {
        match self.load {
            Load::Synchronous => Some(0.0),
            Load::Rate { .. } => Some(self.achieved_rps),
            Load::Concurrency { .. } => None,
        }
    }

    /// The arrival variability to predict with.
    pub fn arrival_cv2(&self) -> f64 {
        match self.load {
            Load::Rate { arrival_cv2, .. } => arrival_cv2,
            _ => 1.0,
        }
    }
}
