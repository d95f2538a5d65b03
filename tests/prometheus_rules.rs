//! The Prometheus rules and the Grafana dashboard in `deploy/`: syntax (promtool), rule math
//! (promtool's unit tests in rules_test.yaml), the Operator wrapper, and the dashboard's shape and
//! metric names. Every expression is also evaluated by a real Prometheus, so a typo is a failure
//! here rather than an empty panel in production. Needs `promtool` and `prometheus` (`.ci/setup`).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::exprs::{self, Expr, dashboard_exprs, known_metric_names, metric_names, rule_exprs, substitute};
use support::prometheus::PrometheusProcess;

fn promtool(args: &[&str]) -> String {
    let binary = std::env::var("PROMTOOL").unwrap_or_else(|_| "/usr/bin/promtool".to_string());
    let output = Command::new(&binary)
        .args(args)
        .current_dir(exprs::repo_path("deploy/prometheus"))
        .output()
        .unwrap_or_else(|e| panic!("running {binary} (install Debian's prometheus package: .ci/setup): {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn every_rule_file_passes_promtool_check() {
    let dir = exprs::repo_path("deploy/prometheus");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("deploy/prometheus exists") {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        // The unit-test file and the Operator wrapper are not plain rule files.
        if !name.ends_with(".yaml") || name == "rules_test.yaml" || name == "prometheusrule.yaml" {
            continue;
        }
        let text = promtool(&["check", "rules", &name]);
        assert!(text.contains("SUCCESS"), "{name}: {text}");
        checked += 1;
    }
    assert!(checked >= 1, "no rule file in {}", dir.display());
}

#[test]
fn rule_math_passes_promtool_unit_tests() {
    let text = promtool(&["test", "rules", "rules_test.yaml"]);
    assert!(text.contains("SUCCESS") && !text.contains("FAILED"), "{text}");
}

#[test]
fn prometheusrule_wraps_exactly_the_rule_file_groups() {
    let wrapper_path = exprs::repo_path("deploy/prometheus/prometheusrule.yaml");
    let text = std::fs::read_to_string(&wrapper_path).expect("prometheusrule.yaml exists");
    let wrapper: Value = serde_saphyr::from_str(&text).expect("prometheusrule.yaml is YAML");
    assert_eq!(wrapper["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(wrapper["kind"], "PrometheusRule");
    let groups = exprs::rule_groups(&exprs::rules_path()).expect("rules.yaml parses");
    assert!(groups.as_array().is_some_and(|g| !g.is_empty()), "rules.yaml has groups");
    assert_eq!(wrapper["spec"]["groups"], groups, "prometheusrule.yaml drifted from rules.yaml");
}

#[test]
fn dashboard_panels_use_the_datasource_variable_and_known_metrics() {
    let dashboard = exprs::dashboard().expect("dashboard parses");
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 39), "schemaVersion 39+");
    let variables = dashboard["templating"]["list"].as_array().expect("templating variables");
    let variable = |name: &str| variables.iter().find(|v| v["name"] == name);
    assert_eq!(variable("datasource").map(|v| v["type"].clone()), Some(Value::from("datasource")));
    for name in ["model", "class"] {
        let v = variable(name).unwrap_or_else(|| panic!("variable {name}"));
        assert_eq!(v["datasource"]["uid"], "${datasource}", "variable {name}");
        assert!(v["definition"].as_str().is_some_and(|d| d.starts_with("label_values(")), "variable {name}");
    }

    let known = known_metric_names().expect("rules.yaml parses");
    let mut panels_with_queries = 0;
    for panel in exprs::panels(&dashboard) {
        if panel["type"] == "row" {
            continue;
        }
        let title = &panel["title"];
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {title}");
        let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
        let targets = targets.unwrap_or_else(|| panic!("panel {title} has no targets"));
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "panel {title} target");
        }
        panels_with_queries += 1;
    }
    assert!(panels_with_queries >= 10, "only {panels_with_queries} panels");
    let annotation = dashboard["annotations"]["list"].as_array().into_iter().flatten().find(|a| a["expr"].is_string());
    let annotation = annotation.expect("a plan-change annotation");
    assert_eq!(annotation["datasource"]["uid"], "${datasource}");

    for expr in dashboard_exprs().expect("dashboard parses") {
        assert!(!expr.raw.trim().is_empty(), "{}: empty expr", expr.source);
        let names = metric_names(&expr.raw);
        assert!(!names.is_empty(), "{}: reads no metric: {}", expr.source, expr.raw);
        let unknown: Vec<_> = names.difference(&known).collect();
        assert!(unknown.is_empty(), "{}: unknown metrics {unknown:?} in {}", expr.source, expr.raw);
        // Variables can be multi-valued or "All" (.*): only a regex matcher takes them.
        for (at, _) in expr.raw.match_indices("\"$") {
            assert!(expr.raw[..at].ends_with("=~"), "{}: a variable outside =~ in {}", expr.source, expr.raw);
        }
    }
}

