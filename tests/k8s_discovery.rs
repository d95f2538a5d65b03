//! Where variants come from and what a replica is, against the mocked API server with
//! upstream-shaped objects: WVA v0.8+'s annotated ScaledObjects and HPAs, LeaderWorkerSets
//! (a replica is a group of pods), and MIG slices as accelerators of their own.

mod k8s_support;

use allot::controller::run::Stepper;
use allot::controller::{Cluster, Shared, Stabilizer};
use allot::k8s::{KubeCluster, Scope};
use k8s_support::*;
use serde_json::{Value, json};

fn upstream(file: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/upstream").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.split("\n---\n")
        .filter(|d| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')))
        .map(|d| serde_saphyr::from_str(d).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

/// Accelerator prices and one class per model the tests use.
fn configure(server: &ApiServer, accelerators: &[(&str, &str)], models: &[&str]) {
    let costs: serde_json::Map<String, Value> = accelerators
        .iter()
        .map(|(name, device)| (name.to_string(), json!(format!("{{\"device\": \"{device}\", \"cost\": \"300.00\"}}"))))
        .collect();
    server.put(
        &configmap_path("accelerator-unit-costs"),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "accelerator-unit-costs", "namespace": CONFIG_NS},
               "data": costs}),
    );
    let targets: String =
        models.iter().map(|m| format!("  - model: {m}\n    slo-tpot: 100\n    slo-ttft: 3000\n")).collect();
    server.put(
        &configmap_path("service-classes-config"),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "service-classes-config", "namespace": CONFIG_NS},
               "data": {"premium.yaml": format!("name: Premium\npriority: 1\ndata:\n{targets}")}}),
    );
}

async fn start(server: &ApiServer, client: kube::Client, load: FakeLoad) -> KubeCluster<FakeLoad> {
    let mut c =
        KubeCluster::with_load(client, Scope { identity: "allot-0".into(), ..Scope::default() }, load).with_clock(now);
    let _ = c.observe().await;
    settle(server, &c).await;
    c
}

#[tokio::test]
async fn annotated_scaled_objects_and_hpas_are_variants_and_publish_the_metric_they_scale_on() {
    let (client, server) = ApiServer::start();
    configure(&server, &[("H100", H100)], &["default/default", MODEL]);
    server.create(node("h100-a", H100, 8));
    // WVA's own sample ScaledObject, unchanged, and the Deployment it scales (on H100 nodes).
    let so = upstream("wva-annotations-scaledobject.yaml").remove(0);
    let so_path = server.create(so.clone());
    let mut target = deployment("sample-deployment", 1, 1);
    target["metadata"]["namespace"] = json!("llm-d-sim");
    target["spec"]["template"]["spec"]["nodeSelector"] = json!({"nvidia.com/gpu.product": H100});
    server.create(target);
    // An annotated HPA on a Deployment a VariantAutoscaling already scales: the VA wins.
    server.put(&va_path("llama-h100"), va("llama-h100", "H100"));
    server.put(&deployment_path("llama-h100"), deployment("llama-h100", 1, 4));
    let hpa = |name: &str, target: &str, owner: Option<&str>| {
        let mut h = json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": NS, "annotations": {
                "llm-d.ai/managed": "true", "llm-d.ai/model-id": MODEL, "allot.llmd.ai/profile": "llama2-70b/h100-80gb/tp4"},
                "labels": {"inference.optimization/acceleratorName": "H100"}},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "minReplicas": 1, "maxReplicas": 3,
                     "metrics": [{"type": "External", "external": {"metric": {"name": "allot_desired_replicas"},
                                  "target": {"type": "AverageValue", "averageValue": "1"}}}]}
        });
        if let Some(o) = owner {
            h["metadata"]["ownerReferences"] =
                json!([{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": o, "uid": "so"}]);
        }
        h
    };
    server.create(hpa("llama-h100-hpa", "llama-h100", None));
    // The HPA KEDA generates for a ScaledObject inherits its annotations: not a variant of its own.
    server.create(hpa("keda-hpa-other", "other", Some("other-scaler")));
    // An annotated HPA of its own target.
    server.put(&deployment_path("llama-extra"), deployment("llama-extra", 1, 4));
    server.create(hpa("llama-extra-hpa", "llama-extra", None));

    let load = FakeLoad::default();
    load.set("default/default", Ok(metrics("default/default", 1.0, 128.0, 64.0)));
    load.set(MODEL, Ok(metrics(MODEL, 1.0, 2048.0, 128.0)));
    let mut c = start(&server, client, load).await;
    let o = c.observe().await.expect("observes");
    let names: Vec<&str> = o.snapshot.variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, vec!["llm/llama-extra", "llm/llama-h100"], "the upstream sample has no profile yet");
    let joined = o.warnings.join("\n");
    assert!(
        joined.contains(
            "HorizontalPodAutoscaler llm/llama-h100-hpa ignored: Deployment llm/llama-h100 is already scaled"
        ),
        "{joined}"
    );
    assert!(!joined.contains("keda-hpa-other"), "{joined}");
    assert!(joined.contains("variant llm-d-sim/sample-deployment skipped: no latency profile"), "{joined}");
    let extra = o.scenario.variants.iter().find(|v| v.name == "llm/llama-extra").expect("the HPA's variant");
    assert_eq!((extra.min_replicas, extra.max_replicas), (1, Some(3)), "bounds from the HPA");

    // The skip is an Event on the ScaledObject (it has no status of Allot's to write).
    let shared = Shared::new();
    let mut stepper = Stepper::new(Stabilizer::default());
    server.take_requests();
    stepper.cycle(&mut c, &shared, true).await;
    let requests = server.take_requests();
    let warning = requests
        .iter()
        .filter_map(|r| r.body.as_ref())
        .find(|b| b["regarding"]["kind"] == "ScaledObject")
        .expect("a Warning Event on the ScaledObject");
    assert_eq!(
        (warning["type"].as_str(), warning["regarding"]["name"].as_str()),
        (Some("Warning"), Some("sample-deployment-scaler"))
    );
    assert!(
        !requests.iter().any(|r| r.path.contains("scaledobjects") && r.method == "PATCH"),
        "nothing written to the scaler"
    );
    assert!(!requests.iter().any(|r| r.path.contains("horizontalpodautoscalers") && r.method != "GET"));

    // Name a bundled profile on the ScaledObject: planned, and its metric is the one WVA's sample
    // queries (`variant_name` = the target's name).
    let mut so = server.get(&so_path).expect("stored");
    so["metadata"]["annotations"]["allot.llmd.ai/profile"] = json!("llama2-70b/h100-80gb/tp2");
    server.put(&so_path, so);
    settle(&server, &c).await;
    stepper.cycle(&mut c, &shared, true).await;
    let decision = shared.decision().expect("decision");
    let v =
        decision.variants.iter().find(|v| v.name == "llm-d-sim/sample-deployment").expect("the ScaledObject's variant");
    assert_eq!(
        (v.model.as_str(), v.accelerator.as_str()),
        ("default/default", "H100"),
        "accelerator from the target's nodeSelector"
    );
    let text = shared.metrics.encode();
    let line = text
        .lines()
        .find(|l| l.starts_with("allot_desired_replicas{") && l.contains("variant=\"sample-deployment\""))
        .unwrap_or_else(|| panic!("the metric KEDA scales on:\n{text}"));
    assert!(line.contains("namespace=\"llm-d-sim\"") && line.contains("model=\"default/default\""), "{line}");
    let requests = server.take_requests();
    let event = requests
        .iter()
        .filter_map(|r| r.body.as_ref())
        .find(|b| b["reason"] == "DesiredReplicasChanged" && b["regarding"]["kind"] == "ScaledObject")
        .expect("desired replicas recorded on the ScaledObject");
    assert_eq!(event["regarding"]["name"], "sample-deployment-scaler");
}

