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

fn problem(body: &str) -> serde_json::Value {
    let doc: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("problem JSON ({e}): {body}"));
    assert!(doc["type"].as_str().is_some_and(|t| t.starts_with("https://allot.dev/problems/")), "{doc}");
    assert!(doc["title"].is_string() && doc["status"].is_u64() && doc["detail"].is_string(), "{doc}");
    doc
}

#[tokio::test]
async fn unknown_paths_and_methods_get_problem_documents() {
    let addr = start(ApiSettings::default()).await;
    let (status, content_type, body) = http(addr, "GET", "/v2/nothing", "text/plain", vec![]).await;
    assert_eq!((status, content_type.as_str()), (404, "application/problem+json"));
    assert!(problem(&body)["detail"].as_str().expect("detail").contains("/v2/nothing"));
    let (status, content_type, body) = http(addr, "DELETE", "/v1/plans", "text/plain", vec![]).await;
    assert_eq!((status, content_type.as_str()), (405, "application/problem+json"));
    assert_eq!(problem(&body)["status"], 405);
}

#[tokio::test]
async fn a_405_still_says_which_methods_are_allowed() {
    let addr = start(ApiSettings::default()).await;
    let head = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream
            .write_all(b"PUT /v1/plans HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.to_ascii_lowercase()
    })
    .await
    .expect("request");
    assert!(head.starts_with("http/1.1 405"), "{head}");
    assert!(head.contains("\r\nallow: post\r\n"), "{head}");
}

#[tokio::test]
async fn a_body_that_is_neither_json_nor_yaml_gets_415() {
    let addr = start(ApiSettings::default()).await;
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"] {
        let (status, got, body) = http(addr, "POST", "/v1/plans", content_type, SCENARIO.into()).await;
        assert_eq!((status, got.as_str()), (415, "application/problem+json"), "{content_type}: {body}");
        assert!(problem(&body)["detail"].as_str().expect("detail").contains("application/json"), "{body}");
    }
    // The media types the API reads, with parameters and in any case.
    for content_type in ["application/json", "Application/JSON; charset=UTF-8", "application/yaml", "text/yaml"] {
        let (status, _, body) = http(addr, "POST", "/v1/plans", content_type, SCENARIO.into()).await;
        assert_eq!(status, 200, "{content_type}: {body}");
    }
}

#[tokio::test]
async fn a_json_content_type_with_a_yaml_body_is_malformed() {
    let addr = start(ApiSettings::default()).await;
    let (status, _, body) = http(addr, "POST", "/v1/plans", "application/json", b"accelerators: []".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    assert!(problem(&body)["detail"].as_str().expect("detail").contains("not a JSON object"));
}

#[tokio::test]
async fn a_duplicate_key_is_refused_at_its_path() {
    let addr = start(ApiSettings::default()).await;
    let doubled = SCENARIO.replace("\"gpus\": 8,", "\"gpus\": 8, \"gpus\": 800,");
    let (status, _, body) = http(addr, "POST", "/v1/plans", "application/json", doubled.into()).await;
    assert_eq!(status, 400, "{body}");
    let doc = problem(&body);
    assert_eq!(doc["problems"][0]["path"], "accelerators[0].gpus", "{doc}");
    assert!(doc["problems"][0]["message"].as_str().expect("message").contains("duplicate key"), "{doc}");
}

#[tokio::test]
async fn every_documented_body_field_has_bounds_in_the_schema() {
    let doc = serde_json::to_value(<allot::api::ApiDoc as utoipa::OpenApi>::openapi()).expect("JSON");
    let schemas = &doc["components"]["schemas"];
    let field = |schema: &str, name: &str| schemas[schema]["properties"][name].clone();
    assert_eq!(field("AcceleratorSpec", "gpus")["maximum"], 1_000_000);
    assert_eq!(field("AcceleratorSpec", "cost_usd_per_gpu_hour")["maximum"], 1000);
    assert_eq!(field("ServiceClassSpec", "priority")["minimum"], 1);
    assert_eq!(field("VariantSpec", "gpus_per_replica")["maximum"], 1024);
    // Token counts are a bounded mean or a distribution whose fields are bounded.
    assert_eq!(schemas["TokenCountSpec"]["oneOf"][0]["minimum"], 1, "{}", schemas["TokenCountSpec"]);
    assert_eq!(schemas["TokenDistributionSpec"]["properties"]["p90"]["minimum"], 1);
    assert!(field("LoadSpec", "input_tokens").to_string().contains("TokenCountSpec"));
    assert_eq!(field("ProfileSpec", "alpha_ms")["exclusiveMinimum"], 0);
    assert_eq!(schemas["ProfileSpec"]["additionalProperties"], false, "profiles are closed like every other object");
    assert_eq!(field("Scenario", "variants")["minItems"], 1);
    assert!(field("VariantSpec", "name")["pattern"].as_str().is_some_and(|p| p.contains("u001f")));
    // The body is a scenario or a what-if, as JSON or YAML.
    let body = &doc["paths"]["/v1/plans"]["post"]["requestBody"]["content"];
    assert!(body["application/json"].is_object() && body["application/yaml"].is_object(), "{body}");
    assert_eq!(schemas["PlanRequest"]["oneOf"].as_array().map(Vec::len), Some(2));
}

/// The API under the real server with short timeouts, on a free loopback port.
async fn start_with_timeouts(header_s: u64, body_s: u64) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback port");
    let addr = listener.local_addr().expect("bound");
    let app = router(&ApiSettings::default());
    let timeouts = allot::api::server::Timeouts {
        header_read: Duration::from_secs(header_s),
        body_read: Duration::from_secs(body_s),
    };
    tokio::spawn(async move {
        allot::api::server::serve_with(listener, app, std::future::pending(), timeouts).await.expect("serves")
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_clients_are_disconnected_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = start_with_timeouts(1, 1).await;
    let started = std::time::Instant::now();
    let mut clients = Vec::new();
    for i in 0..1000 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // Half send an unfinished request head, half nothing at all.
        if i % 2 == 0 {
            stream.write_all(b"POST /v1/plans HTTP/1.1\r\nHost: x\r\n").await.expect("write");
        }
        clients.push(stream);
    }
    let mut closed = 0;
    for mut stream in clients {
        let mut buf = Vec::new();
        // The server closes (EOF) or answers 408; either way the connection ends.
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 1000, "every slow connection is closed by the server");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    // And the server still answers.
    let (status, _, _) = http(addr, "GET", "/healthz", "text/plain", vec![]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = start_with_timeouts(5, 1).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"POST /v1/plans HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"acc")
        .await
        .expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the server answers within the body timeout")
        .expect("read");
    let response = String::from_utf8_lossy(&response).to_string();
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("application/problem+json"), "{response}");
}

#[tokio::test]
async fn a_deeply_nested_body_is_refused_and_the_server_lives_on() {
    let addr = start(ApiSettings::default()).await;
    let deep = format!("{{\"name\": {}{}}}", "[".repeat(50_000), "]".repeat(50_000));
    let (status, _, body) = http(addr, "POST", "/v1/plans", "application/json", deep.into()).await;
    assert_eq!(status, 400, "{body}");
    assert!(problem(&body)["detail"].as_str().expect("detail").contains("nested deeper"), "{body}");
    let yaml = format!("name: {}{}\n", "[".repeat(5_000), "]".repeat(5_000));
    let (status, _, _) = http(addr, "POST", "/v1/plans", "application/yaml", yaml.into()).await;
    assert_eq!(status, 400);
    let (status, _, _) = http(addr, "GET", "/healthz", "text/plain", vec![]).await;
    assert_eq!(status, 200);
}

/// [`SCENARIO`] with a bundled latency profile instead of a measured capacity.
const PROFILED: &str = r#"{
  "accelerators": [{"name": "A", "gpus": 8, "cost_usd_per_gpu_hour": 2.0}],
  "service_classes": [{"name": "c", "priority": 1, "targets": [{"model": "m", "ttft": {"ms": 2000, "statistic": "p90"}, "itl": {"ms": 80}}]}],
  "load": [{"model": "m", "class": "c", "arrival_rate_rps": 3, "input_tokens": 1155, "output_tokens": 211}],
  "variants": [{"name": "m-a", "model": "m", "accelerator": "A", "gpus_per_replica": 4, "max_batch": 64,
                "profile": "llama2-70b/a100-80gb/tp4"}]
}"#;

