//! Every bundled example plans, and each shows what it was written to show. Also the CLI contract:
//! `allot plan` prints the table, bad input exits with code 2.

use std::process::Command;

use allot::analyze::Role;
use allot::plan::{Binding, Plan, PlanMode};
use allot::scenario;

fn plan_example(file: &str) -> Plan {
    let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("example exists");
    let snapshot = scenario::load(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    allot::optimize::plan(&snapshot)
}

/// Every variant with replicas is predicted to meet the SLO of each class it serves.
fn assert_slos_met(plan: &Plan) {
    for v in plan.variants.iter().filter(|v| v.replicas > 0 && v.load_rps > 0.0) {
        let predicted = v.predicted.as_ref().unwrap_or_else(|| panic!("{} has no prediction", v.name));
        for check in &predicted.slo {
            assert!(check.met, "{} misses class {}'s SLO: {check:?}", v.name, check.class);
        }
    }
}

#[test]
fn heterogeneous_fleet_mixes_gpu_types_and_meets_every_slo() {
    let plan = plan_example("heterogeneous.yaml");
    assert_eq!((plan.accelerators.len(), plan.variants.len()), (3, 15));
    let models: std::collections::BTreeSet<_> = plan.models.iter().map(|m| &m.name).collect();
    let classes: std::collections::BTreeSet<_> = plan.models.iter().map(|m| &m.class).collect();
    assert_eq!((models.len(), classes.len()), (6, 2));
    assert_eq!(plan.mode, PlanMode::AllServed);
    assert!(plan.models.iter().all(|m| m.served_fraction > 0.999));
    let types_used = plan.accelerators.iter().filter(|a| a.used_gpus > 0).count();
    assert!(types_used >= 2, "the cheapest plan mixes GPU types: {:?}", plan.accelerators);
    assert_slos_met(&plan);
    assert!(plan.cost_usd_per_hour > 0.0 && plan.status != allot::plan::PlanStatus::Fallback);
}

#[test]
fn scarcity_serves_premium_fully_and_shares_the_rest() {
    let plan = plan_example("scarcity.yaml");
    assert_eq!(plan.mode, PlanMode::FairShare);
    for m in &plan.models {
        if m.priority == 1 {
            assert!(m.served_fraction > 0.999, "premium {} served {}", m.name, m.served_fraction);
        } else {
            assert!(
                m.served_fraction < 0.999 && m.served_fraction > 0.3,
                "standard {} served {}",
                m.name,
                m.served_fraction
            );
        }
    }
    assert!(plan.accelerators.iter().all(|a| a.free_gpus < 2), "{:?}", plan.accelerators);
    assert!(plan.binding.iter().any(|b| matches!(b, Binding::DemandUnmet { .. })));
    assert!(plan.binding.iter().any(|b| matches!(b, Binding::InventoryExhausted { .. })));
    assert_slos_met(&plan);
}

#[test]
fn prefill_decode_example_respects_its_ratio() {
    let plan = plan_example("prefill-decode.yaml");
    assert_eq!(plan.mode, PlanMode::AllServed);
    let sum = |role: Role| -> u32 { plan.variants.iter().filter(|v| v.role == role).map(|v| v.replicas).sum() };
    let (prefill, decode) = (sum(Role::Prefill), sum(Role::Decode));
    assert!(prefill > 0 && decode > 0, "disaggregated serving is used: {prefill} prefill, {decode} decode");
    let ratio = f64::from(prefill) / f64::from(decode);
    assert!((0.25..=2.0).contains(&ratio), "ratio {ratio}");
    assert!((plan.models[0].served_rps - 6.0).abs() < 1e-6);
    assert_slos_met(&plan);
}

#[test]
fn plan_prints_the_table_for_the_bundled_example() {
    let out = Command::new(env!("CARGO_BIN_EXE_allot")).arg("plan").output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("VARIANT") && text.contains("chat-70b-h100-tp4") && text.contains("cost "), "{text}");
}

#[test]
fn plan_json_has_the_machine_interface_fields() {
    let out = Command::new(env!("CARGO_BIN_EXE_allot")).args(["plan", "--format", "json"]).output().expect("runs");
    assert!(out.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for key in ["status", "solve_ms", "mip_gap", "cost_usd_per_hour", "variants", "models", "binding", "warnings"] {
        assert!(plan.get(key).is_some(), "missing {key}");
    }
    let v = &plan["variants"][0];
    for key in [
        "name",
        "model",
        "accelerator",
        "role",
        "gpus_per_replica",
        "current_replicas",
        "replicas",
        "capacity_rps",
        "load_rps",
        "cost_usd_per_hour",
    ] {
        assert!(v.get(key).is_some(), "variants[0] missing {key}");
    }
    let m = &plan["models"][0];
    for key in ["name", "class", "demand_rps", "served_fraction"] {
        assert!(m.get(key).is_some(), "models[0] missing {key}");
    }
}

#[test]
fn invalid_input_exits_with_code_2_and_names_the_field() {
    let dir = std::env::temp_dir().join(format!("allot-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("bad.yaml");
    let text = allot::cli::DEFAULT_SCENARIO.replacen("gpus_per_replica: 4", "gpus_per_replica: 0", 1);
    std::fs::write(&bad, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_allot")).arg("plan").arg("-f").arg(&bad).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("variants[0].gpus_per_replica"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["plan", "-f", "/nonexistent/scenario.yaml"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn predict_prints_latency_per_rate_and_refuses_bad_rates() {
    let out = Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["predict", "--variant", "chat-70b-h100-tp4", "--rates", "1,2,1000", "--format", "json"])
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let points = doc[0]["points"].as_array().expect("points");
    let p90 = |i: usize| points[i]["metrics"]["ttft"]["p90_ms"].as_f64().expect("p90");
    assert!(p90(0) <= p90(1), "{doc}");
    assert_eq!(points[2]["stable"], false, "1000 req/s saturates");
    let out = Command::new(env!("CARGO_BIN_EXE_allot")).args(["predict", "--rates=-1"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rate 0 is -1"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_highs_log_goes_to_stderr_and_leaves_json_on_stdout_parseable() {
    let example = format!("{}/examples/scarcity.yaml", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["plan", "-f", &example, "--format", "json"])
        .env("ALLOT_HIGHS_LOG", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("allot runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let plan: allot::plan::Plan = serde_json::from_slice(&output.stdout).expect("stdout is the plan alone");
    assert!(!plan.phases.is_empty());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("HiGHS"), "HiGHS's log on stderr: {log}");
}