#[tokio::test]
async fn a_leader_worker_set_replica_is_its_whole_group_and_an_unschedulable_worker_makes_the_type_full() {
    let (client, server) = ApiServer::start();
    configure(&server, &[("H100", H100)], &["meta-llama/Llama-3.1-405B-Instruct"]);
    for n in ["h100-a", "h100-b", "h100-c"] {
        server.create(node(n, H100, 8));
    }
    // kubernetes-sigs/lws's vLLM example, unchanged but for its namespace (2 groups of 2 pods,
    // 8 GPUs per pod), with the status its controller writes.
    let mut lws = upstream("lws-vllm-gpu.yaml").remove(0);
    lws["metadata"]["namespace"] = json!(NS);
    lws["status"] = json!({"replicas": 2, "readyReplicas": 1,
                           "hpaPodSelector": "leaderworkerset.sigs.k8s.io/name=vllm,leaderworkerset.sigs.k8s.io/worker-index=0"});
    server.create(lws);
    let group_pod = |group: u32, worker: u32, state: &str, node: Option<&str>| {
        let name = if worker == 0 { format!("vllm-{group}") } else { format!("vllm-{group}-{worker}") };
        let mut p = pod(&name, "unused", state, node, 8);
        p["metadata"]["labels"] = json!({
            "leaderworkerset.sigs.k8s.io/name": "vllm",
            "leaderworkerset.sigs.k8s.io/group-index": group.to_string(),
            "leaderworkerset.sigs.k8s.io/worker-index": worker.to_string()});
        p
    };
    for p in [
        group_pod(0, 0, "ready", Some("h100-a")),
        group_pod(0, 1, "ready", Some("h100-b")),
        group_pod(1, 0, "ready", Some("h100-c")),
        group_pod(1, 1, "unschedulable", None),
    ] {
        server.create(p);
    }
    let mut variant = va("vllm-405b", "H100");
    variant["spec"] = json!({
        "modelID": "meta-llama/Llama-3.1-405B-Instruct",
        "scaleTargetRef": {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": "vllm"},
        "acceleratorType": "H100",
        "acceleratorCount": 8,
        "variantProfile": {"maxBatchSize": 64, "perfParms": {
            "decodeParms": {"alpha": "30.0", "beta": "0.5"}, "prefillParms": {"gamma": "5.0", "delta": "0.2"}}}
    });
    server.put(&va_path("vllm-405b"), variant);
    let load = FakeLoad::default();
    load.set(
        "meta-llama/Llama-3.1-405B-Instruct",
        Ok(metrics("meta-llama/Llama-3.1-405B-Instruct", 0.5, 1024.0, 128.0)),
    );
    let mut c = start(&server, client, load).await;
    let requests = server.take_requests();
    let o = c.observe().await.expect("observes");

    // The pods are watched by group, not through the leader-only selector of `scale`.
    let selectors: Vec<String> = requests
        .iter()
        .filter(|r| r.path == format!("/api/v1/namespaces/{NS}/pods") && r.is_watch())
        .filter_map(|r| r.param("labelSelector"))
        .collect();
    assert_eq!(selectors, vec!["leaderworkerset.sigs.k8s.io/name=vllm".to_string()]);
    let v = &o.snapshot.variants[0];
    assert_eq!(v.gpus_per_replica, 16, "leader + worker, 8 GPUs each, from the LWS templates");
    assert!(o.warnings.iter().any(|w| w.contains("request 16 accelerators per replica")), "{:?}", o.warnings);
    assert_eq!((o.pods[0].ready, o.pods[0].unschedulable), (1, 1), "group 1's worker has no node: not a replica");
    assert_eq!(v.current_replicas, 1);
    let ev = &o.pending.accelerators["H100"];
    assert_eq!(ev.unschedulable.len(), 1);
    assert_eq!((ev.unschedulable[0].pod.as_str(), ev.unschedulable[0].gpus), ("llm/vllm-1-1", 8));
    assert_eq!(ev.held_gpus, 24, "the pending group's leader holds its GPUs");
}

#[tokio::test]
async fn mig_slices_are_an_accelerator_type_of_their_own() {
    let (client, server) = ApiServer::start();
    let slice = format!("{A100}-MIG-1g.10gb");
    configure(&server, &[("A100", A100), ("A100-1g", &slice)], &["ibm/granite-3b"]);
    // An A100 node under the GPU operator's mixed MIG strategy: two GPUs sliced into seven 1g.10gb
    // each... here one GPU sliced, seven whole ones.
    let mut n = node("a100-mig", A100, 7);
    n["status"]["allocatable"]["nvidia.com/mig-1g.10gb"] = json!("7");
    n["metadata"]["labels"]["nvidia.com/mig.strategy"] = json!("mixed");
    n["metadata"]["labels"]["nvidia.com/mig-1g.10gb.count"] = json!("7");
    server.create(n);
    let mut target = deployment("granite-mig", 2, 0);
    let resources = json!({"limits": {"nvidia.com/mig-1g.10gb": "1"}, "requests": {"nvidia.com/mig-1g.10gb": "1"}});
    target["spec"]["template"]["spec"]["containers"][0]["resources"] = resources.clone();
    server.put(&deployment_path("granite-mig"), target);
    for i in 0..2 {
        let mut p = pod(&format!("granite-mig-{i}"), "granite-mig", "ready", Some("a100-mig"), 0);
        p["spec"]["containers"][0]["resources"] = resources.clone();
        server.create(p);
    }
    let mut variant = va("granite-mig", "A100");
    variant["metadata"]["labels"] = json!({});
    variant["spec"] = json!({
        "modelID": "ibm/granite-3b",
        "scaleTargetRef": {"kind": "Deployment", "name": "granite-mig"},
        "acceleratorType": "A100-1g",
        "variantProfile": {"maxBatchSize": 32, "perfParms": {
            "decodeParms": {"alpha": "12.0", "beta": "0.3"}, "prefillParms": {"gamma": "3.0", "delta": "0.05"}}}
    });
    server.put(&va_path("granite-mig"), variant);
    let load = FakeLoad::default();
    load.set("ibm/granite-3b", Ok(metrics("ibm/granite-3b", 2.0, 512.0, 128.0)));
    let mut c = start(&server, client, load).await;
    let o = c.observe().await.expect("observes");
    let gpus: Vec<(&str, u32)> = o.snapshot.accelerators.iter().map(|a| (a.name.as_str(), a.gpus)).collect();
    assert_eq!(gpus, vec![("A100", 7), ("A100-1g", 7)], "whole GPUs and slices counted apart");
    let v = &o.snapshot.variants[0];
    let accelerator = o.snapshot.accelerators[v.accelerator].name.as_str();
    assert_eq!((accelerator, v.gpus_per_replica, v.current_replicas), ("A100-1g", 1, 2));
    assert_eq!(o.pending.accelerators["A100-1g"].held_gpus, 2, "the slices Allot's pods hold");
}
