//! `allot serve --simulate`: the real controller loop, REST API and metrics over a simulated
//! cluster, driven over loopback HTTP.

use std::time::Duration;

use allot::cli::serve::SimulateServeArgs;
use allot::cli::serve::{ServeArgs, serve_on};
use serde_json::Value;

async fn start(sim: SimulateServeArgs) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let args = ServeArgs { simulate: Some(allot::cli::serve::BUNDLED.into()), sim, ..ServeArgs::default() };
    tokio::spawn(async move { serve_on(listener, args).await.expect("serves") });
    address
}

async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client.get(url).send().await.expect("reachable");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Poll until the controller has published `cycles` cycles.
async fn wait_for_cycle(client: &reqwest::Client, address: &str, cycles: u64) -> Value {
    for _ in 0..600 {
        let (status, body) = get_json(client, &format!("{address}/v1/plan")).await;
        if status == 200 && body["cycle"].as_u64().is_some_and(|c| c >= cycles) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no cycle {cycles} within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_plans_the_simulated_fleet_and_exposes_it() {
    let address = start(SimulateServeArgs { speed: 300.0, ..SimulateServeArgs::default() }).await;
    let client = reqwest::Client::new();
    let decision = wait_for_cycle(&client, &address, 3).await;

    // The decision covers every variant of the bundled fleet, with pod states.
    let variants = decision["variants"].as_array().expect("variants");
    assert_eq!(variants.len(), 15, "{decision:#}");
    assert!(variants.iter().any(|v| v["desired"].as_u64().unwrap_or(0) > 0));
    assert!(decision["snapshot_id"].as_str().is_some_and(|s| s.len() == 16));

    // The snapshot is the observed scenario, load measured from the simulated traffic.
    let (status, snapshot) = get_json(&client, &format!("{address}/v1/snapshot")).await;
    assert_eq!(status, 200);
    let load = snapshot["scenario"]["load"].as_array().expect("load");
    assert!(load.iter().all(|l| l["arrival_rate_rps"].as_f64().is_some_and(|r| r.is_finite() && r >= 0.0)));
    assert!(load.iter().any(|l| l["arrival_rate_rps"].as_f64().unwrap_or(0.0) > 0.0));

    // Metrics: the HPA/KEDA gauge per variant, and the simulated vLLM servers' metrics.
    let metrics = client.get(format!("{address}/metrics")).send().await.unwrap().text().await.unwrap();
    let desired_lines = metrics.lines().filter(|l| l.starts_with("allot_desired_replicas{")).count();
    assert_eq!(desired_lines, 15, "{metrics}");
    assert!(metrics.contains("allot_plans_total{status=\"optimal\"}"), "{metrics}");
    assert!(metrics.contains("allot_cycles_total{outcome=\"applied\"}"), "{metrics}");
    let vllm = client.get(format!("{address}/simulated/vllm/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(vllm.contains("vllm:request_success_total{model_name="), "{vllm}");
    assert!(vllm.contains("vllm:time_to_first_token_seconds_bucket{model_name="), "{vllm}");

    // What-if without overrides: the loop's own plan for this snapshot (its forecast and
    // calibration included), so nothing changes but the solver's gap.
    let body = serde_json::json!({ "overrides": {} });
    let response = client.post(format!("{address}/v1/plans")).json(&body).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let same: Value = response.json().await.unwrap();
    let change = same["cost_change_usd_per_hour"].as_f64().expect("cost change");
    let cost = same["plan"]["cost_usd_per_hour"].as_f64().expect("cost");
    assert!(change.abs() <= 0.02 * cost, "{same:#}");

    // What-if: double every model's load against the observed snapshot.
    let body = serde_json::json!({ "overrides": { "load_multiplier": { "*": 2.0 } } });
    let response = client.post(format!("{address}/v1/plans")).json(&body).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let what_if: Value = response.json().await.unwrap();
    assert!(what_if["cost_change_usd_per_hour"].as_f64().expect("cost change") > 0.0, "{what_if:#}");
    assert!(!what_if["diff"].as_array().expect("diff").is_empty());

    // Bad overrides name what is wrong.
    let body = serde_json::json!({ "overrides": { "inventory_change": { "TPU-v9": 4 } } });
    let response = client.post(format!("{address}/v1/plans")).json(&body).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["problems"][0]["path"], "overrides.inventory_change.TPU-v9");

    // Problems the overrides cause in the snapshot are named by the override sent.
    let body = serde_json::json!({ "overrides": { "classes": { "premium": { "priority": 0 } } } });
    let response = client.post(format!("{address}/v1/plans")).json(&body).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["problems"][0]["path"], "overrides.classes.premium.priority", "{problem:#}");
    // bloom-code keeps a replica of 8 H100s; 4 left is not enough.
    let body = serde_json::json!({ "overrides": { "inventory_change": { "H100-80GB": -28 } } });
    let response = client.post(format!("{address}/v1/plans")).json(&body).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["problems"][0]["path"], "overrides.inventory_change.H100-80GB", "{problem:#}");
}

#[tokio::test]
async fn what_if_without_a_controller_is_a_conflict_not_a_crash() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { serve_on(listener, ServeArgs::default()).await.expect("serves") });
    let client = reqwest::Client::new();
    let body = serde_json::json!({ "overrides": { "load_multiplier": { "*": 2.0 } } });
    let mut status = 0;
    for _ in 0..50 {
        match client.post(format!("{address}/v1/plans")).json(&body).send().await {
            Ok(r) => {
                status = r.status().as_u16();
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(status, 409);
    // No controller runs here: there is no current plan to wait for.
    let (status, problem) = get_json(&client, &format!("{address}/v1/plan")).await;
    assert_eq!(status, 404);
    assert_eq!(problem["type"], "https://allot.dev/problems/no-controller");
}

/// `--log-format json`: one JSON object per line; each cycle's events carry the cycle's span
/// with its snapshot id and outcome. `--cycles` ends the run (and the server) cleanly.
#[test]
fn json_logs_carry_one_span_per_cycle_with_snapshot_id_and_outcome() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["serve", "--listen", "127.0.0.1:0", "--simulate", "--speed", "500", "--cycles", "3"])
        .args(["--log-format", "json", "--log-level", "allot=info"])
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let events: Vec<Value> =
        stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let done: Vec<&Value> = events.iter().filter(|e| e["message"] == "cycle done").collect();
    assert_eq!(done.len(), 3, "{stderr}");
    for (i, e) in done.iter().enumerate() {
        let span = &e["span"];
        assert_eq!(span["name"], "cycle");
        assert_eq!(span["cycle"], (i + 1) as u64);
        assert!(span["snapshot_id"].as_str().is_some_and(|s| s.len() == 16), "{e}");
        assert_eq!(span["outcome"], "applied", "{e}");
        assert_eq!(e["level"], "INFO");
    }
}

/// A real trace replayed through the live loop: requests are mapped onto the scenario's load
/// shares, and the loop plans on what they measure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_drives_the_live_loop() {
    let trace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/conv_first_300s.csv");
    let sim = SimulateServeArgs { speed: 60.0, trace: Some(trace), ..SimulateServeArgs::default() };
    let address = start(sim).await;
    let client = reqwest::Client::new();
    wait_for_cycle(&client, &address, 4).await;
    let (_, snapshot) = get_json(&client, &format!("{address}/v1/snapshot")).await;
    let total: f64 = snapshot["scenario"]["load"]
        .as_array()
        .expect("load")
        .iter()
        .map(|l| l["arrival_rate_rps"].as_f64().unwrap_or(0.0))
        .sum();
    // The first 300 s of the conversation trace average 4.8 req/s.
    assert!(total > 1.0 && total < 20.0, "observed {total} req/s: {snapshot:#}");
}
