//! The Kubernetes adapter against the mocked API server: watch-backed observation (a cycle reads
//! caches, not the API), status by server-side apply, direct scaling, pending pods with memory,
//! stale metrics, bad configuration, bad objects, and leadership.

mod k8s_support;

use allot::controller::{Cluster, ClusterError, Decision, Memory, Observed, decide};
use allot::k8s::{KubeCluster, Scope};
use allot::prometheus::MetricsProblem;
use k8s_support::*;
use serde_json::json;
use tokio::sync::watch;

fn cluster(client: kube::Client, load: FakeLoad) -> KubeCluster<FakeLoad> {
    KubeCluster::with_load(client, Scope { identity: "allot-0".into(), ..Scope::default() }, load).with_clock(now)
}

fn loaded(rps: f64) -> FakeLoad {
    let load = FakeLoad::default();
    load.set(MODEL, Ok(metrics(MODEL, rps, 2048.0, 128.0)));
    load
}

fn variant<'a>(d: &'a Decision, name: &str) -> &'a allot::controller::VariantDecision {
    d.variants.iter().find(|v| v.name == name).unwrap_or_else(|| panic!("no variant {name} in {d:#?}"))
}

/// The loop memory of these tests: the configured behavior, planning on the profile as given (the
/// fake Prometheus's latency histograms are not this profile's, so calibration would move the
/// premises; calibration has its own tests).
fn stabilizer(c: &KubeCluster<FakeLoad>) -> Memory {
    Memory::reactive(c.config().expect("observed once").allot.behavior.clone())
}

/// Observe once the caches have caught up with the server.
async fn observe(server: &ApiServer, c: &mut KubeCluster<FakeLoad>) -> Observed {
    // The first observation tracks the targets; settle, observe again to see them.
    let _ = c.observe().await;
    settle(server, c).await;
    c.observe().await.expect("observe succeeds")
}

fn condition(status: &serde_json::Value, kind: &str) -> serde_json::Value {
    status["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == kind).cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_cycle_reads_watch_caches_and_the_watches_use_selectors() {
    let (client, server) = ApiServer::start();
    install_config(&server, None);
    install_fleet(&server, 0);
    let mut c = cluster(client, loaded(2.0));
    let o = observe(&server, &mut c).await;

    let requests = server.take_requests();
    let watch = |path: &str| {
        requests.iter().find(|r| r.path == path && r.is_watch()).unwrap_or_else(|| panic!("a watch of {path}"))
    };
    let pods = watch("/api/v1/pods");
    assert_eq!(
        pods.param("fieldSelector").as_deref(),
        Some("spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"),
        "bound pods only, for the inventory"
    );
    let targets = watch(&format!("/apis/apps/v1/namespaces/{NS}/deployments"));
    assert!(targets.param("fieldSelector").is_some_and(|f| f.starts_with("metadata.name=llama-")), "{targets:?}");
    let managed: Vec<String> = requests
        .iter()
        .filter(|r| r.path == format!("/api/v1/namespaces/{NS}/pods") && r.is_watch())
        .filter_map(|r| r.param("labelSelector"))
        .collect();
    assert_eq!(managed.len(), 2, "one label-selected pod watch per target: {managed:?}");
    assert!(managed.contains(&"app=llama-h100".to_string()));
    for path in [
        "/apis/llmd.ai/v1alpha1/variantautoscalings",
        "/api/v1/nodes",
        &format!("/api/v1/namespaces/{CONFIG_NS}/configmaps"),
        "/apis/autoscaling/v2/horizontalpodautoscalers",
        "/apis/keda.sh/v1alpha1/scaledobjects",
    ] {
        watch(path);
    }
    assert_eq!(requests.iter().filter(|r| r.path.ends_with("/scale")).count(), 2, "scale read once per target");

    let gpus: Vec<(&str, u32)> = o.snapshot.accelerators.iter().map(|a| (a.name.as_str(), a.gpus)).collect();
    assert_eq!(gpus, vec![("A100", 16), ("H100", 12)], "H100: 16 allocatable minus the 4 the batch job holds");
    let names: Vec<&str> = o.snapshot.variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, vec!["llm/llama-a100", "llm/llama-h100"]);
    assert_eq!(o.snapshot.variants[1].current_replicas, 2);
    assert_eq!((o.pods[0].ready, o.pods[1].ready, o.pods[1].unschedulable), (0, 2, 0));
    assert!(o.stale_models.is_empty(), "{:?}", o.stale_models);
    assert_eq!(o.metric_age_s.get(MODEL), Some(&10.0));
    assert_eq!(o.at_s, now().as_second() as f64);

    // Steady state: another cycle asks the API server nothing.
    c.observe().await.expect("observes");
    let again = server.take_requests();
    assert!(
        again.is_empty(),
        "a cycle reads caches, not the API: {:?}",
        again.iter().map(|r| r.line()).collect::<Vec<_>>()
    );

    // A change reaches the cache through the watch: a third H100 pod becomes ready.
    server.put(&pod_path("llama-h100-3"), pod("llama-h100-3", "llama-h100", "ready", Some("h100-c"), 2));
    settle(&server, &c).await;
    let o = c.observe().await.expect("observes");
    assert_eq!(o.snapshot.variants[1].current_replicas, 3);
}

