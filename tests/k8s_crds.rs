//! The committed CRD under `crds/` must be what the code generates, and WVA's manifests must
//! still be accepted.

use std::path::Path;
use std::process::Command;

use allot::k8s::crd::{CRD_FILE_NAME, VariantAutoscaling, crd_yaml};

fn committed() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds").join(CRD_FILE_NAME);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn committed_crd_is_up_to_date() {
    assert!(
        committed() == crd_yaml(),
        "crds/{CRD_FILE_NAME} is out of date with src/k8s/crd.rs; run `cargo run -- crds --out-dir crds/` and commit it"
    );
}

#[test]
fn crds_subcommand_prints_and_writes_the_committed_crd() {
    let out = Command::new(env!("CARGO_BIN_EXE_allot")).arg("crds").output().expect("runs");
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).expect("utf-8"), committed());

    let dir = std::env::temp_dir().join(format!("allot-crds-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_allot")).args(["crds", "--out-dir"]).arg(&dir).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written = std::fs::read_to_string(dir.join(CRD_FILE_NAME)).expect("file written");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(written, committed());
}

/// WVA's vllme sample VariantAutoscaling with the status WVA writes (reference/wva.md §1.2).
const WVA_VLLME: &str = include_str!("data/wva-vllme-variantautoscaling.yaml");

#[test]
fn wva_vllme_manifest_with_status_deserializes() {
    let va: VariantAutoscaling = serde_saphyr::from_str(WVA_VLLME).expect("WVA manifest parses");
    assert_eq!(va.spec.model_id, "default/default");
    assert_eq!(va.spec.model_profile.accelerators[0].max_batch_size, 4);
    let status = va.status.expect("status");
    assert_eq!(status.current_alloc.expect("currentAlloc").load.arrival_rate, "10.50");
    assert_eq!(status.desired_optimized_alloc.expect("desiredOptimizedAlloc").num_replicas, 2);
    assert!(status.actuation.expect("actuation").applied);
}

/// YAML documents of a file under `deploy/`.
fn documents(path: &str) -> Vec<serde_json::Value> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()));
    text.split("\n---\n")
        .filter(|d| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')))
        .map(|d| serde_saphyr::from_str(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

#[test]
fn example_manifests_are_valid_variants_and_configuration() {
    use allot::k8s::config::{AllotConfig, ClusterConfig};
    use std::collections::BTreeMap;

    for file in ["deploy/examples/llama-70b-h100.yaml", "deploy/examples/llama-70b-a100.yaml"] {
        let docs = documents(file);
        let va = docs.iter().find(|d| d["kind"] == "VariantAutoscaling").expect("a VariantAutoscaling");
        let va: VariantAutoscaling = serde_json::from_value(va.clone()).expect("the example VA deserializes");
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").expect("its Deployment");
        assert_eq!(deployment["metadata"]["name"], serde_json::json!(va.metadata.name), "default scale target");
        let gpus = &deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"];
        assert_eq!(gpus.as_str(), Some(va.spec.model_profile.accelerators[0].acc_count.to_string().as_str()));
    }
    let data = |d: &serde_json::Value| -> BTreeMap<String, String> {
        serde_json::from_value(d["data"].clone()).expect("string data")
    };
    let configs = documents("deploy/examples/configmaps.yaml");
    let by_name = |n: &str| configs.iter().find(|d| d["metadata"]["name"] == n).map(data).expect("ConfigMap present");
    let allot = by_name("allot-config");
    let config = ClusterConfig::parse(
        &AllotConfig::default(),
        &by_name("accelerator-unit-costs"),
        &by_name("service-classes-config"),
        None,
        Some(&allot),
    )
    .expect("the example configuration parses");
    assert_eq!(config.allot.behavior.scale_down.stabilization_window_seconds, 300);
    assert_eq!(config.accelerators.len(), 2);

    let hpa = documents("deploy/examples/hpa.yaml").remove(0);
    let hpa: k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler =
        serde_json::from_value(hpa).expect("the example HPA is an autoscaling/v2 HPA");
    let spec = hpa.spec;
    let metric = spec.metrics.expect("metrics").remove(0).external.expect("external metric").metric;
    assert_eq!(metric.name, "allot_desired_replicas");
    let labels = metric.selector.and_then(|s| s.match_labels).expect("labels");
    assert_eq!(labels.get("variant"), Some(&spec.scale_target_ref.name));
    let keda = documents("deploy/examples/keda-scaledobject.yaml").remove(0);
    let query = keda["spec"]["triggers"][0]["metadata"]["query"].as_str().expect("query");
    assert!(query.contains("allot_desired_replicas{") && query.contains("variant=\"llama-70b-a100\""), "{query}");
}
