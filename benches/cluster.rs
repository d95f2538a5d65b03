//! One controller cycle against the mocked Kubernetes API server at production scale: 1,000
//! VariantAutoscalings (250 models of a generated fleet, 10 GPU types), 10,000 pods and 500
//! nodes. A cycle is observe (from the watch caches) + pending-pod memory + decide + act (a
//! server-side apply of every variant's status, Events when desired replicas change), through
//! the same `Stepper` the loop runs. Also reports the process's resident memory, before the
//! controller starts (the mock's objects) and after it has synced and cycled.
//! Numbers: docs/performance.md.

#[path = "../tests/k8s_support/mod.rs"]
#[allow(unused_imports)]
mod k8s_support;

use std::collections::BTreeMap;
use std::time::Duration;

use allot::controller::run::Stepper;
use allot::controller::{Cluster, Shared, Stabilizer};
use allot::k8s::{KubeCluster, Scope};
use allot::synthetic::{FleetSpec, fleet};
use criterion::{Criterion, criterion_group, criterion_main};
use k8s_support::*;
use serde_json::json;

const VARIANTS: usize = 1_000;
const PODS: usize = 10_000;
const NODES: usize = 500;

/// Resident set size of this process, MiB (Linux `/proc/self/statm`).
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

/// The generated fleet as cluster objects in the mock: ConfigMaps, nodes, one Deployment and one
/// VariantAutoscaling (simplified WVA shape) per variant, running pods, and other workloads' pods.
fn install(server: &ApiServer) -> FakeLoad {
    let scenario = fleet(FleetSpec { models: 250, variants: VARIANTS, accelerator_types: 10, headroom: 1.5, seed: 4 });
    let device = |acc: &str| format!("DEVICE-{acc}");
    let costs: serde_json::Map<String, serde_json::Value> = scenario
        .accelerators
        .iter()
        .map(|a| {
            let cents = a.cost_usd_per_gpu_hour * 100.0;
            (a.name.clone(), json!(format!("{{\"device\": \"{}\", \"cost\": \"{cents:.2}\"}}", device(&a.name))))
        })
        .collect();
    server.put(
        &configmap_path("accelerator-unit-costs"),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "accelerator-unit-costs", "namespace": CONFIG_NS}, "data": costs}),
    );
    let mut classes = serde_json::Map::new();
    for c in &scenario.service_classes {
        let mut text = format!("name: {}\npriority: {}\ndata:\n", c.name, c.priority);
        for t in &c.targets {
            text.push_str(&format!("  - model: {}\n", t.model));
            if let Some(itl) = t.itl {
                text.push_str(&format!("    slo-tpot: {}\n", itl.ms));
            }
            if let Some(ttft) = t.ttft {
                text.push_str(&format!(
                    "    slo-ttft: {}\n    slo-ttft-statistic: {}\n",
                    ttft.ms,
                    ttft.statistic.as_str()
                ));
            }
        }
        classes.insert(format!("{}.yaml", c.name), json!(text));
    }
    server.put(
        &configmap_path("service-classes-config"),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "service-classes-config", "namespace": CONFIG_NS}, "data": classes}),
    );
    server.put(
        &configmap_path("allot-config"),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "allot-config", "namespace": CONFIG_NS},
               "data": {"config.yaml": "optimizer:\n  time_limit_s: 10\n  mip_gap: 0.01\n"}}),
    );

    // 500 nodes, split between the types as their inventory is.
    let total: u32 = scenario.accelerators.iter().map(|a| a.gpus).sum();
    let per_node = total.div_ceil(NODES as u32).max(8);
    let mut node_names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut made = 0;
    for (i, a) in scenario.accelerators.iter().enumerate() {
        let count = if i + 1 == scenario.accelerators.len() {
            NODES - made
        } else {
            ((f64::from(a.gpus) / f64::from(total) * NODES as f64).round() as usize).max(1)
        };
        for n in 0..count {
            let name = format!("{}-{n:03}", a.name);
            server.create(node(&name, &device(&a.name), per_node));
            node_names.entry(a.name.clone()).or_default().push(name);
        }
        made += count;
    }

    // Variants: a Deployment and a VariantAutoscaling each; pods for the replicas that run.
    let profiles: BTreeMap<&str, &allot::scenario::profile::ProfileSpec> =
        scenario.profiles.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut pods = 0;
    let mut free: BTreeMap<String, u32> = BTreeMap::new();
    for v in &scenario.variants {
        let name = v.name.replace('_', "-");
        let p = profiles[v.profile.as_deref().expect("generated variants name their profile")];
        let mut d = deployment(&name, v.current_replicas as i32, v.gpus_per_replica);
        d["spec"]["template"]["spec"]["nodeSelector"] = json!({"nvidia.com/gpu.product": device(&v.accelerator)});
        server.put(&deployment_path(&name), d);
        server.put(
            &va_path(&name),
            json!({
                "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
                "metadata": {"name": name, "namespace": NS},
                "spec": {
                    "modelID": v.model,
                    "scaleTargetRef": {"kind": "Deployment", "name": name},
                    "acceleratorType": v.accelerator,
                    "acceleratorCount": v.gpus_per_replica,
                    "minReplicas": 0,
                    "variantProfile": {"maxBatchSize": v.max_batch, "perfParms": {
                        "decodeParms": {"alpha": format!("{:.4}", p.params.alpha_ms), "beta": format!("{:.4}", p.params.beta_ms)},
                        "prefillParms": {"gamma": format!("{:.4}", p.params.gamma_ms), "delta": format!("{:.4}", p.params.delta_ms)}}}
                }
            }),
        );
        for r in 0..v.current_replicas {
            // Bind to the first node of the type with room.
            let nodes = &node_names[&v.accelerator];
            let node = nodes.iter().find(|n| free.get(*n).copied().unwrap_or(per_node) >= v.gpus_per_replica).cloned();
            if let Some(n) = &node {
                *free.entry(n.clone()).or_insert(per_node) -= v.gpus_per_replica;
            }
            server.put(
                &pod_path(&format!("{name}-{r}")),
                pod(&format!("{name}-{r}"), &name, "ready", node.as_deref(), v.gpus_per_replica),
            );
            pods += 1;
        }
    }
    // Everything else the cluster runs: CPU pods of other workloads, bound to the GPU nodes.
    let all_nodes: Vec<&String> = node_names.values().flatten().collect();
    for i in pods..PODS {
        let mut p = pod(&format!("web-{i}"), "web", "ready", Some(all_nodes[i % all_nodes.len()]), 0);
        p["metadata"]["namespace"] = json!(format!("team-{}", i % 40));
        p["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "500m", "memory": "1Gi"}});
        server.create(p);
    }

    let load = FakeLoad::default();
    let mut by_model: BTreeMap<&str, (f64, f64, f64)> = BTreeMap::new();
    for l in &scenario.load {
        let mean = |t: &allot::scenario::format::TokenCountSpec| t.mean_hint().unwrap_or(1.0);
        let e = by_model.entry(&l.model).or_insert((0.0, mean(&l.input_tokens), mean(&l.output_tokens)));
        e.0 += l.arrival_rate_rps;
    }
    for (model, (rps, input, output)) in by_model {
        load.set(model, Ok(metrics(model, rps, input, output)));
    }
    load
}

