//! The committed CRD under `crds/` must be what the code generates, WVA's manifests of every
//! version must still be accepted (by the types and by the schema an API server enforces), and
//! the shapes translate to the same variant.

mod k8s_support;

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
    assert_eq!(va.spec.model_profile.as_ref().expect("modelProfile").accelerators[0].max_batch_size, 4);
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
        let profile = va.spec.model_profile.as_ref().expect("the example uses WVA's modelProfile");
        assert_eq!(gpus.as_str(), Some(profile.accelerators[0].acc_count.to_string().as_str()));
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

/// The scale-to-zero example: KEDA may take the target to 0, follows Allot's count, and the
/// activation trigger reads the gauge Allot reads by default, for the model the variant serves,
/// and can never ask for more than one replica on its own.
#[test]
fn the_scale_to_zero_example_activates_on_the_gateway_gauge_allot_reads() {
    let so = documents("deploy/examples/keda-scale-to-zero.yaml").remove(0);
    assert_eq!(so["spec"]["minReplicaCount"], 0);
    let triggers = so["spec"]["triggers"].as_array().expect("triggers");
    let query = |i: usize| triggers[i]["metadata"]["query"].as_str().expect("query").to_string();
    assert!(query(0).contains("allot_desired_replicas{") && query(0).contains("variant=\"llama-70b-a100\""));
    let variant = documents("deploy/examples/llama-70b-a100.yaml")
        .into_iter()
        .find(|d| d["kind"] == "VariantAutoscaling")
        .expect("the example variant");
    let model = variant["spec"]["modelID"].as_str().expect("modelID");
    let gateway = allot::prometheus::GatewayQueueSettings::default();
    let activation = query(1);
    for metric in &gateway.metrics {
        assert!(
            activation.contains(&format!("{metric}{{{}=\"{model}\"}}", gateway.model_label)),
            "{activation} reads {metric} for {model}"
        );
    }
    let threshold: f64 = triggers[1]["metadata"]["threshold"].as_str().expect("threshold").parse().expect("number");
    assert!(threshold >= 1e5, "the activation trigger alone asks for at most one replica");
    assert_eq!(triggers[1]["metadata"]["activationThreshold"], "0");
}

/// The YAML documents of a file under `tests/data/upstream/`.
fn upstream(file: &str) -> Vec<serde_json::Value> {
    documents(&format!("tests/data/upstream/{file}"))
}

fn committed_crd() -> serde_json::Value {
    serde_saphyr::from_str(&committed()).expect("the committed CRD parses")
}

#[test]
fn every_upstream_wva_shape_is_accepted_by_the_types_and_the_schema() {
    let crd = committed_crd();
    let mut seen = 0;
    for file in [
        "wva-v0.0.5-vllme-variantautoscaling.yaml",
        "wva-pr418-variantautoscaling-with-cost.yaml",
        "wva-v0.5.1-variantautoscaling-with-cost.yaml",
    ] {
        for doc in upstream(file) {
            let name = doc["metadata"]["name"].as_str().expect("name").to_string();
            let problems = k8s_support::schema_problems(&crd, &doc);
            assert!(problems.is_empty(), "{file} {name}: the CRD would refuse it: {problems:?}");
            let va: VariantAutoscaling =
                serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{file} {name}: {e}"));
            assert!(!va.spec.model_id.is_empty());
            seen += 1;
        }
    }
    assert_eq!(seen, 1 + 7 + 6, "every document of the three samples");
}

#[test]
fn the_crd_refuses_non_decimal_latency_parameters_and_names_the_field() {
    let crd = committed_crd();
    let mut doc = upstream("wva-v0.0.5-vllme-variantautoscaling.yaml").remove(0);
    doc["spec"]["modelProfile"]["accelerators"][0]["perfParms"]["decodeParms"]["alpha"] = serde_json::json!("fast");
    let problems = k8s_support::schema_problems(&crd, &doc);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0]
            .starts_with("spec.modelProfile.accelerators[0].perfParms.decodeParms.alpha: Invalid value: \"fast\""),
        "{problems:?}"
    );
    let mut simplified = upstream("wva-pr418-variantautoscaling-with-cost.yaml").remove(0);
    simplified["spec"]["variantProfile"]["perfParms"]["prefillParms"]["delta"] = serde_json::json!("-0.1");
    simplified["spec"]["variantCost"] = serde_json::json!("cheap");
    let problems = k8s_support::schema_problems(&crd, &simplified);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().any(|p| p.starts_with("spec.variantProfile.perfParms.prefillParms.delta")), "{problems:?}");
    assert!(problems.iter().any(|p| p.starts_with("spec.variantCost")), "{problems:?}");
}

