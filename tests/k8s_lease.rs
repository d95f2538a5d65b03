//! Leader election against the mocked API server: acquire, renew, follow, take over an expired
//! Lease, lose a race, release, and the `watch` channel the controller reads.

mod k8s_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use allot::k8s::{LeaderElector, LeaseSettings};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
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

/// `run` on a task: its leadership receiver, the shutdown trigger and the task.
fn run_elector(
    e: LeaderElector,
) -> (watch::Receiver<bool>, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(e.run(tx, async move {
        let _ = stopped.await;
    }));
    (rx, stop, task)
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

/// A clock the test moves, in seconds after 10:00:00.
fn movable_clock() -> (Arc<AtomicI64>, impl Fn() -> Timestamp + Send + Sync + 'static) {
    let offset = Arc::new(AtomicI64::new(0));
    let read = offset.clone();
    let base = at("2026-11-23T10:00:00Z");
    (offset, move || base.checked_add(SignedDuration::from_secs(read.load(Ordering::SeqCst))).expect("in range"))
}

#[tokio::test]
async fn follows_while_the_holder_renews_and_takes_over_after_a_silent_term() {
    let (client, server) = ApiServer::start();
    // The holder's clock is an hour behind ours: its renewTime looks old, but it is renewing.
    server.put(LEASE, held_by("allot-1", "2026-11-23T09:00:00.000000Z", "7", 2));
    let (offset, clock) = movable_clock();
    let e = LeaderElector::new(client, settings("allot-0")).with_clock(clock);
    assert!(!e.try_acquire_or_renew().await.expect("no API error"), "a first sight starts the term");
    offset.store(10, Ordering::SeqCst);
    assert!(!e.try_acquire_or_renew().await.expect("no API error"));
    // The holder renews at our 10:00:12: the term starts again from there, whatever its clock says.
    server.put(LEASE, held_by("allot-1", "2026-11-23T09:00:12.000000Z", "8", 2));
    offset.store(20, Ordering::SeqCst);
    assert!(!e.try_acquire_or_renew().await.expect("no API error"));
    offset.store(34, Ordering::SeqCst);
    assert!(!e.try_acquire_or_renew().await.expect("no API error"), "14 s of silence is within the 15 s term");
    let lines: Vec<String> = server.take_requests().iter().map(|r| r.line()).collect();
    assert_eq!(lines, vec![format!("GET {LEASE}"); 4], "a follower writes nothing");

    offset.store(36, Ordering::SeqCst);
    assert!(e.try_acquire_or_renew().await.expect("no API error"), "16 s without renewal: taken over");
    let requests = server.take_requests();
    let put = requests.iter().find(|r| r.method == "PUT").expect("a replace");
    let body = put.body.as_ref().expect("body");
    assert_eq!(body["spec"]["holderIdentity"], "allot-0");
    assert_eq!(body["spec"]["leaseTransitions"], 3);
    assert_eq!(body["metadata"]["resourceVersion"], "8", "compare-and-swap on the record read");
    assert_eq!(server.get(LEASE).expect("lease")["spec"]["holderIdentity"], "allot-0");
}

#[tokio::test]
async fn losing_a_race_is_not_an_error() {
    let (client, server) = ApiServer::start();
    // Released by its last holder: free to take at once.
    server.put(LEASE, held_by("", "2026-11-23T09:00:00.000000Z", "7", 0));
    server.fail("PUT", LEASE, 409);
    let e = elector(client, "allot-0", "2026-11-23T10:00:00Z");
    assert!(!e.try_acquire_or_renew().await.expect("a conflict is a lost race"));
    assert_eq!(server.take_requests().iter().filter(|r| r.method == "PUT").count(), 1, "it tried");
    server.fail("PUT", LEASE, 500);
    assert!(e.try_acquire_or_renew().await.is_err(), "other errors are reported");
}

#[tokio::test]
async fn run_publishes_leadership_and_releases_on_shutdown() {
    let (client, server) = ApiServer::start();
    let e = elector(client, "allot-0", "2026-11-23T10:00:00Z");
    let (mut rx, stop, task) = run_elector(e);
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
    let (mut rx, stop, task) = run_elector(e);
    tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|l| *l)).await.expect("leads").expect("alive");
    server.fail("GET", LEASE, 500);
    tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|l| !*l)).await.expect("steps down").expect("alive");
    stop.send(()).expect("runner alive");
    tokio::time::timeout(Duration::from_secs(2), task).await.expect("stops").expect("no panic");
}