fn cycle(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (server, mut cluster, shared, mut stepper) = runtime.block_on(async {
        let (client, server) = ApiServer::start();
        server.set_history_limit(20_000);
        let load = install(&server);
        let before = rss_mib();
        let started = std::time::Instant::now();
        let mut cluster = KubeCluster::with_load(client, Scope::default(), load).with_clock(now);
        let _ = cluster.observe().await;
        settle(&server, &cluster).await;
        let shared = Shared::new();
        let mut stepper = Stepper::new(Stabilizer::default());
        stepper.cycle(&mut cluster, &shared, true).await;
        let decision = shared.decision().expect("the first cycle plans");
        eprintln!(
            "cluster: {} variants planned, {} pods, {} nodes; synced and first cycle in {:.1} s; \
             RSS {before:.0} MiB with the mock's objects, {:.0} MiB with the controller synced",
            decision.variants.len(),
            server.list("/api/v1/pods").len(),
            server.list("/api/v1/nodes").len(),
            started.elapsed().as_secs_f64(),
            rss_mib(),
        );
        (server, cluster, shared, stepper)
    });
    let mut group = c.benchmark_group("cluster_cycle");
    group.sample_size(10).measurement_time(Duration::from_secs(30)).warm_up_time(Duration::from_secs(1));
    group.bench_function("observe_decide_act_1000_variants_10000_pods_500_nodes", |b| {
        b.iter(|| runtime.block_on(stepper.cycle(&mut cluster, &shared, true)))
    });
    group.finish();
    let requests = server.take_requests();
    eprintln!(
        "after the benchmark: RSS {:.0} MiB; {} requests to the API server in the measured cycles ({} status patches)",
        rss_mib(),
        requests.len(),
        requests.iter().filter(|r| r.method == "PATCH").count()
    );
}

criterion_group!(benches, cycle);
criterion_main!(benches);
