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

/// The live loop against servers slower (×1.3: the profile is 30 % optimistic) or faster (×0.7:
/// 30 % pessimistic) than its profile says calibrates to the truth, and over cycles 11 to 45 (30
/// simulated seconds each) meets the SLO as the loop with the true profile does (within 4
/// points of per-request attainment) at no more than 10 % above its cost. The live engine is
/// paced by the wall clock, so two runs of the same loop differ: the true-profile loop alone
/// measured $65.09–70.43/h over four runs of ×0.7 (a replica held a few cycles longer or
/// shorter), which a 5 % bound on one pair of runs cannot tell from calibration error. The 5 %
/// claim is asserted where runs are deterministic, by `sim::policy`'s closed-loop test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_loop_calibrates_a_wrong_profile_to_the_cost_of_the_true_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/calibration-h100.yaml");
    let scenario = allot::scenario::parse(&std::fs::read_to_string(&path).expect("scenario")).expect("parses");
    for factor in [1.3, 0.7] {
        // The wrong profile: the scenario's, against servers `factor` times slower.
        let (decision, wrong) = run_live(&path, factor).await;
        let calibration = &decision["variants"][0]["calibration"];
        for part in ["prefill_factor", "decode_factor"] {
            let f = calibration[part].as_f64().expect("a correction");
            // Mean TTFT and ITL at one load do not separate prefill from decode exactly (decode
            // steps carry the others' prefills): each factor moves to the truth's side, and the
            // cost and attainment below are what the plan relies on.
            assert!(
                (f / factor - 1.0).abs() < 0.25 && (f - 1.0) * (factor - 1.0) > 0.0,
                "×{factor}: {part} {f}: {decision:#}"
            );
        }
        assert_eq!(calibration["state"], "calibrated", "×{factor}: {decision:#}");

        // The true profile: the same servers, described by the scenario.
        let mut right = scenario.clone();
        let mut profile = allot::scenario::bundled::profiles()
            .iter()
            .find(|p| p.name == "llama2-70b/h100-80gb/tp4")
            .expect("bundled profile")
            .clone();
        profile.params = profile.params.corrected(factor, factor);
        profile.name = "true/h100".into();
        right.profiles.push(profile);
        right.variants[0].profile = Some("true/h100".into());
        let right_path = std::env::temp_dir().join(format!("allot-true-profile-{}-{factor}.json", std::process::id()));
        std::fs::write(&right_path, serde_json::to_string(&right).expect("serializes")).expect("written");
        let (_, truth) = run_live(&right_path, 1.0).await;
        let _ = std::fs::remove_file(&right_path);

        eprintln!(
            "×{factor}: wrong profile ${:.2}/h, attainment {:.3}; true profile ${:.2}/h, attainment {:.3}",
            wrong.cost, wrong.attainment, truth.cost, truth.attainment
        );
        assert!(wrong.cost <= 1.10 * truth.cost, "×{factor}: {wrong:?} against the true profile's {truth:?}");
        assert!(
            wrong.attainment >= truth.attainment - 0.04,
            "×{factor}: {wrong:?} against the true profile's {truth:?}"
        );
    }
}

/// Cycles the calibration test runs (30 simulated seconds each) and the first one it compares.
const CALIBRATION_CYCLES: u64 = 45;
const CALIBRATED_FROM_CYCLE: u64 = 11;

/// What a live run did over the cycles compared.
#[derive(Debug)]
struct Tail {
    /// Mean planned cost per cycle, USD per hour.
    cost: f64,
    /// Share of the requests finished in those cycles that met their class's targets.
    attainment: f64,
}

/// Run `serve --simulate` on `scenario` with servers `factor` times slower than its profiles until
/// [`CALIBRATION_CYCLES`]: the last decision, and what the cycles from [`CALIBRATED_FROM_CYCLE`] did.
async fn run_live(scenario: &std::path::Path, factor: f64) -> (Value, Tail) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let sim = SimulateServeArgs {
        speed: 150.0,
        true_latency_factor: factor,
        cycles: Some(CALIBRATION_CYCLES + 5),
        ..SimulateServeArgs::default()
    };
    let args = ServeArgs { simulate: Some(scenario.to_path_buf()), sim, ..ServeArgs::default() };
    let server = tokio::spawn(async move { serve_on(listener, args).await.expect("serves") });
    let client = reqwest::Client::new();
    let decision = wait_for_cycle(&client, &address, CALIBRATION_CYCLES).await;
    let (status, history) = get_json(&client, &format!("{address}/v1/history")).await;
    server.abort();
    assert_eq!(status, 200);
    let tail: Vec<&Value> = history["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["cycle"].as_u64().is_some_and(|c| (CALIBRATED_FROM_CYCLE..=CALIBRATION_CYCLES).contains(&c)))
        .collect();
    assert_eq!(tail.len() as u64, CALIBRATION_CYCLES - CALIBRATED_FROM_CYCLE + 1, "{history:#}");
    let cost = tail.iter().map(|r| r["cost_usd_per_hour"].as_f64().expect("cost")).sum::<f64>() / tail.len() as f64;
    let observed = tail.iter().flat_map(|r| r["slo"].as_array().into_iter().flatten()).map(|s| &s["observed"]);
    let (met, requests) = observed
        .fold((0, 0), |(m, n), o| (m + o["met"].as_u64().unwrap_or(0), n + o["requests"].as_u64().unwrap_or(0)));
    assert!(requests > 1000, "requests observed: {requests}: {history:#}");
    (decision, Tail { cost, attainment: met as f64 / requests as f64 })
}
