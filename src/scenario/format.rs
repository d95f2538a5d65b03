//! The scenario file: Allot's one offline input format (YAML or JSON), documented in
//! `docs/scenario.md`. These types mirror the file; [`super::validate`] turns them into a
//! [`super::Snapshot`] whose invariants the core relies on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::profile::ProfileSpec;
use crate::analyze::engine::EngineSpec;
use crate::analyze::{ItlPopulation, Role, Statistic};

/// A whole planning problem: inventory, classes, load, variants, profiles and settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Free-form name shown in reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Accelerator types Allot may use and how many GPUs of each are available.
    pub accelerators: Vec<AcceleratorSpec>,
    /// Priorities and SLO targets per model.
    pub service_classes: Vec<ServiceClassSpec>,
    /// Demand per model and class.
    #[serde(default)]
    pub load: Vec<LoadSpec>,
    /// Deployable arrangements of each model.
    pub variants: Vec<VariantSpec>,
    /// Latency profiles; names not defined here resolve to the profiles bundled from `models/`.
    #[serde(default)]
    pub profiles: Vec<ProfileSpec>,
    /// Solver and planning settings.
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    /// Notes from importing another format (e.g. WVA JSON), carried into the plan's warnings.
    #[serde(skip)]
    pub import_notes: Vec<String>,
}

/// One accelerator type (GPU product) with its price and inventory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceleratorSpec {
    /// Name variants refer to (e.g. `H100-80GB`).
    pub name: String,
    /// Product as nodes label it (`nvidia.com/gpu.product`), informational offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// GPUs of this type Allot may use.
    pub gpus: u32,
    /// Price of one GPU for one hour, USD.
    pub cost_usd_per_gpu_hour: f64,
}

/// A service class: a priority plus SLO targets for the models it covers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceClassSpec {
    pub name: String,
    /// Smaller is more important (WVA's convention), 1..=100.
    pub priority: u32,
    /// Relative share inside a priority tier when GPUs are short (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Latency targets per model.
    pub targets: Vec<ClassTargetSpec>,
}

/// Latency targets of one model in one class. At least one of `ttft` and `itl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassTargetSpec {
    pub model: String,
    /// Time to first token target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft: Option<TargetSpec>,
    /// Inter-token latency target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itl: Option<TargetSpec>,
}

/// One latency target: a bound in milliseconds on a statistic.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub ms: f64,
    #[serde(default)]
    pub statistic: Statistic,
    /// ITL only: over each request's mean time per output token (`request`, the default; what
    /// GuideLLM reports) or over every token (`token`; vLLM's inter-token histogram).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over: Option<ItlPopulation>,
}

/// Demand of one model in one class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    pub model: String,
    pub class: String,
    /// Request arrival rate, requests per second.
    pub arrival_rate_rps: f64,
    /// Prompt tokens per request: a mean (the distribution is then lognormal with CV 1) or a
    /// distribution.
    pub input_tokens: TokenCountSpec,
    /// Generated tokens per request, likewise.
    pub output_tokens: TokenCountSpec,
    /// Coefficient of variation of the time between arrivals: 1 for Poisson (the default), 0
    /// for a constant rate, above 1 for bursts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival_cv: Option<f64>,
}

/// Token counts per request: a bare number is the mean (lognormal, CV 1, documented in
/// docs/scenario.md); an object gives the distribution.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TokenCountSpec {
    Mean(f64),
    Distribution(TokenDistributionSpec),
}

impl From<f64> for TokenCountSpec {
    fn from(mean: f64) -> Self {
        TokenCountSpec::Mean(mean)
    }
}

impl TokenCountSpec {
    /// The mean as written, or implied by the form (for reports and imports).
    pub fn mean_hint(&self) -> Option<f64> {
        match self {
            TokenCountSpec::Mean(m) => Some(*m),
            TokenCountSpec::Distribution(d) => d.mean.or(d.p50),
        }
    }
}

