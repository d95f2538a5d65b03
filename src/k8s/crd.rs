//! The `VariantAutoscaling` custom resource (`llmd.ai/v1alpha1`), generated from these types.
//!
//! The schema accepts llm-d WVA's manifests unchanged (reference/wva.md §1.1–1.3): same group,
//! kind, short name, field names, string-encoded numbers in status and printer columns. It takes
//! every shape WVA's VariantAutoscaling has had (docs/kubernetes.md has the table):
//!
//! - the original one (WVA v0.0.x–v0.4): `modelID`, `sloClassRef`, `modelProfile.accelerators[]`
//!   with WVA's latency parameters, the accelerator in the `inference.optimization/acceleratorName`
//!   label;
//! - the v0.5 one: `scaleTargetRef`, `modelID`, `variantCost`, nothing else;
//! - the simplified one of WVA's CRD refactor (PR #411/#418, `config/samples/variantautoscaling-with-cost.yaml`):
//!   `acceleratorType`, `acceleratorCount`, `minReplicas`/`maxReplicas`, `variantProfile`, with
//!   `modelProfile` deprecated.
//!
//! So every field but `modelID` is optional here. Allot's own fields are optional too, so an old
//! manifest means what it meant under WVA. Doc comments on fields become the CRD's descriptions
//! (`kubectl explain va.spec`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analyze::Role;

/// The label naming the accelerator (a key of the `accelerator-unit-costs` ConfigMap) a variant
/// runs on, as in WVA.
pub const ACCELERATOR_LABEL: &str = "inference.optimization/acceleratorName";

/// File name of the generated CRD under `crds/`.
pub const CRD_FILE_NAME: &str = "variantautoscalings.llmd.ai.yaml";

/// Annotation naming a latency profile bundled with Allot (`models/`, e.g.
/// `llama2-70b/h100-80gb/tp4`), for variants whose object carries no perfParms (WVA v0.5
/// VariantAutoscalings, annotated HPAs and ScaledObjects).
pub const PROFILE_ANNOTATION: &str = "allot.llmd.ai/profile";

/// A decimal number as WVA writes it in strings (`"20.58"`): digits, optionally a fraction.
pub const DECIMAL_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?$";

/// Desired state of one variant: a model served on one accelerator arrangement by one scalable
/// workload.
// Printer columns repeat `type_ = "string"`, which clippy takes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "llmd.ai",
    version = "v1alpha1",
    kind = "VariantAutoscaling",
    namespaced,
    status = "VariantAutoscalingStatus",
    shortname = "va",
    derive = "PartialEq",
    doc = "A variant of a model (one accelerator arrangement, one scalable workload) whose replicas Allot plans.",
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.modelID"),
    printcolumn(name = "Accelerator", type_ = "string", json_path = ".status.currentAlloc.accelerator"),
    printcolumn(name = "CurrentReplicas", type_ = "integer", json_path = ".status.currentAlloc.numReplicas"),
    printcolumn(name = "Optimized", type_ = "string", json_path = ".status.desiredOptimizedAlloc.numReplicas"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type=='Ready')].status"),
    printcolumn(
        name = "MetricsReady",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='MetricsAvailable')].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct VariantAutoscalingSpec {
    /// Model name as vLLM reports it (the `model_name` label of its metrics). Variants with the
    /// same modelID serve the same traffic; Allot splits it between them.
    #[serde(rename = "modelID")]
    #[schemars(length(min = 1))]
    pub model_id: String,

    /// WVA's reference to an SLO entry (ConfigMap name and key). Kept for compatibility; like WVA,
    /// Allot finds the service class by modelID unless `serviceClass` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_class_ref: Option<ConfigMapKeyRef>,

    /// Latency profile per accelerator the model can run on (WVA's original performance
    /// parameters; deprecated by WVA in favour of `acceleratorType` and `variantProfile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_profile: Option<ModelProfile>,

    /// The workload whose replicas this variant controls. Default: the Deployment (apps/v1)
    /// with this VariantAutoscaling's name in its namespace, as in WVA before v0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_target_ref: Option<ScaleTargetRef>,

    /// The accelerator this variant runs on: a key of the `accelerator-unit-costs` ConfigMap (or
    /// the device name of one). Default: the `inference.optimization/acceleratorName` label, else
    /// the only `modelProfile` entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub accelerator_type: Option<String>,

    /// Accelerators (GPUs or MIG slices) per replica. Default: what the target's pod template
    /// requests, else the `modelProfile` entry's `accCount`, else 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub accelerator_count: Option<u32>,

    /// Latency parameters of this variant on its accelerator (WVA's simplified profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant_profile: Option<VariantProfile>,

    /// WVA's cost per replica (a decimal, default 10.0 in WVA). Accepted for compatibility; Allot
    /// prices replicas from `accelerator-unit-costs` so that every variant of the fleet is priced
    /// in one unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "decimal_or_integer_schema")]
    pub variant_cost: Option<Decimal>,

    /// Which part of a request the replicas serve: `both` (ordinary vLLM, the default), or
    /// `prefill` / `decode` for disaggregated serving. A model with prefill variants needs decode
    /// variants too.
    // Not an Option: a nullable enum would list `null` among its values, which a structural
    // CRD schema refuses.
    #[serde(default, skip_serializing_if = "VariantRole::is_both")]
    pub role: VariantRole,

    /// Fewest replicas Allot plans for this variant. Default 0: Allot may move the model
    /// entirely to another variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<u32>,

    /// Most replicas Allot plans for this variant. Default: bounded by the GPU inventory only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u32>,

    /// Name of the service class (priority and SLO targets) of this variant's traffic, from the
    /// `service-classes-config` ConfigMap. Default: the most important class that lists this
    /// modelID (WVA's lookup, made deterministic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub service_class: Option<String>,

    /// Expected time from a pod being scheduled to serving (image pull, model load), seconds.
    /// Booting replicas older than this are reported as overdue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_seconds: Option<u32>,
}