#[tokio::test]
async fn apply_server_side_applies_status_and_records_an_event_without_scaling() {
    let (client, server) = ApiServer::start();
    install_config(&server, None);
    install_fleet(&server, 0);
    // Another controller owns a field of the status: Allot's apply must leave it alone.
    let mut h100 = server.get(&va_path("llama-h100")).expect("stored");
    h100["status"] = json!({"conditions": [{"type": "Audited", "status": "True", "reason": "Ok", "message": "",
                                           "lastTransitionTime": NOW}]});
    server.put(&va_path("llama-h100"), h100);
    let mut c = cluster(client.clone(), loaded(2.0));
    let o = observe(&server, &mut c).await;
    let d = decide(&o, None, &mut stabilizer(&c), 1);
    server.take_requests();
    let applied = c.apply(&d).await;
    assert!(applied.errors.is_empty(), "{:?}", applied.errors);
    assert!(applied.scaled.is_empty(), "direct scaling is off by default");

    let requests = server.take_requests();
    assert!(requests.iter().all(|r| !r.path.ends_with("/scale")), "no scale request when off");
    for v in &d.variants {
        let name = v.name.split_once('/').expect("namespace/name").1;
        let patch = requests
            .iter()
            .find(|r| r.method == "PATCH" && r.path == format!("{}/status", va_path(name)))
            .unwrap_or_else(|| panic!("status of {name} written"));
        assert!(patch.query.contains("fieldManager=allot") && patch.query.contains("force=true"), "{}", patch.query);
        assert_eq!(patch.content_type.as_deref(), Some("application/apply-patch+yaml"));
        let body = patch.body.as_ref().expect("body");
        assert_eq!(
            (body["apiVersion"].as_str(), body["kind"].as_str()),
            (Some("llmd.ai/v1alpha1"), Some("VariantAutoscaling"))
        );
        assert!(body.get("spec").is_none(), "status only: Allot must not own spec fields");
        let status = &body["status"];
        assert_eq!(status["desiredOptimizedAlloc"]["numReplicas"], json!(v.desired));
        assert_eq!(status["desiredOptimizedAlloc"]["lastRunTime"], json!(NOW));
        assert_eq!(status["currentAlloc"]["numReplicas"], json!(v.current));
        assert_eq!(status["currentAlloc"]["load"]["arrivalRate"], json!("120.00"), "2 req/s in WVA's req/min");
        assert_eq!(status["actuation"]["applied"], json!(true));
        assert_eq!(condition(status, "Ready")["reason"], "Planned");
        assert_eq!(condition(status, "MetricsAvailable")["status"], "True");
        assert_eq!(condition(status, "OptimizationReady")["reason"], "OptimizationSucceeded");
        assert_eq!(condition(status, "OptimizationReady")["observedGeneration"], 3);
        // Nothing was published before: every variant gets an Event.
        let event = requests
            .iter()
            .find(|r| r.method == "POST" && r.body.as_ref().is_some_and(|b| b["regarding"]["name"] == name))
            .unwrap_or_else(|| panic!("event for {name}"));
        assert_eq!(event.path, format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"));
        let e = event.body.as_ref().expect("body");
        assert_eq!(
            (e["reason"].as_str(), e["reportingController"].as_str(), e["reportingInstance"].as_str()),
            (Some("DesiredReplicasChanged"), Some("llmd.ai/allot"), Some("allot-0"))
        );
        assert!(e["note"].as_str().expect("note").contains(&format!("none → {}", v.desired)));
    }
    // The merge kept the other manager's condition; Allot owns only what it applied.
    let stored = server.get(&va_path("llama-h100")).expect("stored")["status"].clone();
    assert_eq!(condition(&stored, "Audited")["status"], "True", "{stored}");
    assert_eq!(condition(&stored, "Ready")["status"], "True");

    // Same desired replicas next cycle: status again, but no new Event.
    settle(&server, &c).await;
    let o = c.observe().await.expect("observes");
    let d2 = decide(&o, Some(&d), &mut stabilizer(&c), 2);
    assert_eq!(
        d2.variants.iter().map(|v| v.desired).collect::<Vec<_>>(),
        d.variants.iter().map(|v| v.desired).collect::<Vec<_>>()
    );
    server.take_requests();
    c.apply(&d2).await;
    let requests = server.take_requests();
    assert_eq!(requests.iter().filter(|r| r.method == "PATCH").count(), 2);
    assert_eq!(requests.iter().filter(|r| r.method == "POST").count(), 0, "no change, no Event");
}

#[tokio::test]
async fn direct_scaling_patches_the_scale_subresource_with_a_field_manager() {
    let (client, server) = ApiServer::start();
    install_config(&server, Some("direct_scaling: true\n"));
    install_fleet(&server, 0);
    let mut c = cluster(client, loaded(6.0));
    let o = observe(&server, &mut c).await;
    let d = decide(&o, None, &mut stabilizer(&c), 1);
    server.take_requests();
    let applied = c.apply(&d).await;
    assert!(applied.errors.is_empty(), "{:?}", applied.errors);
    let requests = server.take_requests();
    let scaled: Vec<(String, serde_json::Value)> = requests
        .iter()
        .filter(|r| r.path.ends_with("/scale") && r.method == "PATCH")
        .map(|r| (format!("{} {}", r.method, r.path), r.body.clone().expect("body")))
        .collect();
    let mut expected = Vec::new();
    let mut expected_names = Vec::new();
    for (v, target) in [(variant(&d, "llm/llama-a100"), 0), (variant(&d, "llm/llama-h100"), 2)] {
        if v.desired != target {
            let name = v.name.split_once('/').expect("ns/name").1;
            expected.push((format!("PATCH {}", scale_path(name)), json!({"spec": {"replicas": v.desired}})));
            expected_names.push(v.name.clone());
        }
    }
    assert!(!expected.is_empty(), "test premise: 6 req/s needs more than the 2 running replicas\n{d:#?}");
    assert_eq!(scaled, expected);
    assert_eq!(applied.scaled, expected_names);
    let patch = requests.iter().find(|r| r.path.ends_with("/scale") && r.method == "PATCH").expect("scale patch");
    assert_eq!(patch.content_type.as_deref(), Some("application/merge-patch+json"));
    assert_eq!(patch.param("fieldManager").as_deref(), Some("allot"), "scale patches name their field manager");
    assert_eq!(
        server.get(&deployment_path("llama-h100")).expect("deployment")["spec"]["replicas"],
        json!(variant(&d, "llm/llama-h100").desired)
    );
}

#[tokio::test]
async fn unschedulable_pods_move_demand_to_another_variant_and_stop_the_ask() {
    let (client, server) = ApiServer::start();
    install_config(&server, None);
    install_fleet(&server, 0);
    let mut c = cluster(client, loaded(6.0));
    let mut stab = Memory::reactive(allot::controller::Behavior::default());

    // Cycle 1: the node count offers 12 H100 GPUs and the plan asks for more H100 replicas.
    let o1 = observe(&server, &mut c).await;
    let d1 = decide(&o1, None, &mut stab, 1);
    let asked = variant(&d1, "llm/llama-h100").desired;
    assert!(asked > 2, "test premise: H100 is preferred while it looks free\n{d1:#?}");
    c.apply(&d1).await;

    // The new H100 pods do not fit (no node has 4 free GPUs): they stay Unschedulable.
    install_fleet(&server, (asked - 2) as usize);
    settle(&server, &c).await;
    let o2 = c.observe().await.expect("observes");
    let h100 = o2.snapshot.variants.iter().position(|v| v.name == "llm/llama-h100").expect("variant");
    assert_eq!(o2.pods[h100].unschedulable, asked - 2);
    assert_eq!(o2.snapshot.variants[h100].current_replicas, 2, "unschedulable pods are not capacity");
    let ev = &o2.pending.accelerators["H100"];
    assert_eq!((ev.unschedulable.len() as u32, ev.held_gpus), (asked - 2, 8), "evidence with GPU requests");
    assert!(ev.unschedulable.iter().all(|p| p.gpus == 4));

    // The loop applies its memory before deciding.
    let mut memory = allot::observe::pending::PendingMemory::default();
    memory.update(&o2.pending, o2.at_s);
    let mut o2 = o2;
    let notes = memory.shrink(&mut o2.scenario, &o2.pending);
    o2.snapshot = allot::scenario::validate(&o2.scenario).expect("valid");
    assert!(notes.iter().any(|w| w.contains("Unschedulable")), "{notes:?}");
    let gpus = o2.snapshot.accelerators.iter().find(|a| a.name == "H100").expect("H100").gpus;
    assert_eq!(gpus, 8, "H100 shrinks to the GPUs Allot's pods hold");
    let d2 = decide(&o2, Some(&d1), &mut stab, 2);
    assert_eq!(variant(&d2, "llm/llama-h100").desired, 2, "stops asking for H100 GPUs that do not exist\n{d2:#?}");
    assert!(
        variant(&d2, "llm/llama-a100").desired > variant(&d1, "llm/llama-a100").desired,
        "the demand moves to A100\n{d1:#?}\n{d2:#?}"
    );
    let served = d2.plan.models.iter().map(|m| m.served_fraction).fold(1.0, f64::min);
    assert!(served > 0.999, "all demand is still served\n{:#?}", d2.plan);
}

#[tokio::test]
async fn stale_metrics_hold_the_model_and_say_so_in_conditions() {
    let (client, server) = ApiServer::start();
    install_config(&server, None);
    install_fleet(&server, 0);
    let load = loaded(3.0);
    let mut c = cluster(client, load.clone());
    let o1 = observe(&server, &mut c).await;
    let mut stab = stabilizer(&c);
    let d1 = decide(&o1, None, &mut stab, 1);
    c.apply(&d1).await;

    load.set(MODEL, Ok(allot::prometheus::ModelMetrics { age_s: 900.0, ..metrics(MODEL, 0.1, 2048.0, 128.0) }));
    settle(&server, &c).await;
    let o2 = c.observe().await.expect("observes");
    let reason = o2.stale_models.get(MODEL).expect("model is stale");
    assert!(reason.contains("900 s old (limit 120 s)"), "{reason}");
    let d2 = decide(&o2, Some(&d1), &mut stab, 2);
    assert!(d2.held_models.contains_key(MODEL));
    for v in &d2.variants {
        let before = variant(&d1, &v.name).desired;
        assert!(v.desired >= v.current.max(before), "held, never scaled down on stale data: {v:?}");
    }
    server.take_requests();
    c.apply(&d2).await;
    let requests = server.take_requests();
    let patch = requests.iter().find(|r| r.path == format!("{}/status", va_path("llama-h100"))).expect("status");
    let status = patch.body.as_ref().expect("body")["status"].clone();
    assert_eq!(
        (
            condition(&status, "MetricsAvailable")["status"].as_str(),
            condition(&status, "MetricsAvailable")["reason"].as_str()
        ),
        (Some("False"), Some("MetricsStale"))
    );
    assert_eq!(condition(&status, "OptimizationReady")["reason"], "MetricsUnavailable");
    assert!(condition(&status, "OptimizationReady")["message"].as_str().expect("message").starts_with("held at"));
    // The condition changed status: its transition time is now, and it carries the generation.
    assert_eq!(condition(&status, "MetricsAvailable")["lastTransitionTime"], json!(NOW));
    assert_eq!(condition(&status, "MetricsAvailable")["observedGeneration"], 3);
}

#[tokio::test]
async fn missing_metrics_are_held_too() {
    let (client, server) = ApiServer::start();
    install_config(&server, None);
    install_fleet(&server, 0);
    let load = FakeLoad::default();
    load.set(MODEL, Err(MetricsProblem::Unavailable("connection refused".into())));
    let mut c = cluster(client, load);
    let o = observe(&server, &mut c).await;
    assert_eq!(o.stale_models.get(MODEL).map(String::as_str), Some("prometheus unavailable: connection refused"));
    let d = decide(&o, None, &mut stabilizer(&c), 1);
    assert_eq!(variant(&d, "llm/llama-h100").desired, 2, "held at what runs");
}

#[tokio::test]
async fn bad_configuration_keeps_the_last_good_one_and_names_the_key() {
    let (client, server) = ApiServer::start();
    install_config(&server, Some("cycle_interval: 45s\n"));
    install_fleet(&server, 0);
    let mut c = cluster(client, loaded(1.0));
    observe(&server, &mut c).await;
    assert_eq!(c.config().expect("config").allot.cycle_interval.as_secs(), 45);

    install_config(&server, Some("optimizer:\n  mip_gapp: 0.1\n"));
    settle(&server, &c).await;
    let o = c.observe().await.expect("observes with the last good configuration");
    let warning = o.warnings.iter().find(|w| w.contains("allot-config")).expect("a warning names the ConfigMap");
    assert!(warning.contains("config.yaml") && warning.contains("mip_gapp"), "{warning}");
    assert!(warning.contains("last good configuration"), "{warning}");
    assert_eq!(c.config().expect("config").allot.cycle_interval.as_secs(), 45, "the last good one is in force");
}

#[tokio::test]
async fn without_configuration_it_runs_does_not_act_says_why_and_picks_it_up_when_it_appears() {
    let (client, server) = ApiServer::start();
    install_fleet(&server, 0);
    let mut c = cluster(client, loaded(2.0));
    settle(&server, &c).await;
    server.take_requests();
    let err = c.observe().await.expect_err("no ConfigMaps yet");
    match &err {
        ClusterError::NotConfigured(why) => assert!(why.contains("accelerator-unit-costs not found"), "{why}"),
        other => panic!("expected NotConfigured, got {other:?}"),
    }
    assert_eq!((err.metric_label(), err.outcome()), ("not_configured", "not_configured"));
    // The leader says so on every VariantAutoscaling, once.
    let written: Vec<_> = server.take_requests().into_iter().filter(|r| r.method == "PATCH").collect();
    assert_eq!(written.len(), 2, "{written:?}");
    let stored = server.get(&va_path("llama-h100")).expect("stored")["status"].clone();
    assert_eq!(condition(&stored, "Ready")["reason"], "NotConfigured");
    assert!(condition(&stored, "Ready")["message"].as_str().expect("message").contains("not found"));
    let _ = c.observe().await;
    assert!(server.take_requests().is_empty(), "the same reason is not written again");

    // A bad service-class ConfigMap: still not configured, the reason names the field.
    install_config(&server, None);
    let mut bad = server.get(&configmap_path("service-classes-config")).expect("stored");
    bad["data"]["premium.yaml"] = json!("name: Premium\npriority: high\ndata: []\n");
    server.put(&configmap_path("service-classes-config"), bad);
    settle(&server, &c).await;
    match c.observe().await {
        Err(ClusterError::NotConfigured(why)) => assert!(why.contains("priority"), "{why}"),
        other => panic!("expected NotConfigured, got {other:?}"),
    }

    // The configuration appears: the next cycle plans, no restart.
    install_config(&server, None);
    settle(&server, &c).await;
    let o = c.observe().await.expect("configured now");
    assert_eq!(o.snapshot.variants.len(), 2);
    let d = decide(&o, None, &mut stabilizer(&c), 1);
    c.apply(&d).await;
    let stored = server.get(&va_path("llama-h100")).expect("stored")["status"].clone();
    assert_eq!(condition(&stored, "Ready")["status"], "True");
}

#[tokio::test]
async fn a_bad_variant_is_skipped_with_a_condition_and_an_event_and_the_fleet_still_planned() {
    let (client, server) = ApiServer::start();
    install_config(&server, None);
    install_fleet(&server, 0);
    // Deserializes, but its perfParms are not numbers (the CRD would refuse it; this server does
    // not validate).
    let mut bad_parm = va("llama-bad", "H100");
    bad_parm["spec"]["modelProfile"]["accelerators"][0]["perfParms"]["decodeParms"]["alpha"] = json!("fast");
    server.put(&va_path("llama-bad"), bad_parm);
    server.put(&deployment_path("llama-bad"), deployment("llama-bad", 1, 4));
    // Does not deserialize at all: one bad object must not fail the others.
    let mut broken = va("llama-broken", "H100");
    broken["spec"]["modelProfile"]["accelerators"][0]["maxBatchSize"] = json!("many");
    server.put(&va_path("llama-broken"), broken);
    // Its target does not exist.
    server.put(&va_path("llama-orphan"), va("llama-orphan", "A100"));
    let mut c = cluster(client, loaded(1.0));
    let o = observe(&server, &mut c).await;
    let names: Vec<&str> = o.snapshot.variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, vec!["llm/llama-a100", "llm/llama-h100"]);
    let joined = o.warnings.join("\n");
    assert!(
        joined.contains("llm/llama-bad skipped: spec.modelProfile.accelerators[0].perfParms.decodeParms.alpha"),
        "{joined}"
    );
    assert!(joined.contains("llama-broken left out: spec.modelProfile.accelerators[0].maxBatchSize"), "{joined}");
    assert!(joined.contains("llama-orphan left out: scale target Deployment llm/llama-orphan: not found"), "{joined}");

    let d = decide(&o, None, &mut stabilizer(&c), 1);
    server.take_requests();
    let applied = c.apply(&d).await;
    assert!(applied.errors.is_empty(), "{:?}", applied.errors);
    let requests = server.take_requests();
    for (name, reason, field) in [
        ("llama-bad", "VariantSkipped", "perfParms.decodeParms.alpha"),
        ("llama-broken", "InvalidSpec", "spec.modelProfile.accelerators[0].maxBatchSize"),
        ("llama-orphan", "TargetUnusable", "not found"),
    ] {
        let stored = server.get(&va_path(name)).expect("stored")["status"].clone();
        let ready = condition(&stored, "Ready");
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("False"), Some(reason)),
            "{name}: {stored}"
        );
        assert!(ready["message"].as_str().expect("message").contains(field), "{name}: {ready}");
        let event = requests
            .iter()
            .find(|r| r.method == "POST" && r.body.as_ref().is_some_and(|b| b["regarding"]["name"] == name))
            .unwrap_or_else(|| panic!("a Warning Event for {name}"));
        let e = event.body.as_ref().expect("body");
        assert_eq!((e["type"].as_str(), e["reason"].as_str()), (Some("Warning"), Some(reason)));
    }
    // Once said, not repeated every cycle.
    settle(&server, &c).await;
    let o = c.observe().await.expect("observes");
    let d = decide(&o, Some(&d), &mut stabilizer(&c), 2);
    server.take_requests();
    c.apply(&d).await;
    let warnings = server
        .take_requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.body.as_ref().is_some_and(|b| b["type"] == "Warning"))
        .count();
    assert_eq!(warnings, 0);
}

