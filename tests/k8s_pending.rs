//! Pending pods with memory, through the real loop (`controller::run::Stepper`), the Kubernetes
//! adapter and the mocked API server playing the Deployment controller and the scheduler.
//!
//! The fleet: four 4-GPU H100 nodes, two holding a Llama-2-70B tp4 replica, two with 2 GPUs of
//! someone else's batch job (so no node has 4 free GPUs although 4 are free in total), and two
//! 8-GPU A100 nodes. 7 req/s wants a third H100 replica (2,048-token prompts, lognormal). Direct scaling is on, the default HPA
//! behavior applies, and each cycle is 30 s later than the last.
//!
//! Without memory the plan relapses: ask 3 → the pod is Unschedulable → the type is full → 2 →
//! the pending pod is deleted → the type looks free → 3 again, forever. With memory
//! the plan converges at 2 and stays, until contrary evidence (the batch job finishes) makes room.

mod k8s_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use allot::controller::run::Stepper;
use allot::controller::{Behavior, Cluster, Memory, Shared};
use allot::k8s::{KubeCluster, Scope};
use k8s_support::*;
use serde_json::json;

/// A Deployment whose pods ask for nodes of `product`.
fn deployment_on(name: &str, replicas: i32, gpus: u32, product: &str) -> serde_json::Value {
    let mut d = deployment(name, replicas, gpus);
    d["spec"]["template"]["spec"]["nodeSelector"] = json!({"nvidia.com/gpu.product": product});
    d
}

struct Fleet {
    server: ApiServer,
    cluster: KubeCluster<FakeLoad>,
    offset_s: Arc<AtomicI64>,
    stepper: Stepper,
    shared: Arc<Shared>,
}

impl Fleet {
    async fn start(full_type_memory: &str) -> Fleet {
        let (client, server) = ApiServer::start();
        install_config(&server, Some(&format!("direct_scaling: true\nfull_type_memory: {full_type_memory}\n")));
        for n in [
            node("h100-a", H100, 4),
            node("h100-b", H100, 4),
            node("h100-c", H100, 4),
            node("h100-d", H100, 4),
            node("a100-a", A100, 8),
            node("a100-b", A100, 8),
        ] {
            server.create(n);
        }
        server.put(&va_path("llama-h100"), va("llama-h100", "H100"));
        server.put(&va_path("llama-a100"), va("llama-a100", "A100"));
        server.put(&deployment_path("llama-h100"), deployment_on("llama-h100", 2, 4, H100));
        server.put(&deployment_path("llama-a100"), deployment_on("llama-a100", 0, 4, A100));
        server.put(&pod_path("batch-1"), pod("batch-1", "batch", "ready", Some("h100-c"), 2));
        server.put(&pod_path("batch-2"), pod("batch-2", "batch", "ready", Some("h100-d"), 2));
        // The two H100 replicas run (a kubelet started them long ago).
        server.reconcile();
        for p in server.list(&format!("/api/v1/namespaces/{NS}/pods")) {
            let name = p["metadata"]["name"].as_str().expect("name");
            if name.starts_with("llama-h100-") {
                assert!(p["spec"]["nodeName"].is_string(), "fits at the start: {p}");
                server.mark_ready(&pod_path(name));
            }
        }
        let load = FakeLoad::default();
        load.set(MODEL, Ok(metrics(MODEL, 7.0, 2048.0, 128.0)));
        let offset_s = Arc::new(AtomicI64::new(0));
        let clock = offset_s.clone();
        let mut cluster = KubeCluster::with_load(client, Scope::default(), load).with_clock(move || {
            now()
                .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(clock.load(Ordering::SeqCst)))
                .expect("in range")
        });
        let _ = cluster.observe().await;
        settle(&server, &cluster).await;
        Fleet {
            server,
            cluster,
            offset_s,
            // The profile as given (the fake Prometheus's latency histograms are not this
            // profile's: calibration would move the premises; it has its own tests).
            stepper: Stepper::new(Memory::reactive(Behavior::default())),
            shared: Shared::new(),
        }
    }

    /// One controller cycle, then the cluster reacts (ReplicaSets, scheduler) and 30 s pass.
    /// Returns the desired H100 replicas.
    async fn cycle(&mut self) -> u32 {
        self.stepper.cycle(&mut self.cluster, &self.shared, true).await;
        let decision = self.shared.decision().expect("a decision");
        let desired =
            decision.variants.iter().find(|v| v.name == "llm/llama-h100").map(|v| v.desired).expect("the H100 variant");
        self.server.reconcile();
        let t = self.offset_s.fetch_add(30, Ordering::SeqCst) + 30;
        let stamp = now().checked_add(k8s_openapi::jiff::SignedDuration::from_secs(t)).expect("in range");
        self.server.set_time(&stamp.to_string());
        settle(&self.server, &self.cluster).await;
        desired
    }

    /// Scale patches of the H100 Deployment so far.
    fn h100_scale_patches(&self, requests: &[Recorded]) -> Vec<i64> {
        requests
            .iter()
            .filter(|r| r.method == "PATCH" && r.path == scale_path("llama-h100"))
            .filter_map(|r| r.body.as_ref().and_then(|b| b["spec"]["replicas"].as_i64()))
            .collect()
    }
}

