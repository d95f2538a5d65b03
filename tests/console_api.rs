//! The console's routes and the history endpoint, in-process (no browser: `tests/browser.rs`
//! renders the page): what is served, with which headers, and how the OpenAPI document says it.

use allot::api::{ApiSettings, router};
use axum::body::Body;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

async fn get(path: &str) -> (StatusCode, http::HeaderMap, String) {
    let response = router(&ApiSettings::default())
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("the router answers");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn the_console_is_served_from_the_binary_with_a_same_origin_policy() {
    let (status, headers, html) = get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().expect("ascii");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'") && csp.contains("connect-src 'self'")
    );
    assert!(html.contains("<script src=\"/console/app.js\" defer></script>"), "{html}");
    for (path, kind) in [("/console/app.js", "text/javascript"), ("/console/app.css", "text/css")] {
        let (status, headers, body) = get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(headers[header::CONTENT_TYPE].to_str().expect("ascii").starts_with(kind), "{path}");
        assert!(body.len() > 1000, "{path} is the real asset");
    }
    let (status, _, _) = get("/console/../Cargo.toml").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = get("/console/secrets.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn history_is_empty_without_a_controller_and_documented() {
    let (status, headers, body) = get("/v1/history").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let page: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(page, serde_json::json!({ "capacity": 240, "records": [] }));
    let (status, _, body) = get("/v1/history?after_cycle=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (_, _, doc) = get("/openapi.json").await;
    let doc: serde_json::Value = serde_json::from_str(&doc).expect("OpenAPI JSON");
    let history = &doc["paths"]["/v1/history"]["get"];
    assert_eq!(history["parameters"][0]["name"], "after_cycle");
    assert_eq!(history["parameters"][0]["in"], "query");
    for schema in ["HistoryPage", "CycleRecord", "SloRecord", "ObservedAttainment"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "schema {schema} missing");
    }
}