#[tokio::test]
async fn apply_errors_are_per_variant_and_followers_do_not_apply() {
    let (client, server) = ApiServer::start();
    install_config(&server, None);
    install_fleet(&server, 0);
    let (tx, rx) = watch::channel(false);
    let mut c = cluster(client, loaded(2.0)).with_leadership(rx);
    let o = observe(&server, &mut c).await;
    let d = decide(&o, None, &mut stabilizer(&c), 1);
    server.take_requests();
    let applied = c.apply(&d).await;
    assert_eq!(applied, allot::controller::Applied::default());
    assert!(server.take_requests().is_empty(), "a follower writes nothing");

    tx.send(true).expect("receiver alive");
    server.fail("PATCH", &format!("{}/status", va_path("llama-a100")), 403);
    let applied = c.apply(&d).await;
    assert_eq!(applied.errors.len(), 1, "{:?}", applied.errors);
    assert_eq!(applied.errors[0].0, "llm/llama-a100");
    assert_eq!(applied.errors[0].1.metric_label(), "status");
    assert!(applied.errors[0].1.message.contains("writing status: injected failure (403)"), "{}", applied.errors[0].1);
    let written = server.take_requests();
    assert!(
        written.iter().any(|r| r.path == format!("{}/status", va_path("llama-h100"))),
        "the other variant still written"
    );
}