/// A key in a ConfigMap.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ConfigMapKeyRef {
    /// ConfigMap name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in the ConfigMap's data.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Performance profiles of one model, one per accelerator.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ModelProfile {
    /// One entry per accelerator the model can run on.
    #[serde(default)]
    pub accelerators: Vec<AcceleratorProfile>,
}

/// WVA's simplified profile of one variant on its accelerator.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariantProfile {
    /// Most concurrent requests per replica (vLLM `--max-num-seqs`).
    #[schemars(range(min = 1))]
    pub max_batch_size: u32,
    /// Fitted latency parameters, milliseconds, as decimal strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perf_parms: Option<PerfParms>,
}

/// A non-negative decimal that WVA writes as a string (`"80.0"`) and some manifests as a bare
/// number (`40.0`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Decimal(pub String);

impl Decimal {
    pub fn value(&self) -> Option<f64> {
        self.0.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Decimal(s)),
            serde_json::Value::Number(n) if n.as_f64().is_some_and(|v| v >= 0.0) => Ok(Decimal(n.to_string())),
            other => Err(serde::de::Error::custom(format!("expected a decimal number ≥ 0, got {other}"))),
        }
    }
}

/// `variantCost`: a decimal string or a whole number (structural schemas allow no
/// float-or-string, and WVA's own samples write both).
fn decimal_or_integer_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    // No typed `anyOf` branches (kube's structural rewrite drops their types, which would let any
    // string through): `pattern` applies to strings only, `minimum` to numbers only.
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true,
        "pattern": DECIMAL_PATTERN,
        "minimum": 0,
        "description": "WVA's cost per replica (a decimal, default 10.0 in WVA). Accepted for compatibility; Allot prices replicas from `accelerator-unit-costs` so that every variant of the fleet is priced in one unit."
    })
}

/// A map of latency parameters whose values are decimal strings (`{"alpha": "20.58"}`).
fn decimal_map_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "minProperties": 1,
        "additionalProperties": {"type": "string", "pattern": DECIMAL_PATTERN}
    })
}

/// Latency parameters of the model on one accelerator arrangement (DESIGN §3).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceleratorProfile {
    /// Accelerator name: a key of the `accelerator-unit-costs` ConfigMap (e.g. `A100`).
    #[schemars(length(min = 1))]
    pub acc: String,
    /// GPUs per replica (tensor × pipeline parallel degree).
    #[schemars(range(min = 1))]
    pub acc_count: u32,
    /// Fitted latency parameters, milliseconds, as decimal strings (WVA's format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perf_parms: Option<PerfParms>,
    /// Most concurrent requests per replica (vLLM `--max-num-seqs`).
    #[schemars(range(min = 1))]
    pub max_batch_size: u32,
}

