//! Hand-over between replicas and shutdown: one signal stops the HTTP server, the loop and the
//! elector; the Lease is released before the process exits; a new leader plans and applies at
//! once on acquiring, not at its next tick. Run against the mocked API server (two controllers
//! sharing it) and, for the signals, against the `allot` binary.

mod k8s_support;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allot::cli::serve::start_cluster_controller;
use allot::controller::Shared;
use allot::k8s::config::AllotConfig;
use allot::k8s::{LeaseSettings, Scope};
use k8s_support::*;
use tokio::sync::watch;

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/allot-system/leases/allot-leader";

fn lease(identity: &str) -> LeaseSettings {
    LeaseSettings {
        name: "allot-leader".into(),
        namespace: "allot-system".into(),
        identity: identity.into(),
        duration: Duration::from_secs(15),
        retry: Duration::from_millis(50),
    }
}

/// A replica whose own cycle comes only once an hour: anything it does sooner is a reaction.
fn scope(identity: &str) -> Scope {
    Scope {
        identity: identity.into(),
        defaults: AllotConfig { cycle_interval: Duration::from_secs(3600), ..AllotConfig::default() },
        ..Scope::default()
    }
}

fn start(
    client: kube::Client,
    identity: &str,
) -> (allot::cli::serve::ClusterController, watch::Sender<bool>, Arc<Shared>) {
    let load = FakeLoad::default();
    load.set(MODEL, Ok(metrics(MODEL, 2.0, 2048.0, 128.0)));
    let shared = Shared::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let controller = start_cluster_controller(
        client,
        scope(identity),
        Some(lease(identity)),
        Box::new(move |_| Ok(load.clone())),
        shared.clone(),
        stop_rx,
    );
    (controller, stop_tx, shared)
}

async fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn holder(server: &ApiServer) -> Option<String> {
    server.get(LEASE).and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string)).filter(|h| !h.is_empty())
}

fn status_writes(requests: &[Recorded]) -> usize {
    requests.iter().filter(|r| r.method == "PATCH" && r.path.ends_with("/status")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_releases_the_lease_on_shutdown_and_the_next_one_acts_at_once() {
    let (client, server) = ApiServer::start();
    install_config(&server, None);
    install_fleet(&server, 0);
    let (a, stop_a, shared_a) = start(client.clone(), "allot-a");
    wait_for("allot-a to lead", Duration::from_secs(10), || holder(&server).as_deref() == Some("allot-a")).await;
    // It acts on acquiring, not an hour later.
    wait_for("allot-a to apply", Duration::from_secs(10), || status_writes(&server.take_requests()) > 0).await;
    assert!(shared_a.latest().leader);

    let (b, stop_b, shared_b) = start(client.clone(), "allot-b");
    // B plans as a follower (its caches warm) and writes nothing.
    // Its first plan sizes the whole fleet: the wait is generous for a loaded 2-core machine.
    wait_for("allot-b to plan", Duration::from_secs(30), || shared_b.decision().is_some()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(holder(&server).as_deref(), Some("allot-a"), "one leader");
    assert!(!shared_b.latest().leader);
    server.take_requests();

    // A shuts down: loop first, then the Lease is released — before stop() returns.
    stop_a.send(true).expect("A runs");
    let stopped = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), a.stop()).await.expect("A stops in time");
    let released = server.get(LEASE).expect("lease");
    assert!(
        holder(&server).is_none() || holder(&server).as_deref() == Some("allot-b"),
        "released on shutdown, not left to expire: {released}"
    );
    // B takes over within its retry period and acts at once (its own tick is an hour away).
    wait_for("allot-b to lead", Duration::from_secs(5), || holder(&server).as_deref() == Some("allot-b")).await;
    wait_for("allot-b to apply", Duration::from_secs(5), || status_writes(&server.take_requests()) > 0).await;
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(5), "hand-over took {took:?}, a term is 15 s");
    assert!(shared_b.latest().leader);
    let lease = server.get(LEASE).expect("lease");
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");

    stop_b.send(true).expect("B runs");
    tokio::time::timeout(Duration::from_secs(10), b.stop()).await.expect("B stops in time");
    assert_eq!(holder(&server), None, "the last leader releases too");
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

/// Start `allot serve --simulate` and wait until it answers.
fn serve_simulated(extra_env: &[(&str, &str)]) -> (std::process::Child, u16) {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_allot"));
    cmd.args(["serve", "--simulate", "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("allot starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "allot serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().expect("kill runs");
    assert!(status.success());
}

fn wait_exit(mut child: std::process::Child, timeout: Duration) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("waitable") {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().expect("piped").read_to_string(&mut stderr).expect("utf-8 logs");
    (status, stderr)
}

#[test]
fn sigterm_and_sigint_shut_the_server_down_cleanly_and_logs_to_a_pipe_are_plain_text() {
    for name in ["TERM", "INT"] {
        let (child, _port) = serve_simulated(&[]);
        std::thread::sleep(Duration::from_millis(300));
        signal(&child, name);
        let (status, stderr) = wait_exit(child, Duration::from_secs(20));
        assert!(status.success(), "SIG{name}: exit {status:?}\n{stderr}");
        assert!(stderr.contains(&format!("SIG{name} received; shutting down")), "SIG{name}:\n{stderr}");
        assert!(!stderr.contains('\u{1b}'), "no ANSI escape codes when stderr is not a terminal:\n{stderr:?}");
    }
}