// A number or a map, read by hand so a bad field inside the map is reported at its own path
// (an untagged enum would say only "did not match any variant").
impl<'de> Deserialize<'de> for TokenCountSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TokenCountSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mean token count or a distribution {mean, p50, p90, p95, p99, max, shape, cv, histogram}")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(TokenCountSpec::Mean(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(TokenCountSpec::Mean(v as f64))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(TokenCountSpec::Mean(v as f64))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                TokenDistributionSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(TokenCountSpec::Distribution)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A token-count distribution. Give a `shape` with a `mean` (and `cv` or `spread`), or
/// percentiles (with or without `mean` and `max`), or a Prometheus-style `histogram`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenDistributionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    /// `lognormal` (default when only a mean is given), `exponential`, `uniform` or `constant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<ShapeSpec>,
    /// Coefficient of variation for `lognormal` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv: Option<f64>,
    /// Half-width of `uniform` as a fraction of the mean (default 0.5: mean/2 to 3·mean/2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    /// Largest size (e.g. the model's context length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<HistogramSpec>,
}

/// The named shapes of a token-count distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ShapeSpec {
    Lognormal,
    Exponential,
    Uniform,
    Constant,
}

/// A histogram as Prometheus exports one (vLLM's `vllm:request_prompt_tokens`): cumulative
/// counts per upper bound, the total count and, when known, the sum.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HistogramSpec {
    /// Finite buckets, ascending `le`; `count` is cumulative.
    pub buckets: Vec<HistogramBucketSpec>,
    /// Observations in all buckets (the `+Inf` bucket).
    pub count: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HistogramBucketSpec {
    pub le: f64,
    pub count: f64,
}

/// One model served on one accelerator arrangement, optionally in one P/D role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantSpec {
    pub name: String,
    pub model: String,
    /// Name of an entry in `accelerators`.
    pub accelerator: String,
    /// GPUs one replica uses (tensor × pipeline parallel degree).
    pub gpus_per_replica: u32,
    #[serde(default)]
    pub role: Role,
    /// Most concurrent requests per replica (vLLM `--max-num-seqs`).
    pub max_batch: u32,
    #[serde(default)]
    pub min_replicas: u32,
    /// Upper bound on replicas; unbounded (inventory only) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u32>,
    /// Replicas running now (the transition cost is measured from here).
    #[serde(default)]
    pub current_replicas: u32,
    /// Name of a profile (in `profiles` or bundled). Required unless `capacity_rps` covers
    /// every class with load on this variant's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Measured capacity at SLO per class (req/s per replica); replaces the profile's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity_rps: BTreeMap<String, f64>,
    /// Engine settings (step token budget, chunked prefill, KV-cache size); each unset field
    /// comes from the profile's `engine`, else vLLM's default (docs/scenario.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineSpec>,
}

/// Solver and planning settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerSpec {
    /// Wall-clock limit of one MILP solve, seconds.
    pub time_limit_s: f64,
    /// Relative MIP gap at which HiGHS may stop (0.01 = 1 %).
    pub mip_gap: f64,
    /// Never plan a replica above this fraction of its saturation throughput.
    pub max_utilization: f64,
    /// Costs that keep plans stable from one cycle to the next.
    pub transition: TransitionSpec,
    /// Prefill-to-decode replica ratio bounds for disaggregated models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pd_ratio: Option<PdRatioSpec>,
    /// Per-model overrides of `pd_ratio`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pd_ratio_by_model: BTreeMap<String, PdRatioSpec>,
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        Self {
            time_limit_s: 10.0,
            mip_gap: 0.01,
            max_utilization: 0.9,
            transition: TransitionSpec::default(),
            pd_ratio: None,
            pd_ratio_by_model: BTreeMap::new(),
        }
    }
}

/// Transition costs, as fractions of the hourly cost of the replica concerned.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TransitionSpec {
    /// Charged once per replica added or removed (WVA used 0.1).
    pub replica_change_fraction: f64,
    /// Charged per replica placed on an accelerator type the model does not run on now.
    pub accelerator_move_fraction: f64,
}

impl Default for TransitionSpec {
    fn default() -> Self {
        Self { replica_change_fraction: 0.1, accelerator_move_fraction: 0.1 }
    }
}

/// Bounds on Σ prefill replicas / Σ decode replicas of one model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PdRatioSpec {
    pub min: f64,
    pub max: f64,
}
