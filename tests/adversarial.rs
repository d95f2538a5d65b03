//! An adversarial battery: malformed, hostile and absurd input to the scenario reader and the
//! command line. Each case gets a clear error naming what is wrong (or, for the command line,
//! exit code 2 naming the flag), never a panic, a hang or a raw control character on the terminal.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use allot::plan::PlanMode;
use allot::scenario::{self, LoadError, MAX_LISTED_PROBLEMS, MAX_SCENARIO_BYTES};

const GOOD: &str = r#"{
  "accelerators": [{"name": "A", "gpus": 8, "cost_usd_per_gpu_hour": 2.0}],
  "service_classes": [{"name": "c", "priority": 1, "targets": [{"model": "m", "itl": {"ms": 50}}]}],
  "load": [{"model": "m", "class": "c", "arrival_rate_rps": 3, "input_tokens": 100, "output_tokens": 100}],
  "variants": [{"name": "m-a", "model": "m", "accelerator": "A", "gpus_per_replica": 2, "max_batch": 8, "profile": "p"}],
  "profiles": [{"name": "p", "alpha_ms": 28.7, "beta_ms": 0.34, "gamma_ms": 7.5, "delta_ms": 0.107}]
}"#;

/// "path: message" of every problem, asserting the text is refused.
fn refused(text: &str) -> Vec<String> {
    match scenario::load(text) {
        Ok(_) => panic!("should be refused:\n{}", &text[..text.len().min(300)]),
        Err(e) => {
            let problems: Vec<String> = e.problems().iter().map(|p| format!("{}: {}", p.path, p.message)).collect();
            assert!(!problems.is_empty());
            problems
        }
    }
}

fn assert_refused_at(text: &str, path: &str, words: &str) {
    let found = refused(text);
    assert!(
        found.iter().any(|p| p.starts_with(path) && p.contains(words)),
        "expected a problem at {path:?} with {words:?}, got {found:#?}"
    );
}

#[test]
fn the_reference_scenario_is_accepted() {
    let s = scenario::load(GOOD).expect("valid");
    assert_eq!(s.variants.len(), 1);
}

#[test]
fn empty_documents_are_refused_plainly() {
    for text in ["", "   \n\t", "---\n", "null", "{}", "[]", "42", "\"text\""] {
        let found = refused(text);
        assert!(found.iter().all(|p| !p.contains("panicked")), "{text:?}: {found:#?}");
    }
    assert_refused_at("", "(document)", "empty document");
    assert_refused_at("{}", "(document)", "missing field");
}

#[test]
fn non_finite_and_out_of_range_numbers_are_refused() {
    // JSON has no NaN or infinity; a number too large for a double is a parse error.
    assert!(matches!(scenario::load(&GOOD.replace("\"gpus\": 8", "\"gpus\": NaN")), Err(LoadError::Parse { .. })));
    assert!(matches!(scenario::load(&GOOD.replace("\"gpus\": 8", "\"gpus\": 1e999")), Err(LoadError::Parse { .. })));
    // YAML's .nan and .inf are refused by the reader.
    for v in [".nan", ".inf", "-.inf"] {
        let yaml = format!(
            "accelerators: [{{ name: A, gpus: 8, cost_usd_per_gpu_hour: {v} }}]\nservice_classes: []\nvariants: []\n"
        );
        assert!(refused(&yaml).iter().any(|p| p.contains("non-finite") || p.contains("finite")), "{v}");
    }
    assert_refused_at(
        &GOOD.replace("\"arrival_rate_rps\": 3", "\"arrival_rate_rps\": -3"),
        "load[0].arrival_rate_rps",
        "≥ 0",
    );
    assert_refused_at(
        &GOOD.replace("\"arrival_rate_rps\": 3", "\"arrival_rate_rps\": 1e300"),
        "load[0].arrival_rate_rps",
        "≤",
    );
    assert_refused_at(&GOOD.replace("\"gpus\": 8", "\"gpus\": 10000000000"), "accelerators[0].gpus", "u32");
    assert_refused_at(&GOOD.replace("\"gpus\": 8", "\"gpus\": -8"), "accelerators[0].gpus", "");
    assert_refused_at(
        &GOOD.replace("\"gpus_per_replica\": 2", "\"gpus_per_replica\": 0"),
        "variants[0].gpus_per_replica",
        "between 1",
    );
    assert_refused_at(&GOOD.replace("\"alpha_ms\": 28.7", "\"alpha_ms\": 0"), "profiles[0].alpha_ms", "> 0");
}