#[test]
fn dashboard_answers_the_operator_questions() {
    let used: std::collections::BTreeSet<String> =
        dashboard_exprs().expect("dashboard parses").iter().flat_map(|e| metric_names(&e.raw)).collect();
    for metric in [
        "allot:slo_attainment:ratio_rate5m",
        "allot_predicted_slo_attainment_ratio",
        "allot_slo_objective_ratio",
        "allot_desired_replicas",
        "allot_current_replicas",
        "allot_ready_replicas",
        "allot_pending_replicas",
        "allot_gpus",
        "allot_cost_dollars_per_hour",
        "allot_unmet_demand_requests_per_second",
        "allot_solver_time_seconds",
        "allot_solver_status",
        "allot_fair_share_active",
        "allot_metric_age_seconds",
        "allot_plan_changes_total",
        "allot_model_error_ratio",
        "allot_model_correction_ratio",
        "allot_model_calibration_confidence_ratio",
        "allot_forecast_requests_per_second",
        "allot_panic",
    ] {
        assert!(used.contains(metric), "no panel shows {metric}");
    }
}

#[test]
fn rules_read_only_known_metrics() {
    let known = known_metric_names().expect("rules.yaml parses");
    for expr in rule_exprs().expect("rules.yaml parses") {
        let unknown: Vec<_> = metric_names(&expr.raw).into_iter().filter(|n| !known.contains(n)).collect();
        assert!(unknown.is_empty(), "{}: unknown metrics {unknown:?}", expr.source);
    }
}

#[test]
fn grafana_variables_become_match_all_and_durations() {
    assert_eq!(
        substitute(r#"rate(x{model=~"$model",class=~"${class}"}[$__rate_interval])"#),
        r#"rate(x{model=~".*",class=~".*"}[1m])"#
    );
    let back_reference = r#"label_replace(x, "m", "$1", "model_name", "(.*)$")"#;
    assert_eq!(substitute(back_reference), back_reference);
    assert_eq!(substitute("sum(rate(x[${__interval}])) offset $__range"), "sum(rate(x[1m])) offset 5m");
}

#[test]
fn metric_names_skip_functions_labels_and_keywords() {
    let expr = r#"sum by (model, le) (rate(vllm:a_bucket{le="0.25", model=~"x|y"}[5m] offset 1m))
        / on (model) group_left (class) max without (pod) (b) > bool 0.5 and on () absent(c) or time() - d"#;
    let names: Vec<String> = metric_names(expr).into_iter().collect();
    assert_eq!(names, ["b", "c", "d", "vllm:a_bucket"]);
}

/// Every expression, with variables substituted, is valid PromQL to a real Prometheus, and the
/// rule files load into it.
#[tokio::test]
async fn every_expression_evaluates_on_a_real_prometheus() {
    let rules = exprs::rules_path();
    let prometheus = PrometheusProcess::start(&[], &[Path::new(&rules)]).await.expect("prometheus starts with rules");
    let all: Vec<Expr> =
        dashboard_exprs().expect("dashboard parses").into_iter().chain(rule_exprs().expect("rules parse")).collect();
    assert!(all.len() >= 30, "only {} expressions", all.len());
    for expr in &all {
        if let Err(e) = prometheus.query(&expr.promql).await {
            panic!("{}: {e:#}\n{}", expr.source, expr.promql);
        }
    }
    // The rules were loaded and evaluated (no rule group in an error state).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response: Value = reqwest::get(format!("{}/api/v1/rules", prometheus.url))
            .await
            .expect("rules API")
            .json()
            .await
            .expect("rules JSON");
        let rules: Vec<&Value> = response["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        assert_eq!(rules.len(), rule_exprs().expect("rules parse").len(), "rules loaded");
        assert!(rules.iter().all(|r| r["health"] != "err"), "a rule failed: {rules:?}");
        if rules.iter().all(|r| r["health"] == "ok") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "rules not evaluated: {rules:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
