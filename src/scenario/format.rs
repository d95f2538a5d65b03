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
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub name: Option<String>,
    /// Accelerator types Allot may use and how many GPUs of each are available.
    #[schema(min_items = 1)]
    pub accelerators: Vec<AcceleratorSpec>,
    /// Priorities and SLO targets per model.
    pub service_classes: Vec<ServiceClassSpec>,
    /// Demand per model and class.
    #[serde(default)]
    pub load: Vec<LoadSpec>,
    /// Deployable arrangements of each model.
    #[schema(min_items = 1)]
    pub variants: Vec<VariantSpec>,
    /// Latency profiles; names not defined here resolve to the profiles bundled from `models/`.
    #[serde(default)]
    pub profiles: Vec<ProfileSpec>,
    /// Fewest replicas of a model in total, on whichever of its variants the plan puts them
    /// (WVA's `minNumReplicas`: "at least N wherever placed"); each variant's own
    /// `min_replicas` holds as well.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(schema_with = replicas_by_name)]
    pub min_replicas: BTreeMap<String, u32>,
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
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: String,
    /// Product as nodes label it (`nvidia.com/gpu.product`), informational offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub device: Option<String>,
    /// GPUs of this type Allot may use.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub gpus: u32,
    /// Price of one GPU for one hour, USD.
    #[schema(minimum = 0, maximum = 1000)]
    pub cost_usd_per_gpu_hour: f64,
}

/// A service class: a priority plus SLO targets for the models it covers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceClassSpec {
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: String,
    /// Smaller is more important (WVA's convention), 1..=100.
    #[schema(minimum = 1, maximum = 100)]
    pub priority: u32,
    /// Relative share inside a priority tier when GPUs are short (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, maximum = 1000)]
    pub weight: Option<f64>,
    /// Latency targets per model.
    #[schema(min_items = 1)]
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
    #[schema(exclusive_minimum = 0, maximum = 10_000_000)]
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
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub arrival_rate_rps: f64,
    /// Prompt tokens per request: a mean (the distribution is then lognormal with CV 1) or a
    /// distribution.
    pub input_tokens: TokenCountSpec,
    /// Generated tokens per request, likewise.
    pub output_tokens: TokenCountSpec,
    /// Coefficient of variation of the time between arrivals: 1 for Poisson (the default), 0
    /// for a constant rate, above 1 for bursts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 10)]
    pub arrival_cv: Option<f64>,
}

/// Token counts per request: a bare number is the mean (lognormal, CV 1, documented in
/// docs/scenario.md); an object gives the distribution.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TokenCountSpec {
    Mean(f64),
    Distribution(TokenDistributionSpec),
}

// A bounded number or the distribution object (a derived schema could not bound the number).
impl utoipa::PartialSchema for TokenCountSpec {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Ref, Schema, SchemaType, Type};
        let mean = ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Number))
            .minimum(Some(1.0))
            .maximum(Some(crate::scenario::validate::MAX_TOKENS))
            .description(Some("the mean token count (lognormal, CV 1)"));
        let one_of = OneOfBuilder::new().item(mean).item(Ref::from_schema_name("TokenDistributionSpec")).build();
        utoipa::openapi::RefOr::T(Schema::OneOf(one_of))
    }
}