#[test]
fn a_whole_number_written_as_a_float_is_an_integer() {
    let s = scenario::load(&GOOD.replace("\"gpus\": 8", "\"gpus\": 8.0")).expect("8.0 is 8, as JSON Schema counts it");
    assert_eq!(s.accelerators[0].gpus, 8);
    assert_refused_at(&GOOD.replace("\"gpus\": 8", "\"gpus\": 8.5"), "accelerators[0].gpus", "floating point");
}

#[test]
fn wrong_types_name_the_field_that_has_them() {
    // The profile's fields were once flattened, and a wrong alpha was reported at delta_ms.
    assert_refused_at(
        &GOOD.replace("\"alpha_ms\": 28.7", "\"alpha_ms\": \"43.4\""),
        "profiles[0].alpha_ms",
        "invalid type",
    );
    assert_refused_at(&GOOD.replace("\"gpus\": 8", "\"gpus\": \"eight\""), "accelerators[0].gpus", "invalid type");
    assert_refused_at(&GOOD.replace("\"variants\": [", "\"variants\": {\"x\": "), "line", "");
    assert_refused_at(
        &GOOD.replace("\"priority\": 1", "\"priority\": true"),
        "service_classes[0].priority",
        "invalid type",
    );
    // A profile key that does not exist is named (flattening let it through).
    assert_refused_at(
        &GOOD.replace("\"delta_ms\": 0.107", "\"delta_ms\": 0.107, \"deltaa_ms\": 1"),
        "profiles[0]",
        "deltaa_ms",
    );
    // YAML names the path too.
    let yaml = "accelerators: [{ name: A, gpus: many, cost_usd_per_gpu_hour: 1 }]\nservice_classes: []\nvariants: []\n";
    assert_refused_at(yaml, "accelerators[0].gpus", "invalid type");
}

#[test]
fn duplicate_keys_are_refused_in_json_and_yaml() {
    // A duplicate once silently won: cost 2 → 345 $/h.
    assert_refused_at(
        &GOOD.replace(
            "\"cost_usd_per_gpu_hour\": 2.0",
            "\"cost_usd_per_gpu_hour\": 2.0, \"cost_usd_per_gpu_hour\": 345",
        ),
        "accelerators[0].cost_usd_per_gpu_hour",
        "duplicate key",
    );
    let yaml =
        "accelerators: [{ name: A, gpus: 8, gpus: 9, cost_usd_per_gpu_hour: 1 }]\nservice_classes: []\nvariants: []\n";
    assert!(refused(yaml).iter().any(|p| p.to_lowercase().contains("duplicate")), "{:#?}", refused(yaml));
}

