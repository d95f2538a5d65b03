//! End to end on a real cluster (kind, k3d, any): apply `crds/`, create a namespace with the
//! ConfigMaps, a Deployment and a VariantAutoscaling, run one observe → decide → apply cycle,
//! and read the status back. Runs only when `KUBECONFIG` is set (no API server can be installed
//! where CI runs); prints "skipped: KUBECONFIG not set" otherwise.
//!
//! The cluster needs no GPU: an `allot-config` pool lends the variant's accelerator 8 GPUs, and
//! the Deployment runs a pause container.

mod k8s_support;

use std::time::Duration;

use allot::controller::{Cluster, Stabilizer, decide};
use allot::k8s::crd::{CRD_FILE_NAME, VariantAutoscaling};
use allot::k8s::{KubeCluster, Scope};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn one_cycle_on_a_real_cluster() {
    if std::env::var_os("KUBECONFIG").is_none() {
        // Straight to the process's stderr: the test harness captures `println!` of passing
        // tests, and a skip must show in CI logs.
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "k8s_e2e: skipped: KUBECONFIG not set");
        return;
    }
    let client = kube::Client::try_default().await.expect("KUBECONFIG points at a reachable cluster");
    let pp = PatchParams::apply("allot-e2e").force();

    // The committed CRD, as a user installs it.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds").join(CRD_FILE_NAME);
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&std::fs::read_to_string(path).expect("crds/ is readable")).expect("CRD parses");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch("variantautoscalings.llmd.ai", &pp, &Patch::Apply(&crd)).await.expect("CRD applied");
    for _ in 0..30 {
        let c = crds.get("variantautoscalings.llmd.ai").await.expect("CRD readable");
        let established = c
            .status
            .and_then(|s| s.conditions)
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let ns = format!("allot-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace"))
        .await
        .expect("namespace created");

    let result = run_cycle(client.clone(), &ns).await;
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    result.expect("one cycle on the cluster");
}

async fn run_cycle(client: kube::Client, ns: &str) -> anyhow::Result<()> {
    let pp = PatchParams::apply("allot-e2e").force();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for (name, data) in [
        ("accelerator-unit-costs", json!({"H100": "{\"device\": \"NVIDIA-H100-80GB-HBM3\", \"cost\": \"425.00\"}"})),
        (
            "service-classes-config",
            json!({"premium.yaml": "name: Premium\npriority: 1\ndata:\n  - model: e2e/model\n    slo-tpot: 80\n    slo-ttft: 2000\n"}),
        ),
        ("allot-config", json!({"config.yaml": "pools:\n  H100: { extra_gpus: 8 }\n"})),
    ] {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data});
        cms.patch(name, &pp, &Patch::Apply(cm)).await?;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "e2e-h100"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "e2e-h100"}},
                 "template": {"metadata": {"labels": {"app": "e2e-h100"}},
                              "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]}}}
    });
    deployments.patch("e2e-h100", &pp, &Patch::Apply(deployment)).await?;
    let vas: Api<VariantAutoscaling> = Api::namespaced(client.clone(), ns);
    let mut va = k8s_support::va("e2e-h100", "H100");
    va["metadata"] = json!({"name": "e2e-h100", "labels": {"inference.optimization/acceleratorName": "H100"}});
    va["spec"]["modelID"] = json!("e2e/model");
    vas.patch("e2e-h100", &pp, &Patch::Apply(va)).await?;

    let load = k8s_support::FakeLoad::default();
    load.set("e2e/model", Ok(k8s_support::metrics("e2e/model", 1.0, 512.0, 128.0)));
    let scope = Scope { namespace: Some(ns.into()), config_namespace: ns.into(), ..Scope::default() };
    let mut cluster = KubeCluster::with_load(client.clone(), scope, load);

    // Wait for the Deployment's pod to exist (it may still be booting).
    let mut observed = cluster.observe().await?;
    for _ in 0..60 {
        let p = observed.pods[0];
        if p.ready + p.booting + p.unschedulable + p.gated > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        observed = cluster.observe().await?;
    }
    let pods = observed.pods[0];
    anyhow::ensure!(pods.ready + pods.booting == 1, "one pod, ready or booting: {pods:?}");
    let config = cluster.config().expect("configuration read").clone();
    let decision = decide(&observed, None, &mut Stabilizer::new(config.allot.behavior.clone()), 1);
    let applied = cluster.apply(&decision).await;
    anyhow::ensure!(applied.errors.is_empty(), "apply failed: {:?}", applied.errors);

    let status = vas.get("e2e-h100").await?.status.expect("status written");
    let desired = status.desired_optimized_alloc.expect("desiredOptimizedAlloc");
    anyhow::ensure!(desired.accelerator == "H100", "accelerator {}", desired.accelerator);
    anyhow::ensure!(desired.num_replicas >= 1, "1 req/s needs a replica");
    let states = status.pods.expect("pod states");
    anyhow::ensure!(states.ready + states.booting == 1, "pods classified: {states:?}");
    anyhow::ensure!(status.conditions.iter().any(|c| c.type_ == "OptimizationReady" && c.status == "True"));
    println!("e2e: desired {} on {}, pods {states:?}", desired.num_replicas, desired.accelerator);
    Ok(())
}