/// How often a sequence changes value.
fn changes(desired: &[u32]) -> usize {
    desired.windows(2).filter(|w| w[0] != w[1]).count()
}

#[tokio::test]
async fn the_plan_converges_and_stays_when_a_type_is_full_and_relapses_without_memory() {
    // With the memory (the default 10 min).
    let mut fleet = Fleet::start("10m").await;
    let mut desired = Vec::new();
    // Eight minutes of 30 s cycles: within the memory's 10 min.
    for _ in 0..16 {
        desired.push(fleet.cycle().await);
    }
    let requests = fleet.server.take_requests();
    eprintln!("with memory, desired H100 replicas per 30 s cycle: {desired:?}");
    assert_eq!(desired[0], 3, "test premise: H100 looks free and is cheapest at first");
    assert_eq!(*desired.last().expect("cycles"), 2);
    // The stabilizer does not hold 3: only 2 replicas run (the pending one is not capacity).
    assert_eq!(changes(&desired), 1, "one ask, one correction, then stable: {desired:?}");
    assert_eq!(fleet.h100_scale_patches(&requests), vec![3, 2]);
    let a100 = fleet
        .shared
        .decision()
        .expect("decision")
        .variants
        .iter()
        .find(|v| v.name == "llm/llama-a100")
        .map(|v| v.desired);
    assert!(a100.is_some_and(|n| n > 0), "the demand H100 cannot take moved to A100: {a100:?}");
    assert!(fleet.stepper.pending().is_full("H100"), "remembered");
    let events = requests.iter().filter(|r| r.method == "POST" && r.path.ends_with("/events")).count();
    assert!(events <= 4, "a handful of Events, not one per oscillation: {events}");

    // Contrary evidence: the batch job on h100-c finishes; a node has room for a replica.
    fleet.server.remove(&pod_path("batch-1"));
    settle(&fleet.server, &fleet.cluster).await;
    let mut after = Vec::new();
    for _ in 0..6 {
        after.push(fleet.cycle().await);
    }
    eprintln!("after the batch job left: {after:?}");
    assert!(!fleet.stepper.pending().is_full("H100"), "room appeared: the memory lets go");
    let latest = fleet.shared.latest();
    let h100_gpus = latest
        .observed
        .as_ref()
        .expect("observed")
        .snapshot
        .accelerators
        .iter()
        .find(|a| a.name == "H100")
        .map(|a| a.gpus);
    assert_eq!(h100_gpus, Some(14), "planned with what the nodes show again (16 minus the other job's 2)");
    // Whether the plan moves a replica back is the optimizer's call (transition costs); it does not oscillate.
    assert!(changes(&after) <= 1, "{after:?}");

    // Without memory (the regression): the same fleet oscillates.
    let mut fleet = Fleet::start("0s").await;
    let mut relapsing = Vec::new();
    for _ in 0..16 {
        relapsing.push(fleet.cycle().await);
    }
    let patches = fleet.h100_scale_patches(&fleet.server.take_requests());
    eprintln!("without memory: {relapsing:?}, scale patches {patches:?}");
    assert!(changes(&relapsing) >= 3, "the relapse this memory prevents: {relapsing:?}");
    assert!(patches.len() >= 3, "{patches:?}");
}

#[tokio::test]
async fn booting_replicas_are_capacity_and_are_held_while_the_type_is_full() {
    let mut fleet = Fleet::start("10m").await;
    // The third replica fits on h100-c once the batch job is gone, but its model never loads
    // (no kubelet here): it stays booting, holds its GPUs, and is not torn down or re-asked.
    fleet.server.remove(&pod_path("batch-1"));
    settle(&fleet.server, &fleet.cluster).await;
    let mut desired = Vec::new();
    for _ in 0..8 {
        desired.push(fleet.cycle().await);
    }
    let decision = fleet.shared.decision().expect("decision");
    let h100 = decision.variants.iter().find(|v| v.name == "llm/llama-h100").expect("H100");
    assert_eq!((h100.pods.ready, h100.pods.booting), (2, 1), "{h100:?}");
    assert_eq!(h100.current, 3, "booting replicas count as capacity arriving");
    assert!(desired.iter().all(|&n| n == 3), "{desired:?}");
}
