//! Latency profiles: the fitted parameters of one model on one accelerator arrangement, as
//! stored under `models/` and inlined in scenarios.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::analyze::LatencyParams;
use crate::analyze::engine::EngineSpec;

/// One profile file (`models/*.yaml`) or one entry of a scenario's `profiles:`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// Unique name, by convention `model/accelerator/tpN` (e.g. `llama2-70b/h100-80gb/tp8`).
    pub name: String,
    #[serde(flatten)]
    pub params: LatencyParams,
    /// Largest batch size the profile was measured at; planning above it extrapolates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_profiled: Option<u32>,
    /// The engine settings the profile was measured under; variants inherit what they do not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineSpec>,
    /// Where the numbers came from and how well they fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// Where a profile came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Data source (repository, file, commit, license).
    pub source: String,
    /// The command that produced the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Model, hardware and tensor-parallel degree as named in the source data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_selector: Option<String>,
    /// Fit quality of the decode (ITL) regression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itl_fit: Option<FitQuality>,
    /// Fit quality of the prefill regression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_fit: Option<FitQuality>,
    /// Anything a reader should know (excluded points, clamped parameters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Goodness of one least-squares fit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FitQuality {
    /// Coefficient of determination.
    pub r2: f64,
    /// Root mean squared residual (ms).
    pub rmse_ms: f64,
    /// Mean absolute percentage error (fraction, 0.05 = 5 %).
    pub mape: f64,
    /// Number of data points used.
    pub points: usize,
}
