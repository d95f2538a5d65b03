//! Where variants come from: VariantAutoscaling objects, each parsed on its own, and — like WVA
//! v0.8+ — HorizontalPodAutoscalers and KEDA ScaledObjects annotated `llm-d.ai/managed: "true"`.
//! Also what a scale target's own object says about its replicas (GPUs per replica from its pod
//! templates, a LeaderWorkerSet's group size).
//!
//! Annotation discovery (WVA's `internal/annotations`, llm-d-autoscaling issue #1130):
//!
//! | annotation | required | meaning |
//! |---|---|---|
//! | `llm-d.ai/managed: "true"` | yes | opt in |
//! | `llm-d.ai/model-id` | yes | the model (vLLM's `model_name`) |
//! | `llm-d.ai/variant-cost` | no | WVA's cost per replica, default `10.0`; accepted, Allot prices by `accelerator-unit-costs` |
//! | `llm-d.ai/role` | no | `prefill`, `decode` or `both` |
//! | `allot.llmd.ai/profile` | for Allot | the bundled latency profile (`models/`) |
//!
//! The variant is named after the scaler's scale target (`namespace/target`), so its
//! `allot_desired_replicas{variant=…}` series is what WVA's samples query with
//! `variant_name=<target>`. Bounds come from the scaler (HPA `minReplicas`, default 1, and
//! `maxReplicas`; ScaledObject `minReplicaCount`, default 0, and `maxReplicaCount`, default 100).
//! The accelerator comes from the scaler's `inference.optimization/acceleratorName` label, else
//! from the product the target's pod template selects. Precedence on the same target: a
//! VariantAutoscaling, then a ScaledObject, then an HPA; the HPA KEDA generates for a ScaledObject
//! (owned by it, inheriting its annotations) is ignored.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::core::ObjectMeta;
use serde_json::Value;

use super::cache::TargetKey;
use super::crd::{
    ACCELERATOR_LABEL, Decimal, PROFILE_ANNOTATION, ScaleTargetRef, VariantAutoscaling, VariantAutoscalingSpec,
    VariantAutoscalingStatus, VariantRole,
};
use crate::observe::inventory::pod_gpu_request;
use crate::observe::snapshot::TargetFacts;

pub const MANAGED_ANNOTATION: &str = "llm-d.ai/managed";
pub const MODEL_ID_ANNOTATION: &str = "llm-d.ai/model-id";
pub const VARIANT_COST_ANNOTATION: &str = "llm-d.ai/variant-cost";
pub const ROLE_ANNOTATION: &str = "llm-d.ai/role";
/// WVA's default `variantCost`.
pub const DEFAULT_VARIANT_COST: &str = "10.0";

/// An object that could not be turned into a variant: which field, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Invalid {
    /// The path of the offending field (`spec.modelProfile.accelerators[0].maxBatchSize`).
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Parse one VariantAutoscaling read as a raw object. Its status is parsed separately: a status
/// another controller wrote in another shape does not make the spec unusable.
pub fn parse_variant(object: &DynamicObject) -> Result<VariantAutoscaling, Invalid> {
    let spec = object.data.get("spec").cloned().unwrap_or(Value::Null);
    if spec.is_null() {
        return Err(Invalid { field: "spec".into(), message: "missing".into() });
    }
    let spec: VariantAutoscalingSpec = serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        Invalid {
            field: if path == "." { "spec".into() } else { format!("spec.{path}") },
            message: e.into_inner().to_string(),
        }
    })?;
    if spec.model_id.trim().is_empty() {
        return Err(Invalid { field: "spec.modelID".into(), message: "must not be empty".into() });
    }
    let status: Option<VariantAutoscalingStatus> =
        object.data.get("status").and_then(|s| serde_json::from_value(s.clone()).ok());
    Ok(VariantAutoscaling { metadata: object.metadata.clone(), spec, status })
}

/// Which kind of scaler an annotated variant came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScalerKind {
    ScaledObject,
    HorizontalPodAutoscaler,
}

