//! The REST API over real HTTP on loopback: dry-run plans, problem documents, limits, OpenAPI.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use allot::api::{ApiSettings, router};

/// Start the API on a free loopback port; the server lives as long as the test's runtime.
async fn start(args: ApiSettings) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback port");
    let addr = listener.local_addr().expect("bound");
    let app = router(&args);
    tokio::spawn(async move { axum::serve(listener, app).await.expect("server runs") });
    addr
}

/// One HTTP/1.1 request on a fresh connection; returns (status, content type, body).
async fn http(addr: SocketAddr, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> (u16, String, String) {
    let (method, path, content_type) = (method.to_string(), path.to_string(), content_type.to_string());
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("write head");
        // The server may answer (413) before reading a large body; ignore a reset while writing.
        let _ = stream.write_all(&body);
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let response = String::from_utf8_lossy(&response).to_string();
        let (head, body) = response.split_once("\r\n\r\n").expect("a full HTTP response");
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status code");
        let content_type = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_string))
            .unwrap_or_default();
        // Bodies may be chunked; the JSON is in the chunk(s), so keep what is between braces.
        let body = match (body.find(['{', '[']), body.rfind(['}', ']'])) {
            (Some(a), Some(b)) if b >= a => body[a..=b].to_string(),
            _ => body.to_string(),
        };
        (status, content_type, body)
    })
    .await
    .expect("request thread")
}

const SCENARIO: &str = r#"{
  "accelerators": [{"name": "A", "gpus": 8, "cost_usd_per_gpu_hour": 2.0}],
  "service_classes": [{"name": "c", "priority": 1, "targets": [{"model": "m", "itl": {"ms": 50}}]}],
  "load": [{"model": "m", "class": "c", "arrival_rate_rps": 3, "input_tokens": 100, "output_tokens": 100}],
  "variants": [{"name": "m-a", "model": "m", "accelerator": "A", "gpus_per_replica": 2, "max_batch": 8,
                "capacity_rps": {"c": 1}}]
}"#;

#[tokio::test]
async fn a_scenario_posted_as_json_comes_back_as_a_plan() {
    let addr = start(ApiSettings::default()).await;
    let (status, content_type, body) = http(addr, "POST", "/v1/plans", "application/json", SCENARIO.into()).await;
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with("application/json"));
    let plan: serde_json::Value = serde_json::from_str(&body).expect("plan JSON");
    assert_eq!(plan["variants"][0]["name"], "m-a");
    assert_eq!(plan["variants"][0]["replicas"], 3);
    assert_eq!(plan["models"][0]["served_fraction"], 1.0);
    assert_eq!(plan["cost_usd_per_hour"], 12.0);
}

#[tokio::test]
async fn a_yaml_body_is_accepted_too() {
    let addr = start(ApiSettings::default()).await;
    let yaml = r#"
accelerators: [{ name: A, gpus: 8, cost_usd_per_gpu_hour: 2.0 }]
service_classes: [{ name: c, priority: 1, targets: [{ model: m, itl: { ms: 50 } }] }]
load: [{ model: m, class: c, arrival_rate_rps: 1, input_tokens: 100, output_tokens: 100 }]
variants: [{ name: m-a, model: m, accelerator: A, gpus_per_replica: 1, max_batch: 8, capacity_rps: { c: 1 } }]
"#;
    let (status, _, body) = http(addr, "POST", "/v1/plans", "application/yaml", yaml.into()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"replicas\":1"), "{body}");
}

#[tokio::test]
async fn a_malformed_body_gets_400_with_a_problem_document() {
    let addr = start(ApiSettings::default()).await;
    let (status, content_type, body) =
        http(addr, "POST", "/v1/plans", "application/json", b"{\"accelerators\": [".to_vec()).await;
    assert_eq!(status, 400);
    assert_eq!(content_type, "application/problem+json");
    let problem: serde_json::Value = serde_json::from_str(&body).expect("problem JSON");
    assert_eq!(problem["status"], 400);
    assert!(problem["problems"][0]["path"].as_str().expect("path").contains("line"));
}

#[tokio::test]
async fn an_invalid_scenario_gets_422_naming_every_field() {
    let addr = start(ApiSettings::default()).await;
    let bad = SCENARIO
        .replace("\"gpus_per_replica\": 2", "\"gpus_per_replica\": 0")
        .replace("\"arrival_rate_rps\": 3", "\"arrival_rate_rps\": -3");
    let (status, content_type, body) = http(addr, "POST", "/v1/plans", "application/json", bad.into()).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(content_type, "application/problem+json");
    let problem: serde_json::Value = serde_json::from_str(&body).expect("problem JSON");
    let paths: Vec<&str> =
        problem["problems"].as_array().expect("list").iter().filter_map(|p| p["path"].as_str()).collect();
    assert!(paths.contains(&"variants[0].gpus_per_replica"), "{paths:?}");
    assert!(paths.contains(&"load[0].arrival_rate_rps"), "{paths:?}");
}

#[tokio::test]
async fn an_oversized_body_gets_413() {
    let addr = start(ApiSettings { max_body_bytes: 1024, ..ApiSettings::default() }).await;
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(4096));
    let (status, content_type, body) = http(addr, "POST", "/v1/plans", "application/json", big.into()).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(content_type, "application/problem+json");
}

#[tokio::test]
async fn health_and_openapi_are_served() {
    let addr = start(ApiSettings::default()).await;
    let (status, _, body) = http(addr, "GET", "/healthz", "text/plain", vec![]).await;
    assert_eq!((status, body.as_str()), (200, "{\"status\":\"ok\"}"));
    let (status, _, body) = http(addr, "GET", "/openapi.json", "text/plain", vec![]).await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).expect("OpenAPI JSON");
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."));
    assert!(doc["paths"]["/v1/plans"]["post"].is_object());
    for schema in ["Scenario", "Plan", "VariantPlan", "ProblemDocument"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "schema {schema} missing");
    }
}

#[tokio::test]
async fn a_slow_plan_gets_504_and_keeps_its_slot_so_the_next_gets_503() {
    // The 500-variant generated fleet takes well over 0.1 s to plan in any build.
    let fleet = allot::synthetic::fleet(allot::synthetic::FleetSpec::MEDIUM);
    let body = serde_json::to_vec(&fleet).expect("scenario JSON");
    let addr = start(ApiSettings { plan_deadline_s: 0.1, max_concurrent_plans: 1, ..ApiSettings::default() }).await;
    let (status, content_type, problem) = http(addr, "POST", "/v1/plans", "application/json", body.clone()).await;
    assert_eq!(status, 504, "{problem}");
    assert_eq!(content_type, "application/problem+json");
    // The timed-out solve is still running and holds the only slot.
    let (status, _, problem) = http(addr, "POST", "/v1/plans", "application/json", body).await;
    assert_eq!(status, 503, "{problem}");
    assert!(problem.contains("too many plans"), "{problem}");
}