/// WVA's latency parameters: decode step `ITL(n) = alpha + beta·n` and prefill
/// `prefill(n) = gamma + delta·tokens·n`, each a decimal string in milliseconds.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PerfParms {
    /// Keys `alpha` and `beta` (ms), each a decimal string.
    #[schemars(schema_with = "decimal_map_schema")]
    pub decode_parms: BTreeMap<String, String>,
    /// Keys `gamma` and `delta` (ms), each a decimal string.
    #[schemars(schema_with = "decimal_map_schema")]
    pub prefill_parms: BTreeMap<String, String>,
}

/// Reference to the scalable workload of a variant (like an HPA's `scaleTargetRef`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    /// API version of the target. Default `apps/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the target: any resource with a `scale` subresource (Deployment, StatefulSet,
    /// LeaderWorkerSet…).
    #[schemars(length(min = 1))]
    pub kind: String,
    /// Name of the target in the VariantAutoscaling's namespace.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// The role of a variant's replicas in disaggregated serving.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum VariantRole {
    // Plain comments, not doc comments: documented variants would make schemars emit a `oneOf`
    // instead of the `enum` a structural CRD schema wants.
    // Prefill and decode on the same replica (ordinary vLLM).
    #[default]
    Both,
    // Disaggregated prefill.
    Prefill,
    // Disaggregated decode.
    Decode,
}

impl VariantRole {
    fn is_both(&self) -> bool {
        *self == VariantRole::Both
    }
}

impl From<VariantRole> for Role {
    fn from(r: VariantRole) -> Self {
        match r {
            VariantRole::Both => Role::Both,
            VariantRole::Prefill => Role::Prefill,
            VariantRole::Decode => Role::Decode,
        }
    }
}

/// Observed and planned state, in WVA's format (numbers as decimal strings, rates in req/min).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariantAutoscalingStatus {
    /// What runs now and how it performs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_alloc: Option<Allocation>,
    /// What the last plan asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_optimized_alloc: Option<OptimizedAlloc>,
    /// Whether the desired allocation was handed to the actuator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actuation: Option<ActuationStatus>,
    /// Allot: latency the plan predicts for the desired replicas under their share of the load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<PredictedLatency>,
    /// Allot: the variant's pods by state (DESIGN §5). Only ready and booting pods are capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodStates>,
    /// Allot: the calibration of the variant's latency profile against what its servers
    /// delivered; a controller that restarts takes it up for the same profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationStatus>,
    /// `Ready`, `MetricsAvailable`, `OptimizationReady`, `ModelCalibrated` and `ModelDrift`, with
    /// reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A variant's current allocation and its measured performance (WVA's `Allocation`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// Accelerator name (a key of `accelerator-unit-costs`).
    #[schemars(length(min = 1))]
    pub accelerator: String,
    /// Replicas serving or booting (not unschedulable ones).
    #[schemars(range(min = 0))]
    pub num_replicas: i32,
    /// Most concurrent requests per replica.
    #[schemars(range(min = 0))]
    pub max_batch: i32,
    /// Cost of the current replicas per hour, in the unit of `accelerator-unit-costs`.
    #[schemars(regex(pattern = r"^\d+(\.\d+)?$"))]
    pub variant_cost: String,
    /// Mean inter-token latency, ms.
    #[schemars(regex(pattern = r"^\d+(\.\d+)?$"))]
    pub itl_average: String,
    /// Mean time to first token, ms.
    #[schemars(regex(pattern = r"^\d+(\.\d+)?$"))]
    pub ttft_average: String,
    /// Observed load of the variant's model.
    pub load: LoadProfile,
}

/// Observed load, WVA's units and string format.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadProfile {
    /// Requests per minute.
    pub arrival_rate: String,
    /// Mean prompt tokens per request.
    pub avg_input_tokens: String,
    /// Mean generated tokens per request.
    pub avg_output_tokens: String,
}