impl ScalerKind {
    pub fn api_version(self) -> &'static str {
        match self {
            ScalerKind::ScaledObject => "keda.sh/v1alpha1",
            ScalerKind::HorizontalPodAutoscaler => "autoscaling/v2",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            ScalerKind::ScaledObject => "ScaledObject",
            ScalerKind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
        }
    }
}

/// An annotated HPA or ScaledObject.
#[derive(Clone, Debug, PartialEq)]
pub struct Scaler {
    pub kind: ScalerKind,
    pub metadata: ObjectMeta,
    pub target: ScaleTargetRef,
    pub min_replicas: Option<u32>,
    pub max_replicas: Option<u32>,
}

impl Scaler {
    pub fn namespace(&self) -> String {
        self.metadata.namespace.clone().unwrap_or_else(|| "default".into())
    }

    pub fn name(&self) -> String {
        self.metadata.name.clone().unwrap_or_default()
    }

    /// `Kind namespace/name`, for messages.
    pub fn describe(&self) -> String {
        format!("{} {}/{}", self.kind.kind(), self.namespace(), self.name())
    }

    pub fn target_key(&self) -> TargetKey {
        target_key(&self.namespace(), &self.target)
    }
}

/// The cached identity of a target.
pub fn target_key(namespace: &str, target: &ScaleTargetRef) -> TargetKey {
    TargetKey {
        namespace: namespace.to_string(),
        api_version: target.api_version.clone().unwrap_or_else(|| "apps/v1".into()),
        kind: target.kind.clone(),
        name: target.name.clone(),
    }
}

fn is_managed(meta: &ObjectMeta) -> bool {
    meta.annotations.as_ref().and_then(|a| a.get(MANAGED_ANNOTATION)).is_some_and(|v| v == "true")
}

/// The scale target of a scaler's `spec.scaleTargetRef` (kind default Deployment, as WVA).
fn scale_target(value: Option<&Value>, what: &str) -> Result<ScaleTargetRef, Invalid> {
    let field = "spec.scaleTargetRef".to_string();
    let v = value.ok_or_else(|| Invalid { field: field.clone(), message: format!("{what} has no scaleTargetRef") })?;
    let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() {
        return Err(Invalid { field: format!("{field}.name"), message: "missing".into() });
    }
    Ok(ScaleTargetRef {
        api_version: Some(
            v.get("apiVersion").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or("apps/v1").into(),
        ),
        kind: v.get("kind").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or("Deployment").into(),
        name: name.into(),
    })
}

/// An annotated HPA, `None` when it is not managed (or KEDA generated it for a ScaledObject).
pub fn scaler_from_hpa(hpa: &HorizontalPodAutoscaler) -> Option<Result<Scaler, Invalid>> {
    if !is_managed(&hpa.metadata) {
        return None;
    }
    let owned_by_keda = hpa.owner_references().iter().any(|o| o.kind == "ScaledObject");
    if owned_by_keda {
        return None;
    }
    let spec = &hpa.spec;
    let target = serde_json::to_value(&spec.scale_target_ref).ok();
    Some(scale_target(target.as_ref(), "the HPA").map(|target| Scaler {
        kind: ScalerKind::HorizontalPodAutoscaler,
        metadata: hpa.metadata.clone(),
        target,
        min_replicas: Some(spec.min_replicas.map_or(1, |n| n.max(0) as u32)),
        max_replicas: Some(spec.max_replicas.max(0) as u32),
    }))
}

/// An annotated KEDA ScaledObject, `None` when it is not managed.
pub fn scaler_from_scaled_object(so: &DynamicObject) -> Option<Result<Scaler, Invalid>> {
    if !is_managed(&so.metadata) {
        return None;
    }
    let spec = so.data.get("spec");
    let count = |key: &str, default: u32| -> Result<u32, Invalid> {
        match spec.and_then(|s| s.get(key)) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| Invalid {
                field: format!("spec.{key}"),
                message: format!("must be a whole number ≥ 0, got {v}"),
            }),
        }
    };
    Some((|| {
        let target = scale_target(spec.and_then(|s| s.get("scaleTargetRef")), "the ScaledObject")?;
        Ok(Scaler {
            kind: ScalerKind::ScaledObject,
            metadata: so.metadata.clone(),
            target,
            // KEDA's defaults.
            min_replicas: Some(count("minReplicaCount", 0)?),
            max_replicas: Some(count("maxReplicaCount", 100)?),
        })
    })())
}

