//! Issue 5's check against a real Prometheus: Debian's `prometheus` on loopback, loaded with
//! `deploy/prometheus/rules.yaml`, scrapes `allot serve --simulate` (Allot's `/metrics` and the
//! simulated vLLM servers' `/simulated/vllm/metrics`); once data flows, every Grafana panel's
//! expression and every recording rule is evaluated through the HTTP API and must return series.

mod support;

use std::time::{Duration, Instant};

use allot::cli::serve::{BUNDLED, SimulateServeArgs};
use allot::cli::serve::{ServeArgs, serve_on};
use support::exprs::{dashboard_exprs, rule_exprs, rules_path};
use support::prometheus::{PrometheusProcess, sample_value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_and_recording_rule_returns_series_from_serve_simulate() {
    // The controller and the simulated fleet, 60 simulated seconds per second.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let sim = SimulateServeArgs { speed: 60.0, ..SimulateServeArgs::default() };
    let args = ServeArgs { simulate: Some(BUNDLED.into()), sim, ..ServeArgs::default() };
    tokio::spawn(async move { serve_on(listener, args).await.expect("serves") });

    let rules = rules_path();
    let prometheus = PrometheusProcess::start(
        &[("allot", &address, "/metrics"), ("vllm", &address, "/simulated/vllm/metrics")],
        &[rules.as_path()],
    )
    .await
    .expect("prometheus starts");

    // Data flows: both targets up, the simulated servers finishing requests, a plan recorded.
    for query in [
        "up{job=\"allot\"} == 1",
        "up{job=\"vllm\"} == 1",
        "rate(vllm:request_success_total[1m]) > 0",
        "allot_desired_replicas",
    ] {
        prometheus.wait_for_series(query, Duration::from_secs(60)).await.expect("data flows");
    }
    // The HPA/KEDA gauge carries exactly the labels the deploy/examples scale on.
    let desired = prometheus.query("allot_desired_replicas").await.expect("query");
    let series = desired.as_array().expect("vector");
    assert_eq!(series.len(), 15, "one series per variant: {desired}");
    for s in series {
        for label in ["namespace", "variant", "model", "accelerator", "role"] {
            assert!(s["metric"].get(label).is_some(), "{label} missing in {s}");
        }
        assert!(sample_value(s).is_some_and(|v| v >= 0.0));
    }

    let mut exprs = dashboard_exprs().expect("dashboard parses");
    let panel_count = exprs.len();
    exprs.extend(rule_exprs().expect("rules parse").into_iter().filter(|e| e.source.starts_with("record ")));
    assert!(panel_count >= 10, "the dashboard has its panels: {panel_count}");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut failures = Vec::new();
    for e in &exprs {
        // Rates need two scrapes and recording rules an evaluation after them: wait, within
        // one shared deadline.
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(2));
        if let Err(err) = prometheus.wait_for_series(&e.promql, left).await {
            failures.push(format!("{}: {}\n  {}", e.source, e.promql, err.to_string().lines().next().unwrap_or("")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} expressions returned no series or an error:\n{}",
        failures.len(),
        exprs.len(),
        failures.join("\n")
    );

    // The recorded attainment is a share.
    for name in ["allot:ttft_slo_attainment:ratio_rate5m", "allot:itl_slo_attainment:ratio_rate5m"] {
        let result = prometheus.query(name).await.expect("query");
        for s in result.as_array().expect("vector") {
            let v = sample_value(s).expect("number");
            assert!((0.0..=1.0).contains(&v), "{name} = {v}: {s}");
        }
    }
}
