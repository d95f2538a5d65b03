//! Leader election against the mocked API server: acquire, renew, follow, take over an expired
//! Lease, lose a race, release, and the `watch` channel the controller reads.

mod k8s_support;

use std::time::Duration;

use allot::k8s::{LeaderElector, LeaseSettings};
use k8s_openapi::jiff::Timestamp;
use k8s_support::ApiServer;
use serde_json::json;
use tokio::sync::watch;

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/allot-system/leases/allot-leader";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/allot-system/leases";

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        name: "allot-leader".into(),
        namespace: "allot-system".into(),
        identity: identity.into(),
        duration: Duration::from_secs(15),
        retry: Duration::from_millis(10),
    }
}

fn at(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

fn elector(client: kube::Client, identity: &str, now: &'static str) -> LeaderElector {
    LeaderElector::new(client, settings(identity)).with_clock(move || at(now))
}

fn held_by(holder: &str, renewed: &str, version: &str, transitions: i32) -> serde_json::Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "allot-leader", "namespace": "allot-system", "resourceVersion": version},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "acquireTime": "2026-11-23T09:00:00.000000Z", "renewTime": renewed, "leaseTransitions": transitions}
    })
}

#[tokio::test]
async fn creates_the_lease_when_there_is_none_then_renews_it() {
    let (client, server) = ApiServer::start();
    let e = elector(client, "allot-0", "2026-11-23T10:00:00Z");
    assert!(e.try_acquire_or_renew().await.expect("no API error"));
    let requests = server.take_requests();
    let lines: Vec<String> = requests.iter().map(|r| r.line()).collect();
    assert_eq!(lines, vec![format!("GET {LEASE}"), format!("POST {LEASES}")]);
    let spec = &requests[1].body.as_ref().expect("body")["spec"];
    assert_eq!(spec["holderIdentity"], "allot-0");
    assert_eq!(spec["leaseDurationSeconds"], 15);
    assert_eq!(spec["leaseTransitions"], 0);

    assert!(e.try_acquire_or_renew().await.expect("no API error"), "the holder renews");
    let requests = server.take_requests();
    assert_eq!(
        requests.iter().map(|r| r.line()).collect::<Vec<_>>(),
        vec![format!("GET {LEASE}"), format!("PUT {LEASE}")]
    );
    let body = requests[1].body.as_ref().expect("body");
    assert_eq!(body["metadata"]["resourceVersion"], "1", "the replace is a compare-and-swap on what was read");
    assert_eq!(body["spec"]["holderIdentity"], "allot-0");
    assert_eq!(body["spec"]["leaseTransitions"], 0, "renewing is not a transition");
}

#[tokio::test]
async fn follows_while_another_holder_renews_and_takes_over_once_expired() {
    let (client, server) = ApiServer::start();
    server.put(LEASE, held_by("allot-1", "2026-11-23T09:59:50.000000Z", "7", 2));
    // 10 s after the other holder's renewal: its 15 s term still runs.
    let follower = elector(client.clone(), "allot-0", "2026-11-23T10:00:00Z");
    assert!(!follower.try_acquire_or_renew().await.expect("no API error"));
    let lines: Vec<String> = server.take_requests().iter().map(|r| r.line()).collect();
    assert_eq!(lines, vec![format!("GET {LEASE}")], "a follower writes nothing");

    // 20 s after: expired, taken over.
    let late = elector(client, "allot-0", "2026-11-23T10:00:10Z");
    assert!(late.try_acquire_or_renew().await.expect("no API error"));
    let requests = server.take_requests();
    let put = requests.iter().find(|r| r.method == "PUT").expect("a replace");
    let spec = &put.body.as_ref().expect("body")["spec"];
    assert_eq!(spec["holderIdentity"], "allot-0");
    assert_eq!(spec["leaseTransitions"], 3);
    assert_eq!(put.body.as_ref().expect("body")["metadata"]["resourceVersion"], "7");
    assert_eq!(server.get(LEASE).expect("lease")["spec"]["holderIdentity"], "allot-0");
}

#[tokio::test]
async fn losing_a_race_is_not_an_error() {
    let (client, server) = ApiServer::start();
    server.put(LEASE, held_by("allot-1", "2026-11-23T09:00:00.000000Z", "7", 0));
    server.fail("PUT", LEASE, 409);
    let e = elector(client, "allot-0", "2026-11-23T10:00:00Z");
    assert!(!e.try_acquire_or_renew().await.expect("a conflict is a lost race"));
    server.fail("PUT", LEASE, 500);
    assert!(e.try_acquire_or_renew().await.is_err(), "other errors are reported");
}

#[tokio::test]
async fn run_publishes_leadership_and_releases_on_shutdown() {
    let (client, server) = ApiServer::start();
    let e = elector(client, "allot-0", "2026-11-23T10:00:00Z");
    let (tx, mut rx) = watch::channel(false);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(e.run(tx, async move {
        let _ = stopped.await;
    }));
    tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|leading| *leading))
        .await
        .expect("becomes leader in time")
        .expect("sender alive");
    stop.send(()).expect("runner alive");
    tokio::time::timeout(Duration::from_secs(2), task).await.expect("stops in time").expect("no panic");
    assert!(!*rx.borrow(), "not leading after shutdown");
    let lease = server.get(LEASE).expect("lease");
    assert!(lease["spec"].get("holderIdentity").is_none_or(|h| h.is_null()), "released: {lease}");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 1);
}

#[tokio::test]
async fn an_api_error_loses_leadership() {
    let (client, server) = ApiServer::start();
    let e = elector(client, "allot-0", "2026-11-23T10:00:00Z");
    let (tx, mut rx) = watch::channel(false);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(e.run(tx, async move {
        let _ = stopped.await;
    }));
    tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|l| *l)).await.expect("leads").expect("alive");
    server.fail("GET", LEASE, 500);
    tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|l| !*l)).await.expect("steps down").expect("alive");
    stop.send(()).expect("runner alive");
    tokio::time::timeout(Duration::from_secs(2), task).await.expect("stops").expect("no panic");
}