/// The in-memory VariantAutoscaling of an annotated scaler (never written to the API server).
pub fn synthesize(scaler: &Scaler) -> Result<VariantAutoscaling, Invalid> {
    let annotations = scaler.metadata.annotations.clone().unwrap_or_default();
    let model = annotations.get(MODEL_ID_ANNOTATION).map(|s| s.trim()).unwrap_or_default();
    if model.is_empty() {
        return Err(Invalid {
            field: format!("metadata.annotations[{MODEL_ID_ANNOTATION}]"),
            message: "required and missing".into(),
        });
    }
    let cost = annotations.get(VARIANT_COST_ANNOTATION).map(|s| s.trim().to_string());
    let cost = Decimal(cost.unwrap_or_else(|| DEFAULT_VARIANT_COST.into()));
    if cost.value().is_none() {
        return Err(Invalid {
            field: format!("metadata.annotations[{VARIANT_COST_ANNOTATION}]"),
            message: format!("must be a decimal number ≥ 0, got {:?}", cost.0),
        });
    }
    let role = match annotations.get(ROLE_ANNOTATION).map(|s| s.trim()) {
        None | Some("") | Some("both") => VariantRole::Both,
        Some("prefill") => VariantRole::Prefill,
        Some("decode") => VariantRole::Decode,
        Some(other) => {
            return Err(Invalid {
                field: format!("metadata.annotations[{ROLE_ANNOTATION}]"),
                message: format!("must be prefill, decode or both, got {other:?}"),
            });
        }
    };
    if let (Some(min), Some(max)) = (scaler.min_replicas, scaler.max_replicas)
        && max < min
    {
        return Err(Invalid { field: "spec".into(), message: format!("maximum replicas {max} below minimum {min}") });
    }
    let mut kept: BTreeMap<String, String> = BTreeMap::new();
    if let Some(profile) = annotations.get(PROFILE_ANNOTATION) {
        kept.insert(PROFILE_ANNOTATION.into(), profile.clone());
    }
    let labels: BTreeMap<String, String> = scaler
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() == ACCELERATOR_LABEL)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let metadata = ObjectMeta {
        name: Some(scaler.target.name.clone()),
        namespace: Some(scaler.namespace()),
        uid: scaler.metadata.uid.clone(),
        generation: scaler.metadata.generation,
        annotations: Some(kept),
        labels: Some(labels),
        ..ObjectMeta::default()
    };
    let spec = VariantAutoscalingSpec {
        model_id: model.to_string(),
        slo_class_ref: None,
        model_profile: None,
        scale_target_ref: Some(scaler.target.clone()),
        accelerator_type: None,
        accelerator_count: None,
        variant_profile: None,
        variant_cost: Some(cost),
        role,
        min_replicas: scaler.min_replicas,
        max_replicas: scaler.max_replicas,
        service_class: None,
        startup_seconds: None,
    };
    Ok(VariantAutoscaling { metadata, spec, status: None })
}