#[tokio::test]
async fn conditions_keep_their_transition_time_while_their_status_holds() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    let (client, server) = ApiServer::start();
    install_config(&server, None);
    install_fleet(&server, 0);
    let offset_s = Arc::new(AtomicI64::new(0));
    let clock = offset_s.clone();
    let mut c = KubeCluster::with_load(client, Scope::default(), loaded(2.0)).with_clock(move || {
        now().checked_add(k8s_openapi::jiff::SignedDuration::from_secs(clock.load(Ordering::SeqCst))).expect("in range")
    });
    let o = observe(&server, &mut c).await;
    let mut stab = stabilizer(&c);
    let d1 = decide(&o, None, &mut stab, 1);
    c.apply(&d1).await;

    offset_s.store(30, Ordering::SeqCst);
    settle(&server, &c).await;
    let o = c.observe().await.expect("observes");
    assert_eq!(o.at_s - now().as_second() as f64, 30.0);
    let d2 = decide(&o, Some(&d1), &mut stab, 2);
    c.apply(&d2).await;
    let status = server.get(&va_path("llama-h100")).expect("stored")["status"].clone();
    assert_eq!(status["desiredOptimizedAlloc"]["lastRunTime"], json!("2026-11-23T10:00:30Z"));
    for c in status["conditions"].as_array().expect("conditions") {
        if ["Ready", "MetricsAvailable", "OptimizationReady"].contains(&c["type"].as_str().unwrap_or("")) {
            assert_eq!(c["status"], "True");
        }
        assert_eq!(c["lastTransitionTime"], json!(NOW), "unchanged status keeps its transition time: {c}");
    }
    // Calibration is off in this memory: the profile is planned as given, and says so.
    assert_eq!(condition(&status, "ModelCalibrated")["reason"], "NotCalibrated");
    assert_eq!(condition(&status, "ModelDrift")["status"], "Unknown");
}