/// The allocation the last plan asks for (WVA's `OptimizedAlloc`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OptimizedAlloc {
    /// When the plan was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_time: Option<Time>,
    /// Accelerator name (a key of `accelerator-unit-costs`).
    #[schemars(length(min = 1))]
    pub accelerator: String,
    /// Desired replicas.
    #[schemars(range(min = 0))]
    pub num_replicas: i32,
}

/// Predicted mean latency of one replica at the planned load, ms, as decimal strings (WVA's
/// format for latencies in `currentAlloc`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PredictedLatency {
    /// Mean time to first token, ms (absent for decode-only variants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^\d+(\.\d+)?$"))]
    pub ttft_average: Option<String>,
    /// Mean inter-token latency, ms (absent for prefill-only variants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^\d+(\.\d+)?$"))]
    pub itl_average: Option<String>,
}

/// Pods of a variant's scale target by state.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodStates {
    /// Serving.
    pub ready: u32,
    /// Scheduled (or not yet considered) and starting: image pull, model load.
    pub booting: u32,
    /// The scheduler found no node: not capacity; the accelerator type is full.
    pub unschedulable: u32,
    /// Held by scheduling gates (a queue or quota).
    pub gated: u32,
}

/// The correction Allot plans a variant's profile with, and the evidence behind it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CalibrationStatus {
    /// `calibrated`, `calibrating`, `insufficient_traffic` or `not_calibrated`.
    pub state: String,
    /// Factor on the profile's prefill terms (gamma, delta, epsilon) the plan uses.
    #[schemars(range(min = 0.0))]
    pub prefill_factor: f64,
    /// Factor on the profile's decode terms (alpha, beta, eta) the plan uses.
    #[schemars(range(min = 0.0))]
    pub decode_factor: f64,
    /// 0 to 1: how much evidence the correction rests on.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence: f64,
    /// Observed mean TTFT over what the profile as given predicts, this cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_error_ratio: Option<f64>,
    /// Observed mean ITL over what the profile as given predicts, this cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itl_error_ratio: Option<f64>,
    /// Digest of the profile and engine settings the correction was learned for.
    pub profile_digest: String,
}

/// Actuation state.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ActuationStatus {
    /// True once the desired replicas were published (metrics) or applied (scale subresource).
    pub applied: bool,
}

impl VariantAutoscalingSpec {
    /// The role, `both` when unset.
    pub fn role(&self) -> Role {
        self.role.into()
    }

    /// The scale target, defaulting to the Deployment named like the VariantAutoscaling.
    pub fn scale_target(&self, va_name: &str) -> ScaleTargetRef {
        self.scale_target_ref.clone().unwrap_or_else(|| ScaleTargetRef {
            api_version: Some("apps/v1".into()),
            kind: "Deployment".into(),
            name: va_name.to_string(),
        })
    }
}