#[tokio::test]
async fn predict_answers_latency_per_rate_and_capacity_per_class() {
    let addr = start(ApiSettings::default()).await;
    let body = format!(r#"{{"scenario": {PROFILED}, "rates_rps": [1, 3, 1000], "replicas": 2}}"#);
    let (status, _, text) = http(addr, "POST", "/v1/predict", "application/json", body.into()).await;
    assert_eq!(status, 200, "{text}");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let v = &doc[0];
    assert_eq!(v["replicas"], 2);
    assert!(v["capacities"][0]["rps"].as_f64().is_some_and(|r| r > 0.0), "{v}");
    let points = v["points"].as_array().expect("points");
    assert_eq!(points.len(), 3);
    assert_eq!(points[1]["per_replica_rps"], 1.5);
    let ttft = |i: usize| points[i]["metrics"]["ttft"]["p90_ms"].as_f64().expect("p90 TTFT");
    assert!(ttft(0) > 0.0 && ttft(0) <= ttft(1), "{text}");
    assert!(points[1]["metrics"]["itl"]["mean_ms"].as_f64().is_some());
    assert_eq!(points[2]["stable"], false);
    assert!(points[2]["metrics"].is_null());
    // YAML bodies too, and bad requests are problems, not panics.
    let yaml = format!("scenario: {PROFILED}\nrates_rps: [2]\n");
    let (status, _, text) = http(addr, "POST", "/v1/predict", "application/yaml", yaml.into()).await;
    assert_eq!(status, 200, "{text}");
    let bad = format!(r#"{{"scenario": {PROFILED}, "rates_rps": [-1]}}"#);
    let (status, _, text) = http(addr, "POST", "/v1/predict", "application/json", bad.into()).await;
    assert_eq!(status, 422, "{text}");
    assert!(problem(&text)["detail"].as_str().expect("detail").contains("rate 0 is -1"), "{text}");
    let unknown = format!(r#"{{"scenario": {PROFILED}, "variant": "nope"}}"#);
    let (status, _, text) = http(addr, "POST", "/v1/predict", "application/json", unknown.into()).await;
    assert_eq!(status, 422, "{text}");
    let (status, _, text) =
        http(addr, "POST", "/v1/predict", "application/json", b"{\"rates_rps\": [1]}".to_vec()).await;
    assert_eq!(status, 400, "{text}");
    assert!(problem(&text)["detail"].as_str().expect("detail").contains("scenario"), "{text}");
}