#[tokio::test]
async fn a_restarted_controller_takes_up_the_calibration_its_predecessor_wrote_into_status() {
    let (client, server) = ApiServer::start();
    install_config(&server, None);
    install_fleet(&server, 0);
    // The fake servers report TTFT 250 ms and ITL 30 ms: not what the profile predicts, so the
    // calibrating loop learns a correction.
    let mut first = cluster(client.clone(), loaded(2.0));
    let o = observe(&server, &mut first).await;
    let mut memory = Memory::new(first.config().expect("observed").allot.behavior.clone());
    let d1 = decide(&o, None, &mut memory, 1);
    first.apply(&d1).await;
    let learned = variant(&d1, "llm/llama-h100").calibration.clone().expect("calibration evidence");
    assert!(learned.prefill_factor != 1.0 || learned.decode_factor != 1.0, "{learned:?}");
    let status = server.get(&va_path("llama-h100")).expect("stored")["status"].clone();
    let written = &status["calibration"];
    assert_eq!(written["prefillFactor"], json!(learned.prefill_factor));
    assert_eq!(written["decodeFactor"], json!(learned.decode_factor));
    assert_eq!(written["profileDigest"], json!(learned.profile_digest));
    assert_eq!(condition(&status, "ModelCalibrated")["reason"], "Calibrating", "{status:#}");
    // What the same loop decides next cycle...
    settle(&server, &first).await;
    let o = first.observe().await.expect("observes");
    let continued = decide(&o, Some(&d1), &mut memory, 2);
    let continued = variant(&continued, "llm/llama-h100").calibration.clone().expect("calibration");

    // ...a new controller with a fresh memory decides too: it starts from the status. (A new
    // API server holding the same objects: the mock counts what it sent to every watcher.)
    let restart = |status: serde_json::Value| {
        let (client, server) = ApiServer::start();
        install_config(&server, None);
        install_fleet(&server, 0);
        let mut h100 = server.get(&va_path("llama-h100")).expect("stored");
        h100["status"] = status;
        server.put(&va_path("llama-h100"), h100);
        (client, server)
    };
    let stored = server.get(&va_path("llama-h100")).expect("stored")["status"].clone();
    let (client, server) = restart(stored.clone());
    let mut second = cluster(client, loaded(2.0));
    let o = observe(&server, &mut second).await;
    let fresh = Memory::new(second.config().expect("observed").allot.behavior.clone());
    let restarted = decide(&o, None, &mut { fresh }, 1);
    let restarted = variant(&restarted, "llm/llama-h100").calibration.clone().expect("calibration");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs();
    assert!(close(restarted.prefill_factor, continued.prefill_factor), "{restarted:?} vs {continued:?}");
    assert!(close(restarted.decode_factor, continued.decode_factor), "{restarted:?} vs {continued:?}");
    assert!(close(restarted.confidence, continued.confidence), "{restarted:?} vs {continued:?}");

    // A status someone edited into nonsense is ignored, not planned on.
    let mut edited = stored;
    edited["calibration"]["prefillFactor"] = json!(-3.0);
    let (client, server) = restart(edited);
    let mut third = cluster(client, loaded(2.0));
    let o = observe(&server, &mut third).await;
    let fresh = Memory::new(third.config().expect("observed").allot.behavior.clone());
    let ignored = decide(&o, None, &mut { fresh }, 1);
    let ignored = variant(&ignored, "llm/llama-h100").calibration.clone().expect("calibration");
    assert!(close(ignored.prefill_factor, learned.prefill_factor), "{ignored:?} vs {learned:?}");
}