/// The CRD as YAML, exactly as `allot crds` prints it and `crds/` holds it.
pub fn crd_yaml() -> String {
    let crd = VariantAutoscaling::crd();
    let body = serde_saphyr::to_string(&crd).expect("a CRD always serializes");
    format!("# Generated by `allot crds --out-dir crds/` from src/k8s/crd.rs. Do not edit.\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// WVA's vllme sample (reference/wva.md §1.2), unchanged.
    const WVA_SAMPLE: &str = include_str!("../../tests/data/wva-vllme-variantautoscaling.yaml");

    #[test]
    fn wva_sample_manifest_deserializes_with_defaults_for_allot_fields() {
        let va: VariantAutoscaling = serde_saphyr::from_str(WVA_SAMPLE).expect("WVA manifest parses");
        assert_eq!(va.spec.model_id, "default/default");
        assert_eq!(va.spec.slo_class_ref, Some(ConfigMapKeyRef { name: "premium".into(), key: "opt-125m".into() }));
        let accs = &va.spec.model_profile.as_ref().expect("modelProfile").accelerators;
        assert_eq!(accs.len(), 2);
        assert_eq!(accs[0].acc, "A100");
        let parms = |i: usize| accs[i].perf_parms.as_ref().expect("perfParms");
        assert_eq!(parms(0).decode_parms["alpha"], "20.58");
        assert_eq!(parms(1).prefill_parms["delta"], "0.04");
        assert_eq!(accs[1].max_batch_size, 4);
        assert_eq!(va.spec.role(), Role::Both);
        assert_eq!(va.spec.min_replicas, None);
        let target = va.spec.scale_target("vllme-deployment");
        assert_eq!((target.kind.as_str(), target.name.as_str()), ("Deployment", "vllme-deployment"));
        assert_eq!(
            va.metadata.labels.as_ref().and_then(|l| l.get(ACCELERATOR_LABEL)).map(String::as_str),
            Some("A100")
        );
    }

    #[test]
    fn wva_status_round_trips_in_wva_format() {
        let status = serde_json::json!({
            "currentAlloc": {
                "accelerator": "A100", "numReplicas": 2, "maxBatch": 256, "variantCost": "80.00",
                "itlAverage": "50.00", "ttftAverage": "500.00",
                "load": {"arrivalRate": "10.50", "avgInputTokens": "100.00", "avgOutputTokens": "150.00"}
            },
            "desiredOptimizedAlloc": {"lastRunTime": "2025-10-29T10:00:00Z", "accelerator": "A100", "numReplicas": 3},
            "actuation": {"applied": true},
            "conditions": [{"type": "MetricsAvailable", "status": "True", "reason": "MetricsFound",
                            "message": "ok", "lastTransitionTime": "2025-10-29T10:00:00Z", "observedGeneration": 1}]
        });
        let parsed: VariantAutoscalingStatus = serde_json::from_value(status.clone()).expect("WVA status parses");
        assert_eq!(parsed.desired_optimized_alloc.as_ref().map(|d| d.num_replicas), Some(3));
        assert_eq!(parsed.conditions[0].reason, "MetricsFound");
        assert_eq!(serde_json::to_value(&parsed).expect("serializes"), status);
    }

    #[test]
    fn crd_has_wva_identity_and_printer_columns() {
        let crd = VariantAutoscaling::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("variantautoscalings.llmd.ai"));
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["va".to_string()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().is_some_and(|s| s.status.is_some()));
        let columns: Vec<(&str, &str)> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            columns,
            vec![
                ("Model", ".spec.modelID"),
                ("Accelerator", ".status.currentAlloc.accelerator"),
                ("CurrentReplicas", ".status.currentAlloc.numReplicas"),
                ("Optimized", ".status.desiredOptimizedAlloc.numReplicas"),
                ("Ready", ".status.conditions[?(@.type=='Ready')].status"),
                ("MetricsReady", ".status.conditions[?(@.type=='MetricsAvailable')].status"),
                ("Age", ".metadata.creationTimestamp"),
            ]
        );
    }

    #[test]
    fn crd_schema_requires_wva_fields_and_keeps_ours_optional() {
        let yaml = crd_yaml();
        let crd: serde_json::Value = serde_saphyr::from_str(&yaml).expect("generated YAML parses");
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let required: Vec<&str> =
            spec["required"].as_array().expect("required list").iter().filter_map(|v| v.as_str()).collect();
        assert_eq!(required, vec!["modelID"], "every other field is optional: each WVA shape omits some");
        for ours in [
            "scaleTargetRef",
            "role",
            "minReplicas",
            "maxReplicas",
            "serviceClass",
            "startupSeconds",
            "acceleratorType",
            "acceleratorCount",
            "variantProfile",
            "variantCost",
            "modelProfile",
        ] {
            assert!(
                spec["properties"][ours]["description"].is_string(),
                "{ours} needs a description for kubectl explain"
            );
        }
        assert_eq!(spec["properties"]["role"]["enum"], serde_json::json!(["both", "prefill", "decode"]));
        // perfParms values are decimals: `alpha: "fast"` is refused by the API server.
        let decode = &spec["properties"]["modelProfile"]["properties"]["accelerators"]["items"]["properties"]["perfParms"]
            ["properties"]["decodeParms"];
        assert_eq!(decode["additionalProperties"]["pattern"], DECIMAL_PATTERN);
        let simplified = &spec["properties"]["variantProfile"]["properties"]["perfParms"]["properties"]["prefillParms"];
        assert_eq!(simplified["additionalProperties"]["pattern"], DECIMAL_PATTERN);
        assert_eq!(spec["properties"]["variantCost"]["x-kubernetes-int-or-string"], true);
        let conditions = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
            ["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
    }
}
