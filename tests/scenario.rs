//! Input handling: every bad scenario gets a clear error naming the field, never a panic; WVA's
//! optimizer JSON is read unchanged.

use allot::scenario::{self, LoadError};
use proptest::prelude::*;

const GOOD: &str = r#"
accelerators:
  - { name: H100, gpus: 16, cost_usd_per_gpu_hour: 4.25 }
service_classes:
  - { name: gold, priority: 1, targets: [{ model: m, ttft: { ms: 2000, statistic: p95 }, itl: { ms: 60 } }] }
load:
  - { model: m, class: gold, arrival_rate_rps: 2, input_tokens: 1000, output_tokens: 200 }
variants:
  - { name: m-h100, model: m, accelerator: H100, gpus_per_replica: 4, max_batch: 64, profile: p }
profiles:
  - { name: p, alpha_ms: 28.7, beta_ms: 0.34, gamma_ms: 7.5, delta_ms: 0.107 }
"#;

/// The problems of a scenario that must be rejected, as "path: message" lines.
fn problems(text: &str) -> Vec<String> {
    match scenario::load(text) {
        Ok(_) => panic!("scenario should be rejected:\n{text}"),
        Err(e) => e.problems().iter().map(|p| format!("{}: {}", p.path, p.message)).collect(),
    }
}

fn assert_problem(text: &str, path: &str, words: &str) {
    let found = problems(text);
    assert!(
        found.iter().any(|p| p.starts_with(path) && p.contains(words)),
        "expected a problem at {path:?} mentioning {words:?}, got {found:#?}"
    );
}

#[test]
fn the_reference_scenario_is_valid() {
    let s = scenario::load(GOOD).expect("valid");
    assert_eq!(s.variants.len(), 1);
    assert_eq!(s.models[0].demands[0].arrival_rps, 2.0);
}

#[test]
fn malformed_yaml_and_json_are_parse_errors() {
    assert!(matches!(scenario::load("accelerators: [ {name: x"), Err(LoadError::Parse { .. })));
    let e = scenario::load("{\"accelerators\": [}").expect_err("broken JSON");
    assert!(e.to_string().contains("line 1"), "{e}");
    assert!(matches!(scenario::load(""), Err(LoadError::Parse { .. })));
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let json = r#"{"accelerators": [{"name": "A", "gpus": 1, "cost_usd_per_gpu_hour": 1, "colour": "red"}],
                   "service_classes": [], "variants": []}"#;
    let e = scenario::load(json).expect_err("unknown key");
    let text = e.to_string();
    assert!(text.contains("accelerators[0]") && text.contains("colour"), "{text}");
    let yaml = GOOD.replace("max_batch: 64", "max_batch: 64, maxbatch: 3");
    assert!(scenario::load(&yaml).expect_err("unknown key").to_string().contains("maxbatch"));
}

#[test]
fn wrong_types_and_negative_counts_name_the_field() {
    let json = r#"{"accelerators": [{"name": "A", "gpus": -4, "cost_usd_per_gpu_hour": 1}], "service_classes": [], "variants": []}"#;
    let e = scenario::load(json).expect_err("negative gpus");
    assert!(e.to_string().contains("accelerators[0].gpus"), "{e}");
}

#[test]
fn nan_infinite_negative_zero_and_absurd_numbers_are_rejected() {
    // The YAML reader refuses non-finite floats itself, pointing at line and column.
    assert_problem(
        &GOOD.replace("arrival_rate_rps: 2", "arrival_rate_rps: .nan"),
        "(yaml)",
        "line 7 column 48: non-finite",
    );
    assert_problem(&GOOD.replace("arrival_rate_rps: 2", "arrival_rate_rps: .inf"), "(yaml)", "non-finite");
    assert_problem(&GOOD.replace("arrival_rate_rps: 2", "arrival_rate_rps: -1"), "load[0].arrival_rate_rps", "≥ 0");
    assert_problem(&GOOD.replace("arrival_rate_rps: 2", "arrival_rate_rps: 1e300"), "load[0].arrival_rate_rps", "≤");
    assert_problem(
        &GOOD.replace("gpus_per_replica: 4", "gpus_per_replica: 0"),
        "variants[0].gpus_per_replica",
        "between 1",
    );
    assert_problem(&GOOD.replace("input_tokens: 1000", "input_tokens: 0"), "load[0].input_tokens", "≥ 1");
    assert_problem(&GOOD.replace("ms: 2000", "ms: 0"), "service_classes[0].targets[0].ttft.ms", "> 0");
    assert_problem(
        &GOOD.replace("cost_usd_per_gpu_hour: 4.25", "cost_usd_per_gpu_hour: 4250"),
        "accelerators[0].cost_usd_per_gpu_hour",
        "≤ 1000",
    );
    assert_problem(&GOOD.replace("alpha_ms: 28.7", "alpha_ms: 0"), "profiles[0].alpha_ms", "> 0");
    assert_problem(&GOOD.replace("beta_ms: 0.34", "beta_ms: -0.34"), "profiles[0].beta_ms", "≥ 0");
    assert_problem(&format!("{GOOD}optimizer: {{ mip_gap: 2 }}\n"), "optimizer.mip_gap", "≤ 0.5");
    assert_problem(&format!("{GOOD}optimizer: {{ max_utilization: 1 }}\n"), "optimizer.max_utilization", "≤ 0.99");
}