/// `(apiGroup, resource[/subresource], verb, namespace)` of a request, as RBAC sees it.
fn rbac_request(r: &Recorded) -> (String, String, String, Option<String>) {
    let parts: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _, rest @ ..] => (String::new(), rest.to_vec()),
        ["apis", g, _, rest @ ..] => (g.to_string(), rest.to_vec()),
        _ => panic!("unexpected path {}", r.path),
    };
    let (namespace, rest) = match rest.as_slice() {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest.to_vec()),
        rest => (None, rest.to_vec()),
    };
    let resource = match rest.as_slice() {
        [plural] | [plural, _] => plural.to_string(),
        [plural, _, sub] => format!("{plural}/{sub}"),
        _ => panic!("unexpected path {}", r.path),
    };
    let verb = match (r.method.as_str(), rest.len()) {
        ("GET", 1) if r.is_watch() => "watch",
        ("GET", 1) => "list",
        ("GET", _) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        (m, _) => panic!("unexpected method {m}"),
    };
    (group, resource, verb.to_string(), namespace)
}

#[tokio::test]
async fn every_request_the_controller_makes_is_allowed_by_the_shipped_least_privilege_rbac() {
    let (client, server) = ApiServer::start();
    install_config(&server, Some("direct_scaling: true\n"));
    install_fleet(&server, 0);
    // A bad object too, so that the Warning paths run.
    let mut broken = va("llama-broken", "H100");
    broken["spec"]["modelProfile"] = json!("not a profile");
    server.put(&va_path("llama-broken"), broken);
    let mut c = cluster(client.clone(), loaded(6.0));
    let o = observe(&server, &mut c).await;
    let d = decide(&o, None, &mut stabilizer(&c), 1);
    let applied = c.apply(&d).await;
    assert!(applied.errors.is_empty(), "{:?}", applied.errors);
    assert!(!applied.scaled.is_empty(), "test premise: the scale path runs");
    let elector = allot::k8s::LeaderElector::new(
        client,
        allot::k8s::LeaseSettings {
            name: "allot-leader".into(),
            namespace: CONFIG_NS.into(),
            identity: "allot-0".into(),
            duration: std::time::Duration::from_secs(15),
            retry: std::time::Duration::from_secs(5),
        },
    );
    assert!(elector.try_acquire_or_renew().await.expect("acquires"));
    assert!(elector.try_acquire_or_renew().await.expect("renews"));
    elector.release().await.expect("releases");

    let rbac_text =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base/rbac.yaml"))
            .expect("deploy/base/rbac.yaml");
    let docs: Vec<serde_json::Value> =
        rbac_text.split("\n---\n").map(|d| serde_saphyr::from_str(d).expect("RBAC parses")).collect();
    let rules = |kind: &str| -> Vec<serde_json::Value> {
        docs.iter()
            .filter(|d| d["kind"] == kind)
            .flat_map(|d| d["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let (cluster_rules, namespace_rules) = (rules("ClusterRole"), rules("Role"));
    let allows = |rules: &[serde_json::Value], group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            let has = |key: &str, v: &str| r[key].as_array().is_some_and(|a| a.iter().any(|x| x == v));
            has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
        })
    };
    let mut seen = std::collections::BTreeSet::new();
    for r in server.take_requests() {
        let (group, resource, verb, namespace) = rbac_request(&r);
        // deploy/base's Role is in Allot's namespace, which is also its config namespace.
        let in_own_namespace = namespace.as_deref() == Some(CONFIG_NS);
        let allowed = allows(&cluster_rules, &group, &resource, &verb)
            || (in_own_namespace && allows(&namespace_rules, &group, &resource, &verb));
        assert!(allowed, "{} {} ({verb} {group}/{resource}) is not allowed by deploy/base/rbac.yaml", r.method, r.path);
        seen.insert(format!("{verb} {group}/{resource}"));
    }
    eprintln!("requests made: {seen:#?}");
    for needed in [
        "watch llmd.ai/variantautoscalings",
        "patch llmd.ai/variantautoscalings/status",
        "patch apps/deployments/scale",
        "create events.k8s.io/events",
        "update coordination.k8s.io/leases",
        "watch /pods",
    ] {
        assert!(seen.contains(needed), "the test exercises {needed}: {seen:?}");
    }
}

