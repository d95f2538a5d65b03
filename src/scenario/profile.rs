//! Latency profiles: the fitted parameters of one model on one accelerator arrangement, as
//! stored under `models/` and inlined in scenarios.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::analyze::LatencyParams;
use crate::analyze::engine::EngineSpec;

/// One profile file (`models/*.yaml`) or one entry of a scenario's `profiles:`.
///
/// Read (and described in the OpenAPI schema) as [`ProfileFields`]: `#[serde(flatten)]`
/// buffers the fields, which loses the path of a wrong one (an error in `alpha_ms` was reported
/// at `delta_ms`) and disables `deny_unknown_fields`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "ProfileFields")]
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

/// The fields of [`ProfileSpec`] as they appear in a file, without flattening.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ProfileFields {
    /// Unique name, by convention `model/accelerator/tpN` (e.g. `llama2-70b/h100-80gb/tp8`).
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    name: String,
    /// α: decode step time at an empty batch (ms).
    #[schema(exclusive_minimum = 0, maximum = 1_000_000)]
    alpha_ms: f64,
    /// β: decode step time added per request in the batch (ms/request).
    #[schema(minimum = 0, maximum = 1_000_000)]
    beta_ms: f64,
    /// γ: fixed prefill time (ms). γ, δ and ε may not all be 0.
    #[schema(minimum = 0, maximum = 1_000_000)]
    gamma_ms: f64,
    /// δ: prefill time per prompt token in the batch (ms/token).
    #[schema(minimum = 0, maximum = 1_000_000)]
    delta_ms: f64,
    /// ε: prefill time per squared prompt token per request (ms/token²); 0 when not fitted.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000)]
    prefill_quadratic_ms: f64,
    /// η: decode step time per context token of the batch (ms/token); 0 when not fitted.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000)]
    itl_context_ms: f64,
    /// ζ: decode step time per squared batch size (ms/request²); 0 when not fitted.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000)]
    itl_quadratic_ms: f64,
    /// Time to first token spent outside the engine (ms).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000)]
    ttft_overhead_ms: f64,
    /// Whole steps between a request's arrival at a busy engine and its first step (0 to 4).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 4)]
    scheduling_delay_steps: f64,
    /// How a step's memory- and compute-bound parts combine (1 = add, the default; larger overlaps).
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 16)]
    roofline_exponent: f64,
    /// Largest batch size the profile was measured at; planning above it extrapolates.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 4_294_967_295_u64)]
    max_batch_profiled: Option<u32>,
    /// The engine settings the profile was measured under.
    #[serde(default)]
    engine: Option<EngineSpec>,
    /// Where the numbers came from and how well they fit.
    #[serde(default)]
    provenance: Option<Provenance>,
}

fn one() -> f64 {
    1.0
}

// The schema of a profile is that of the fields it is read from.
impl utoipa::PartialSchema for ProfileSpec {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <ProfileFields as utoipa::PartialSchema>::schema()
    }
}

impl ToSchema for ProfileSpec {
    fn name() -> std::borrow::Cow<'static, str> {
        "ProfileSpec".into()
    }

    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        <ProfileFields as ToSchema>::schemas(schemas);
    }
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
                itl_quadratic_ms: f.itl_quadratic_ms,
                ttft_overhead_ms: f.ttft_overhead_ms,
                scheduling_delay_steps: f.scheduling_delay_steps,
                roofline_exponent: f.roofline_exponent,
            },
            max_batch_profiled: f.max_batch_profiled,
            engine: f.engine,
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
    #[schema(minimum = 0, maximum = 4_294_967_295_u64)]
    pub points: usize,
}