#[test]
fn deep_nesting_is_refused_without_a_stack_overflow() {
    let json = format!("{{\"name\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(refused(&json).iter().any(|p| p.contains("nested deeper than 32")), "{:#?}", refused(&json));
    let yaml = format!("name: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    refused(&yaml);
    let yaml: String = (0..1000).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
    refused(&yaml);
}

#[test]
fn a_billion_laughs_is_refused_quickly() {
    let mut yaml =
        String::from("a: &a [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let (prev, name) = (w[0], w[1]);
        yaml.push_str(&format!("{name}: &{name} [{}]\n", vec![format!("*{prev}"); 9].join(", ")));
    }
    let started = Instant::now();
    refused(&yaml);
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[test]
fn control_characters_in_names_are_refused() {
    for bad in ["\\u001b[31mred", "two\\nlines", "bell\\u0007", "nul\\u0000"] {
        let text = GOOD.replace("\"name\": \"m-a\"", &format!("\"name\": \"{bad}\""));
        assert_refused_at(&text, "variants[0].name", "control characters");
    }
    assert_refused_at(&GOOD.replace("\"name\": \"A\"", "\"name\": \"A\\u009b\""), "accelerators[0].name", "control");
    let named = GOOD.replacen('{', "{\"name\": \"fleet\\u001b]0;pwned\\u0007\",", 1);
    assert_refused_at(&named, "name", "control characters");
    // Printable Unicode is fine.
    let unicode = GOOD.replace("\"name\": \"m-a\"", "\"name\": \"modèle-ä\"");
    scenario::load(&unicode).expect("printable Unicode names are names");
}

#[test]
fn names_longer_than_253_characters_are_refused() {
    let long = "x".repeat(254);
    assert_refused_at(&GOOD.replace("\"name\": \"m-a\"", &format!("\"name\": \"{long}\"")), "variants[0].name", "253");
    // 253 characters of two bytes each are still 253 characters.
    let wide = "é".repeat(253);
    scenario::load(&GOOD.replace("\"name\": \"m-a\"", &format!("\"name\": \"{wide}\""))).expect("253 characters");
}

#[test]
fn hundreds_of_thousands_of_duplicates_list_a_bounded_number_of_problems() {
    let one = r#"{"name": "A", "gpus": 8, "cost_usd_per_gpu_hour": 2.0}"#;
    let many = vec![one; 300_000].join(",");
    let text = GOOD.replace(&format!("[{one}]"), &format!("[{many}]"));
    let e = scenario::load(&text).expect_err("duplicates");
    let problems = e.problems();
    assert_eq!(problems.len(), MAX_LISTED_PROBLEMS + 1);
    let last = problems.last().expect("summary");
    assert_eq!(last.path, "(more)");
    assert!(last.message.contains("more problems not listed"), "{last:?}");
    assert!(e.to_string().len() < 100_000, "{} bytes of errors", e.to_string().len());
}

#[test]
fn a_text_above_the_size_limit_is_refused_before_parsing() {
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(MAX_SCENARIO_BYTES));
    let started = Instant::now();
    assert_refused_at(&huge, "(document)", "bytes");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn yaml_and_json_accept_the_same_large_scenario() {
    // 20,000 variants: above serde-saphyr's default node budget, far below the byte limit.
    let mut variants = Vec::new();
    for i in 0..20_000 {
        variants.push(format!(
            "{{\"name\": \"v{i}\", \"model\": \"m\", \"accelerator\": \"A\", \"gpus_per_replica\": 1, \"max_batch\": 8, \"profile\": \"p\"}}"
        ));
    }
    let json = GOOD.replace(
        r#"[{"name": "m-a", "model": "m", "accelerator": "A", "gpus_per_replica": 2, "max_batch": 8, "profile": "p"}]"#,
        &format!("[{}]", variants.join(",")),
    );
    let from_json = scenario::parse(&json).expect("JSON");
    let yaml = serde_saphyr::to_string(&from_json).expect("as YAML");
    let from_yaml = scenario::parse(&yaml).expect("the same scenario as YAML");
    assert_eq!(from_yaml.variants.len(), 20_000);
    assert_eq!(from_json, from_yaml);
}

#[test]
fn yaml_follows_the_core_schema() {
    // `Y` and `no` are strings, as in YAML 1.2; an unquoted number is not a name.
    let yaml = "accelerators: [{ name: Y, gpus: 8, cost_usd_per_gpu_hour: 1 }]\n\
                service_classes: [{ name: no, priority: 1, targets: [{ model: m, itl: { ms: 50 } }] }]\n\
                variants: [{ name: v, model: m, accelerator: Y, gpus_per_replica: 1, max_batch: 8, capacity_rps: { no: 1 } }]\n";
    let s = scenario::load(yaml).expect("names that look like YAML 1.1 booleans");
    assert_eq!((s.accelerators[0].name.as_str(), s.classes[0].name.as_str()), ("Y", "no"));
    refused(&yaml.replace("name: Y", "name: 8").replace("accelerator: Y", "accelerator: 8"));
    scenario::load(&yaml.replace("name: Y", "name: \"8\"").replace("accelerator: Y", "accelerator: \"8\""))
        .expect("quoted");
}

#[test]
fn truncated_and_corrupted_documents_never_panic() {
    for cut in (0..GOOD.len()).step_by(7) {
        let _ = scenario::load(&GOOD[..cut]);
    }
    for bytes in [&b"\xff\xfe{"[..], b"{\"a\": \"\\ud800\"}", b"\x00\x01\x02", b"{\"accelerators\": [{\"name\": \"A\"}"]
    {
        let _ = scenario::load(&String::from_utf8_lossy(bytes));
    }
}

#[test]
fn a_scenario_where_nothing_is_servable_says_so() {
    let text = GOOD.replace("\"profile\": \"p\"", "\"capacity_rps\": {\"c\": 0}");
    let snapshot = scenario::load(&text).expect("valid");
    let plan = allot::optimize::plan(&snapshot);
    assert_eq!(plan.mode, PlanMode::NothingServable, "{plan:#?}");
    assert!(plan.warnings.iter().any(|w| w.contains("nothing is servable")), "{:#?}", plan.warnings);
    assert_eq!(serde_json::to_value(plan.mode).expect("JSON"), "nothing_servable");
}

/// Run the binary; returns (exit code, stderr).
fn allot(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("allot runs");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).to_string())
}

#[test]
fn out_of_range_flags_exit_2_naming_the_flag_and_bounds() {
    let cases: &[(&[&str], &str)] = &[
        (&["serve", "--plan-deadline-s", "inf"], "--plan-deadline-s"),
        (&["serve", "--plan-deadline-s", "1e20"], "--plan-deadline-s"),
        (&["serve", "--plan-deadline-s", "nan"], "--plan-deadline-s"),
        (&["serve", "--plan-deadline-s", "-5"], "--plan-deadline-s"),
        (&["serve", "--max-body-bytes", "0"], "--max-body-bytes"),
        (&["serve", "--max-concurrent-plans", "0"], "--max-concurrent-plans"),
        (&["serve", "--simulate", "--duration-s", "1e10"], "--duration-s"),
        (&["serve", "--simulate", "--duration-s", "nan"], "--duration-s"),
        (&["serve", "--simulate", "--interval-s", "1e-9"], "--interval-s"),
        (&["serve", "--simulate", "--rate-scale", "-1"], "--rate-scale"),
        (&["serve", "--simulate", "--startup-s", "-100"], "--startup-s"),
        (&["serve", "--simulate", "--speed", "0"], "--speed"),
        (&["serve", "--log-level", "allot=loud=very"], "--log-level"),
        (&["serve", "--cluster", "--watch-namespace", "Prod"], "--watch-namespace"),
        (&["serve", "--cluster", "--config-namespace", ""], "--config-namespace"),
        (&["serve", "--cluster", "--lease-namespace", "a.b"], "--lease-namespace"),
        (&["serve", "--cluster", "--lease-name", "allot_leader"], "--lease-name"),
        (&["serve", "--cluster", "--allot-configmap", "a..b"], "--allot-configmap"),
        (&["serve", "--cluster", "--prometheus-url", "prometheus:9090"], "--prometheus-url"),
        (&["serve", "--cluster", "--identity", "allot\n0"], "--identity"),
        (&["serve", "--cluster", "--interval", "0s"], "--interval"),
        (&["simulate", "-f", "x", "--trace", "y", "--control-period-s", "0"], "--control-period-s"),
        (&["simulate", "-f", "x", "--trace", "y", "--window-s", "inf"], "--window-s"),
        (&["fit", "--data", "x", "--min-r2", "2"], "--min-r2"),
        (&["fit", "--data", "x", "--tp", "0"], "--tp"),
    ];
    for (args, flag) in cases {
        let (code, stderr) = allot(args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn out_of_range_environment_variables_exit_2_naming_them() {
    let cases = [
        ("ALLOT_PLAN_DEADLINE_S", "inf"),
        ("ALLOT_PLAN_DEADLINE_S", "1e20"),
        ("ALLOT_MAX_BODY_BYTES", "0"),
        ("ALLOT_MAX_CONCURRENT_PLANS", "-1"),
        ("ALLOT_INTERVAL", "0s"),
        ("ALLOT_LOG_LEVEL", "=="),
        ("RUST_LOG", "allot=loud=very"),
        ("ALLOT_WATCH_NAMESPACE", "Team A"),
        ("ALLOT_SERVICE_CLASSES_CONFIGMAP", "-classes"),
        ("PROMETHEUS_URL", "ftp://prometheus"),
        ("POD_NAME", "allot\u{1b}[31m"),
        ("ALLOT_DIRECT_SCALING", "maybe"),
    ];
    for (name, value) in cases {
        let (code, stderr) = allot(&["serve", "--listen", "127.0.0.1:0"], &[(name, value)]);
        assert_eq!(code, Some(2), "{name}={value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}={value}: {stderr}");
    }
    let (code, stderr) = allot(&["plan"], &[("ALLOT_HIGHS_OPTIONS", "presolve")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("ALLOT_HIGHS_OPTIONS") || stderr.contains("--highs-options"), "{stderr}");
}

#[test]
fn the_interval_at_the_chosen_speed_must_leave_time_between_cycles() {
    let (code, stderr) =
        allot(&["serve", "--listen", "127.0.0.1:0", "--simulate", "--interval-s", "1", "--speed", "1000"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--interval-s") && stderr.contains("wall-clock"), "{stderr}");
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    for args in [&["plan"][..], &["plan", "--format", "json"], &["generate", "--size", "small"], &["crds"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_allot"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("allot runs");
        // `| head -c1`: read one byte and close the pipe.
        let mut stdout = child.stdout.take().expect("piped");
        let mut one = [0u8; 1];
        stdout.read_exact(&mut one).expect("some output");
        drop(stdout);
        let output = child.wait_with_output().expect("exits");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

#[test]
fn error_messages_do_not_carry_raw_control_characters_to_the_terminal() {
    let dir = std::env::temp_dir().join(format!("allot-adversarial-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("hostile.json");
    std::fs::write(&file, GOOD.replace("\"name\": \"m-a\"", "\"name\": \"\\u001b[2J\\u001b]0;owned\\u0007\""))
        .expect("write");
    let (code, stderr) = allot(&["plan", "-f", file.to_str().expect("utf-8 path")], &[]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("variants[0].name"), "{stderr}");
    assert!(!stderr.chars().any(|c| c.is_control() && c != '\n'), "{stderr:?}");
}