/// The ConfigMaps a WVA installation of the samples would have: H100 and A100 prices, one class
/// for both models.
fn sample_config() -> allot::k8s::config::ClusterConfig {
    use std::collections::BTreeMap;
    let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    allot::k8s::config::ClusterConfig::parse(
        &allot::k8s::config::AllotConfig::default(),
        &data(&[
            ("H100", r#"{"device": "NVIDIA-H100-80GB-HBM3", "cost": "425.00"}"#),
            ("A100", r#"{"device": "NVIDIA-A100-SXM4-80GB", "cost": "221.00"}"#),
            ("T4", r#"{"device": "Tesla-T4", "cost": "35.00"}"#),
        ]),
        &data(&[(
            "premium.yaml",
            "name: Premium\npriority: 1\ndata:\n  - model: meta/llama-3.1-70b\n    slo-tpot: 80\n    slo-ttft: 2000\n  - model: meta/llama-3.1-8b\n    slo-tpot: 50\n    slo-ttft: 1000\n",
        )]),
        None,
        None,
    )
    .expect("sample configuration parses")
}

fn assemble_docs(docs: &[serde_json::Value]) -> allot::observe::snapshot::Assembly {
    use allot::observe::snapshot::{Observation, assemble};
    let vas: Vec<VariantAutoscaling> =
        docs.iter().map(|d| serde_json::from_value(d.clone()).expect("deserializes")).collect();
    let config = sample_config();
    // Eight free GPUs of each type.
    let mut inventory = allot::observe::inventory::Inventory::default();
    for device in ["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "Tesla-T4"] {
        let d = inventory.devices.entry(device.into()).or_default();
        (d.nodes, d.allocatable_gpus) = (1, 8);
    }
    let (pods, targets) = (Default::default(), Default::default());
    assemble(&Observation {
        variants: &vas,
        config: &config,
        inventory: &inventory,
        pods: &pods,
        targets: &targets,
        load: &[],
    })
}

#[test]
fn the_simplified_and_the_legacy_shape_of_one_variant_translate_to_the_same_variant() {
    let docs = upstream("wva-pr418-variantautoscaling-with-cost.yaml");
    let pick = |name: &str| docs.iter().find(|d| d["metadata"]["name"] == name).cloned().expect(name);
    // The sample writes the premium H100 variant twice: in the new shape and in the legacy one.
    let a = assemble_docs(&[pick("llama-70b-premium-h100-simplified"), pick("llama-70b-premium-h100")]);
    assert!(a.skipped.is_empty(), "{:?}", a.skipped);
    let [new, old] = [&a.scenario.variants[1], &a.scenario.variants[0]];
    assert_eq!(new.name, "llm-inference/llama-70b-premium-h100-simplified");
    for (what, n, o) in [
        ("accelerator", new.accelerator.clone(), old.accelerator.clone()),
        ("gpus", new.gpus_per_replica.to_string(), old.gpus_per_replica.to_string()),
        ("batch", new.max_batch.to_string(), old.max_batch.to_string()),
    ] {
        assert_eq!(n, o, "{what}");
    }
    assert_eq!((new.accelerator.as_str(), new.gpus_per_replica, new.max_batch), ("H100", 1, 256));
    assert_eq!((new.min_replicas, new.max_replicas), (1, Some(10)), "minReplicas/maxReplicas of the new shape");
    let params =
        |profile: &str| a.scenario.profiles.iter().find(|p| p.name == profile).map(|p| p.params).expect(profile);
    assert_eq!(params(new.profile.as_deref().expect("inline")), params(old.profile.as_deref().expect("inline")));
    assert_eq!(params(new.profile.as_deref().expect("inline")).alpha_ms, 15.2);
    // Every other document of the sample plans too (A100 and T4 from modelProfile).
    let all = assemble_docs(&docs);
    assert!(all.skipped.is_empty(), "{:?}", all.skipped);
    assert_eq!(all.scenario.variants.len(), 7);
}

#[test]
fn a_v0_5_variant_needs_an_accelerator_and_a_profile_and_gets_them_from_a_label_and_an_annotation() {
    let mut docs = upstream("wva-v0.5.1-variantautoscaling-with-cost.yaml");
    let a = assemble_docs(&docs);
    assert_eq!(a.skipped.len(), 6, "nothing in a v0.5 object says where it runs or how fast");
    assert!(a.skipped.iter().all(|s| s.reason.contains("no accelerator")), "{:?}", a.skipped);
    for (doc, (acc, profile)) in
        docs.iter_mut().zip([("H100", "llama2-70b/h100-80gb/tp4"), ("A100", "llama2-70b/a100-80gb/tp4")])
    {
        doc["metadata"]["labels"]["inference.optimization/acceleratorName"] = serde_json::json!(acc);
        doc["metadata"]["annotations"] = serde_json::json!({"allot.llmd.ai/profile": profile});
    }
    let a = assemble_docs(&docs[..2]);
    assert!(a.skipped.is_empty(), "{:?}", a.skipped);
    let v = &a.scenario.variants[0];
    assert_eq!(
        (v.accelerator.as_str(), v.profile.as_deref(), v.max_batch),
        ("H100", Some("llama2-70b/h100-80gb/tp4"), 256)
    );
    a.validate().expect("bundled profiles resolve");
}