impl ToSchema for TokenCountSpec {
    fn name() -> std::borrow::Cow<'static, str> {
        "TokenCountSpec".into()
    }

    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        schemas.push(("TokenDistributionSpec".into(), <TokenDistributionSpec as utoipa::PartialSchema>::schema()));
        <TokenDistributionSpec as ToSchema>::schemas(schemas);
    }
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
                f.write_str(
                    "a mean token count or a distribution {mean, p50, p90, p95, p99, max, shape, cv, histogram}",
                )
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
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub mean: Option<f64>,
    /// `lognormal` (default when only a mean is given), `exponential`, `uniform` or `constant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<ShapeSpec>,
    /// Coefficient of variation for `lognormal` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 20)]
    pub cv: Option<f64>,
    /// Half-width of `uniform` as a fraction of the mean (default 0.5: mean/2 to 3·mean/2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1)]
    pub spread: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub p50: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub p90: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub p95: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub p99: Option<f64>,
    /// Largest size (e.g. the model's context length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10_000_000)]
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
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: String,
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub model: String,
    /// Name of an entry in `accelerators`.
    pub accelerator: String,
    /// GPUs one replica uses (tensor × pipeline parallel degree).
    #[schema(minimum = 1, maximum = 1024)]
    pub gpus_per_replica: u32,
    #[serde(default)]
    pub role: Role,
    /// Most concurrent requests per replica (vLLM `--max-num-seqs`).
    #[schema(minimum = 1, maximum = 65_536)]
    pub max_batch: u32,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100_000)]
    pub min_replicas: u32,
    /// Upper bound on replicas; unbounded (inventory only) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 100_000)]
    pub max_replicas: Option<u32>,
    /// Replicas running now (the transition cost is measured from here).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100_000)]
    pub current_replicas: u32,
    /// Name of a profile (in `profiles` or bundled). Required unless `capacity_rps` covers
    /// every class with load on this variant's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Measured capacity at SLO per class (req/s per replica); replaces the profile's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(schema_with = rates_by_name)]
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
    #[schema(exclusive_minimum = 0, maximum = 3600)]
    pub time_limit_s: f64,
    /// Relative MIP gap at which HiGHS may stop (0.01 = 1 %).
    #[schema(minimum = 0, maximum = 0.5)]
    pub mip_gap: f64,
    /// Never plan a replica above this fraction of its saturation throughput.
    #[schema(exclusive_minimum = 0, maximum = 0.99)]
    pub max_utilization: f64,
    /// Costs that keep plans stable from one cycle to the next.
    pub transition: TransitionSpec,
    /// Prefill-to-decode replica ratio bounds for disaggregated models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pd_ratio: Option<PdRatioSpec>,
    /// Per-model overrides of `pd_ratio`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pd_ratio_by_model: BTreeMap<String, PdRatioSpec>,
    /// How requests reach a model's variants: `least_loaded` (llm-d's endpoint picker, the
    /// default: plans split traffic the way it does) or `weighted` (a router that follows the
    /// plan's per-variant rates, e.g. weighted routes set from the plan).
    pub routing: RoutingSpec,
}

/// How a model's requests are spread over its variants' replicas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoutingSpec {
    /// Each request to the replica with the fewest requests per batch slot: every replica of a
    /// model runs at about the same utilization, whatever the plan's split.
    #[default]
    LeastLoaded,
    /// Requests split by the plan's per-variant rates.
    Weighted,
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
            routing: RoutingSpec::LeastLoaded,
        }
    }
}

/// Transition costs, as fractions of the hourly cost of the replica concerned.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TransitionSpec {
    /// Charged once per replica added or removed (WVA used 0.1).
    #[schema(minimum = 0, maximum = 100)]
    pub replica_change_fraction: f64,
    /// Charged per replica placed on an accelerator type the model does not run on now.
    #[schema(minimum = 0, maximum = 100)]
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
    #[schema(exclusive_minimum = 0, maximum = 1000)]
    pub min: f64,
    #[schema(exclusive_minimum = 0, maximum = 1000)]
    pub max: f64,
}

/// Schema of a map from names to numbers within bounds (JSON Schema cannot bound the values of
/// a `BTreeMap` field otherwise).
pub(crate) fn bounded_map(kind: utoipa::openapi::schema::Type, min: f64, max: f64) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, SchemaType, Type};
    let value = ObjectBuilder::new().schema_type(SchemaType::Type(kind)).minimum(Some(min)).maximum(Some(max));
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Object))
        .additional_properties(Some(AdditionalProperties::RefOr(value.build().into())))
        .build()
}

/// Replica counts by model (0..=100,000).
fn replicas_by_name() -> utoipa::openapi::Object {
    bounded_map(utoipa::openapi::schema::Type::Integer, 0.0, 100_000.0)
}

/// Rates in req/s by class (0..=1,000,000).
fn rates_by_name() -> utoipa::openapi::Object {
    bounded_map(utoipa::openapi::schema::Type::Number, 0.0, 1e6)
}