#[test]
fn dangling_references_name_what_is_missing() {
    assert_problem(&GOOD.replace("accelerator: H100", "accelerator: B200"), "variants[0].accelerator", "\"B200\"");
    assert_problem(
        &GOOD.replace("profile: p }", "profile: llama-8b/h100 }"),
        "variants[0].profile",
        "no profile \"llama-8b/h100\"",
    );
    assert_problem(&GOOD.replace("class: gold", "class: silver"), "load[0].class", "no service class \"silver\"");
    assert_problem(
        &GOOD.replace("{ model: m, class", "{ model: nobody, class"),
        "load[0].model",
        "no variant serves model \"nobody\"",
    );
    assert_problem(
        &GOOD.replace("targets: [{ model: m,", "targets: [{ model: ghost,"),
        "service_classes[0].targets[0].model",
        "no variant serves",
    );
}

#[test]
fn duplicates_are_rejected() {
    let doubled = GOOD.replace(
        "  - { name: H100, gpus: 16, cost_usd_per_gpu_hour: 4.25 }",
        "  - { name: H100, gpus: 16, cost_usd_per_gpu_hour: 4.25 }\n  - { name: H100, gpus: 8, cost_usd_per_gpu_hour: 4.0 }",
    );
    assert_problem(&doubled, "accelerators[1].name", "duplicate name \"H100\"");
    let twice = GOOD.replace(
        "  - { model: m, class: gold, arrival_rate_rps: 2, input_tokens: 1000, output_tokens: 200 }",
        "  - { model: m, class: gold, arrival_rate_rps: 2, input_tokens: 1000, output_tokens: 200 }\n  - { model: m, class: gold, arrival_rate_rps: 1, input_tokens: 10, output_tokens: 20 }",
    );
    assert_problem(&twice, "load[1]", "duplicate load");
}

#[test]
fn structural_mistakes_are_explained() {
    // A prefill variant without a decode variant for the same model.
    assert_problem(&GOOD.replace("max_batch: 64,", "max_batch: 64, role: prefill,"), "variants", "no decode variant");
    // Minimum replicas that cannot fit the inventory.
    assert_problem(
        &GOOD.replace("max_batch: 64,", "max_batch: 64, min_replicas: 5,"),
        "accelerators[0].gpus",
        "need 20 GPUs",
    );
    // max below min.
    assert_problem(
        &GOOD.replace("max_batch: 64,", "max_batch: 64, min_replicas: 2, max_replicas: 1,"),
        "variants[0].max_replicas",
        "below min_replicas",
    );
    // A variant with neither profile nor measured capacity for a class with load.
    assert_problem(&GOOD.replace(", profile: p }", " }"), "variants[0].profile", "needs a profile");
    // A target with neither TTFT nor ITL.
    assert_problem(
        &GOOD.replace("ttft: { ms: 2000, statistic: p95 }, itl: { ms: 60 }", "itl: null"),
        "service_classes[0].targets[0]",
        "needs a ttft or an itl",
    );
    // An unknown statistic.
    assert!(scenario::load(&GOOD.replace("statistic: p95", "statistic: p97")).is_err());
}

#[test]
fn names_that_look_like_yaml_booleans_stay_names() {
    let s = GOOD.replace("name: H100", "name: Y").replace("accelerator: H100", "accelerator: Y");
    let snapshot = scenario::load(&s).expect("valid");
    assert_eq!(snapshot.accelerators[0].name, "Y");
}

#[test]
fn all_problems_are_reported_at_once() {
    let bad = GOOD
        .replace("gpus_per_replica: 4", "gpus_per_replica: 0")
        .replace("arrival_rate_rps: 2", "arrival_rate_rps: -3");
    assert!(problems(&bad).len() >= 2, "{:#?}", problems(&bad));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Truncated or corrupted documents never panic the loader.
    #[test]
    fn corrupted_scenarios_never_panic(cut in 0usize..GOOD.len(), at in 0usize..GOOD.len(), byte in 32u8..127) {
        let mut text = GOOD.as_bytes().to_vec();
        text[at] = byte;
        text.truncate(cut.max(at + 1));
        if let Ok(text) = String::from_utf8(text) {
            let _ = scenario::load(&text);
        }
    }

    /// Any numbers in the load give either a snapshot or clear problems.
    #[test]
    fn arbitrary_load_numbers_are_validated(rate in proptest::num::f64::ANY, input in proptest::num::f64::ANY) {
        let text = format!(r#"{{"accelerators": [{{"name": "A", "gpus": 8, "cost_usd_per_gpu_hour": 1}}],
            "service_classes": [{{"name": "c", "priority": 1, "targets": [{{"model": "m", "itl": {{"ms": 50}}}}]}}],
            "load": [{{"model": "m", "class": "c", "arrival_rate_rps": {rate:e}, "input_tokens": {input:e}, "output_tokens": 10}}],
            "variants": [{{"name": "v", "model": "m", "accelerator": "A", "gpus_per_replica": 1, "max_batch": 8, "capacity_rps": {{"c": 1}}}}]}}"#);
        match scenario::load(&text) {
            Ok(s) => prop_assert!(s.models[0].demands[0].arrival_rps.is_finite()),
            Err(e) => prop_assert!(!e.problems().is_empty()),
        }
    }
}