/// A model scaled to zero has no vLLM pod, so Prometheus has no vLLM series for it: that is its
/// normal state, not missing data to hold on. Requests queued at the gateway (llm-d's Endpoint
/// Picker flow-control queue) bring a replica back; a gateway that cannot be read is named and
/// changes nothing.
#[tokio::test]
async fn a_model_at_zero_is_not_held_and_requests_queued_at_the_gateway_wake_it() {
    let (client, server) = ApiServer::start();
    install_config(&server, Some("scale_to_zero: true\n"));
    install_fleet(&server, 0);
    server.put(&deployment_path("llama-h100"), deployment("llama-h100", 0, 4));
    for name in ["llama-h100-1", "llama-h100-2"] {
        server.remove(&pod_path(name));
    }
    let load = FakeLoad::default();
    let mut c = cluster(client, load.clone());
    let o1 = observe(&server, &mut c).await;
    let mut memory = stabilizer(&c);
    assert!(o1.stale_models.is_empty(), "at zero, no series is what the model should have: {:?}", o1.stale_models);
    let d1 = decide(&o1, None, &mut memory, 1);
    assert!(d1.variants.iter().all(|v| v.desired == 0), "idle at zero stays at zero\n{d1:#?}");
    server.take_requests();
    c.apply(&d1).await;
    let requests = server.take_requests();
    let patch = requests.iter().find(|r| r.path == format!("{}/status", va_path("llama-h100"))).expect("status");
    let status = patch.body.as_ref().expect("body")["status"].clone();
    assert_eq!(condition(&status, "MetricsAvailable")["reason"], "ScaledToZero", "{status:#}");
    assert_eq!(condition(&status, "OptimizationReady")["status"], "True", "{status:#}");

    load.set_gateway(MODEL, 4.0);
    let o2 = c.observe().await.expect("observes");
    assert_eq!(o2.evidence.backlog.get(MODEL), Some(&4.0));
    let d2 = decide(&o2, Some(&d1), &mut memory, 2);
    let woken: u32 = d2.variants.iter().map(|v| v.desired).sum();
    assert!(woken >= 1, "requests at the gateway bring a replica back\n{d2:#?}");

    // The gateway unreadable: a warning, and the model (still at zero) is neither held nor woken.
    load.fail_gateway(MetricsProblem::Unavailable("connection refused".into()));
    let o3 = c.observe().await.expect("observes");
    assert!(o3.warnings.iter().any(|w| w.contains("gateway queue not read")), "{:?}", o3.warnings);
    assert!(o3.stale_models.is_empty() && o3.evidence.backlog.is_empty());

    // Prometheus itself down: a model at zero is held like any other.
    load.set(MODEL, Err(MetricsProblem::Unavailable("connection refused".into())));
    let o4 = c.observe().await.expect("observes");
    assert!(o4.stale_models.contains_key(MODEL), "{:?}", o4.stale_models);

    // With replicas running, no series still holds the model: the rule is for a model at zero.
    install_fleet(&server, 0);
    server.put(&deployment_path("llama-h100"), deployment("llama-h100", 2, 4));
    load.remove(MODEL);
    settle(&server, &c).await;
    let o5 = c.observe().await.expect("observes");
    assert!(o5.stale_models.contains_key(MODEL), "{:?}", o5.stale_models);
}
