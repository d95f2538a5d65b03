//! Latency profiles: the fitted parameters of one model on one accelerator arrangement, as
//! stored under `models/` and inlined in scenarios.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::analyze::LatencyParams;

/// One profile file (`models/*.yaml`) or one entry of a scenario's `profiles:`.
///
/// Read through [`ProfileFields`]: `#[serde(flatten)]` buffers the fields, which loses the path
/// of a wrong one (an error in `alpha_ms` was reported at `delta_ms`) and disables
/// `deny_unknown_fields`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, from = "ProfileFields")]
pub struct ProfileSpec {
    /// Unique name, by convention `model/accelerator/tpN` (e.g. `llama2-70b/h100-80gb/tp8`).
    pub name: String,
    #[serde(flatten)]
    pub params: LatencyParams,
    /// Largest batch size the profile was measured at; planning above it extrapolates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_profiled: Option<u32>,
    /// Where the numbers came from and how well they fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// The fields of [`ProfileSpec`] as they appear in a file, without flattening.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFields {
    name: String,
    alpha_ms: f64,
    beta_ms: f64,
    gamma_ms: f64,
    delta_ms: f64,
    #[serde(default)]
    prefill_quadratic_ms: f64,
    #[serde(default)]
    itl_context_ms: f64,
    #[serde(default)]
    max_batch_profiled: Option<u32>,
    #[serde(default)]
    provenance: Option<Provenance>,
}

impl From<ProfileFields> for ProfileSpec {
    fn from(f: ProfileFields) -> Self {
        ProfileSpec {
            name: f.name,
            params: LatencyParams {
                alpha_ms: f.alpha_ms,
                beta_ms: f.beta_ms,
                gamma_ms: f.gamma_ms,
                delta_ms: f.delta_ms,
                prefill_quadratic_ms: f.prefill_quadratic_ms,
                itl_context_ms: f.itl_context_ms,
            },
            max_batch_profiled: f.max_batch_profiled,
            provenance: f.provenance,
        }
    }
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