/// What a target's own object says: the accelerators one replica requests and the product its
/// pods select; for a LeaderWorkerSet, the group size too.
pub fn target_facts(key: &TargetKey, object: &DynamicObject) -> (TargetFacts, Option<u32>) {
    let spec = object.data.get("spec");
    let template =
        |v: Option<&Value>| -> Option<PodTemplateSpec> { v.and_then(|t| serde_json::from_value(t.clone()).ok()) };
    let gpus = |t: &PodTemplateSpec| -> u32 {
        let pod = Pod { spec: t.spec.clone(), ..Pod::default() };
        pod_gpu_request(&pod)
    };
    let product = |t: &PodTemplateSpec| -> Option<String> {
        let spec = t.spec.as_ref()?;
        spec.node_selector.as_ref()?.get("nvidia.com/gpu.product").cloned()
    };
    if key.is_leader_worker_set() {
        let lwt = spec.and_then(|s| s.get("leaderWorkerTemplate"));
        let size = lwt.and_then(|t| t.get("size")).and_then(Value::as_u64).map_or(1, |n| n.max(1)) as u32;
        let worker = template(lwt.and_then(|t| t.get("workerTemplate")));
        let leader = template(lwt.and_then(|t| t.get("leaderTemplate"))).or_else(|| worker.clone());
        let per_group = match (&leader, &worker) {
            (Some(l), Some(w)) => Some(gpus(l) + (size - 1) * gpus(w)),
            (Some(l), None) => Some(gpus(l)),
            _ => None,
        };
        let node_product = leader.as_ref().and_then(product).or_else(|| worker.as_ref().and_then(product));
        return (TargetFacts { gpus_per_replica: per_group.filter(|n| *n > 0), node_product }, Some(size));
    }
    let t = template(spec.and_then(|s| s.get("template")));
    (
        TargetFacts {
            gpus_per_replica: t.as_ref().map(gpus).filter(|n| *n > 0),
            node_product: t.as_ref().and_then(product),
        },
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynamic(v: Value) -> DynamicObject {
        serde_json::from_value(v).expect("a valid object")
    }

    #[test]
    fn a_bad_variant_names_the_offending_field() {
        let o = dynamic(serde_json::json!({
            "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
            "metadata": {"name": "bad", "namespace": "llm"},
            "spec": {"modelID": "m", "modelProfile": {"accelerators": [{"acc": "A100", "accCount": 1, "maxBatchSize": "many"}]}}
        }));
        let e = parse_variant(&o).expect_err("maxBatchSize is not a number");
        assert_eq!(e.field, "spec.modelProfile.accelerators[0].maxBatchSize");
        assert!(e.message.contains("invalid type"), "{e}");
        let o = dynamic(serde_json::json!({
            "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling", "metadata": {"name": "x"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}}
        }));
        assert_eq!(parse_variant(&o).expect_err("no modelID").field, "spec");
    }

    #[test]
    fn a_foreign_status_does_not_make_the_spec_unusable() {
        let o = dynamic(serde_json::json!({
            "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling", "metadata": {"name": "x", "namespace": "llm"},
            "spec": {"modelID": "m", "scaleTargetRef": {"kind": "Deployment", "name": "x"}, "variantCost": "80.0"},
            "status": {"desiredOptimizedAlloc": {"numReplicas": "three"}}
        }));
        let va = parse_variant(&o).expect("the spec is fine");
        assert_eq!(va.status, None);
        assert_eq!(va.spec.variant_cost.as_ref().and_then(Decimal::value), Some(80.0));
    }

    #[test]
    fn keda_generated_hpas_and_unmanaged_scalers_are_ignored() {
        let hpa = |annotations: Value, owner: bool| -> HorizontalPodAutoscaler {
            let mut v = serde_json::json!({
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "h", "namespace": "llm", "annotations": annotations},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama"},
                         "maxReplicas": 4}
            });
            if owner {
                v["metadata"]["ownerReferences"] = serde_json::json!([{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": "so", "uid": "u"}]);
            }
            serde_json::from_value(v).expect("valid HPA")
        };
        let managed = serde_json::json!({"llm-d.ai/managed": "true", "llm-d.ai/model-id": "m"});
        assert!(scaler_from_hpa(&hpa(serde_json::json!({}), false)).is_none());
        assert!(scaler_from_hpa(&hpa(managed.clone(), true)).is_none(), "KEDA's own HPA inherits the annotations");
        let s = scaler_from_hpa(&hpa(managed, false)).expect("managed").expect("valid");
        assert_eq!((s.min_replicas, s.max_replicas), (Some(1), Some(4)), "HPA's default minReplicas is 1");
        let va = synthesize(&s).expect("synthesized");
        assert_eq!(va.metadata.name.as_deref(), Some("llama"), "named after its target");
        assert_eq!(va.spec.variant_cost.as_ref().map(|c| c.0.as_str()), Some("10.0"), "WVA's default cost");
    }
}
