//! REST adapter: dry-run and what-if plans over HTTP, the controller's current plan and snapshot,
//! and the metrics endpoint. Nothing here applies anything; `allot serve` also starts the
//! controller loop when asked to (`--simulate`, or a cluster).
//!
//! - `POST /v1/plans`: a scenario (JSON or YAML) in, the plan out; or `{"overrides": …}`: the
//!   latest observed snapshot with those changes, planned and compared with the current plan.
//! - `GET /v1/plan`, `GET /v1/snapshot`: the controller's current decision and observation.
//! - `GET /v1/history`: the recent cycles, one compact record each (the console's charts).
//! - `GET /`: the console, a page over these endpoints (assets embedded in the binary).
//! - `GET /metrics`: Allot's metrics (OpenMetrics); `GET /simulated/vllm/metrics`: the simulated
//!   vLLM servers' metrics under `--simulate`.
//! - `GET /healthz`: liveness. `GET /openapi.json`: the OpenAPI document, generated from the types.
//!
//! Bad bodies get an RFC 9457 problem document naming the field; oversized bodies get 413; each
//! plan runs on a blocking thread under a deadline, and at most `max_concurrent_plans` run at once.
//!
//! This module only serves; `crate::cli::serve` (the composition root) wires it with the
//! controller loop, leader election and the shutdown signal.

pub mod server;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use utoipa::{OpenApi, ToSchema};

use crate::analyze::predict::{PredictRequest, VariantPrediction, predict};
use crate::controller::history::HistoryPage;
use crate::controller::whatif::{self, WhatIf, WhatIfResult};
use crate::controller::{Decision, PodCounts, Shared};
use crate::plan::Plan;
use crate::scenario::{self, LoadError, Problem, Scenario, Snapshot};
use crate::sim::live::LiveCluster;

mod console;

/// Limits of the REST API (plain settings; `allot serve`'s flags build them, within the bounds
/// their help states).
#[derive(Clone, Debug, PartialEq)]
pub struct ApiSettings {
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Wall-clock deadline of one plan request, seconds; the solver's time limit is capped below it.
    pub plan_deadline_s: f64,
    /// Plans computed at once; further requests get 503 until one finishes.
    pub max_concurrent_plans: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self { max_body_bytes: 4 * 1024 * 1024, plan_deadline_s: 30.0, max_concurrent_plans: 2 }
    }
}

/// An RFC 9457 problem document.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ProblemDocument {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Each offending field with what is wrong with it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

impl ProblemDocument {
    fn new(status: StatusCode, kind: &str, detail: impl Into<String>, problems: Vec<Problem>) -> Self {
        Self {
            kind: format!("https://allot.dev/problems/{kind}"),
            title: status.canonical_reason().unwrap_or("error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            problems,
        }
    }
}

impl IntoResponse for ProblemDocument {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).expect("problem documents serialize");
        (status, [(header::CONTENT_TYPE, "application/problem+json")], body).into_response()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Allot",
        description = "Placement plans for LLM inference replicas: dry runs, what-ifs and the live plan"
    ),
    paths(create_plan, create_prediction, current_plan, current_snapshot, history, healthz),
    components(schemas(
        Scenario,
        Plan,
        ProblemDocument,
        Health,
        WhatIf,
        WhatIfResult,
        Decision,
        SnapshotView,
        PlanRequest,
        PlanResponse,
        HistoryPage,
        PredictBody,
        VariantPrediction
    ))
)]
pub struct ApiDoc;

/// What `POST /v1/plans` takes: a scenario, or a what-if against the observed snapshot.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documents the body; the handler reads the text itself
pub enum PlanRequest {
    Scenario(Box<Scenario>),
    WhatIf(WhatIf),
}

/// What `POST /v1/plans` answers: the plan of a scenario, or a what-if's plan and diff.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum PlanResponse {
    Plan(Plan),
    WhatIf(WhatIfResult),
}

/// Media types `POST /v1/plans` reads (`Accept-Post` of a 415).
const ACCEPTED_MEDIA_TYPES: &str = "application/json, application/yaml";

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// The controller's latest observation, as `GET /v1/snapshot` returns it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SnapshotView {
    pub snapshot_id: String,
    /// Observation time, seconds since the Unix epoch (simulated seconds under `--simulate`).
    pub observed_at_s: f64,
    /// The observed cluster in scenario form, load included; what-if overrides edit this.
    pub scenario: Scenario,
    /// Pod states per variant name.
    pub pods: std::collections::BTreeMap<String, PodCounts>,
    /// Models whose metrics are missing or stale, with the reason.
    pub stale_models: std::collections::BTreeMap<String, String>,
    pub metric_age_s: std::collections::BTreeMap<String, f64>,
    pub warnings: Vec<String>,
}

struct AppState {
    plan_permits: Arc<Semaphore>,
    deadline: Duration,
    controller: Arc<Shared>,
    /// A controller loop runs in this process (`--simulate` or `--cluster`).
    controlled: bool,
    simulated: Option<LiveCluster>,
}

/// The dry-run router (no controller), separate from the listener so tests can drive it in-process.
pub fn router(args: &ApiSettings) -> Router {
    build_router(args, Shared::new(), false, None)
}

/// The router over the shared state of a controller running in this process (and a simulated
/// cluster's vLLM metrics).
pub fn router_with(args: &ApiSettings, controller: Arc<Shared>, simulated: Option<LiveCluster>) -> Router {
    build_router(args, controller, true, simulated)
}

fn build_router(
    args: &ApiSettings,
    controller: Arc<Shared>,
    controlled: bool,
    simulated: Option<LiveCluster>,
) -> Router {
    let state = Arc::new(AppState {
        plan_permits: Arc::new(Semaphore::new(args.max_concurrent_plans.max(1))),
        // Within the flag's bounds whatever a programmatic caller passes (no panic on NaN or inf).
        deadline: Duration::from_secs_f64(if args.plan_deadline_s.is_finite() {
            args.plan_deadline_s.clamp(0.1, 3600.0)
        } else {
            3600.0
        }),
        controller,
        controlled,
        simulated,
    });
    Router::new()
        .route("/v1/plans", post(create_plan))
        .route("/v1/plan", get(current_plan))
        .route("/v1/predict", post(create_prediction))
        .route("/v1/snapshot", get(current_snapshot))
        .route("/v1/history", get(history))
        .route("/", get(console::index))
        .route("/console/{asset}", get(console::asset))
        .route("/metrics", get(metrics))
        .route("/simulated/vllm/metrics", get(simulated_vllm_metrics))
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(args.max_body_bytes))
        .layer(axum::middleware::map_response(problem_for_bare_errors))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> Response {
    ProblemDocument::new(StatusCode::NOT_FOUND, "not-found", format!("no resource at {}", uri.path()), vec![])
        .into_response()
}

/// Every error answers with a problem document: errors made outside the handlers (axum's 405
/// with its `Allow` header, a body limit, a body read timeout) get one in place of their bare
/// text, keeping their headers.
async fn problem_for_bare_errors(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|c| c.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let (kind, default) = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method-not-allowed", "this resource does not answer that method (see Allow)")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("body-too-large", "the body is larger than --max-body-bytes"),
        StatusCode::REQUEST_TIMEOUT => ("body-timeout", "the body did not arrive in time"),
        StatusCode::NOT_FOUND => ("not-found", "no such resource"),
        _ => ("error", ""),
    };
    let detail = if text.is_empty() { default.to_string() } else { text };
    let problem = ProblemDocument::new(status, kind, detail, vec![]).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/problem+json"));
    Response::from_parts(parts, problem.into_body())
}

/// The syntax a `Content-Type` names, or why it is refused; no header reads the body as it is.
fn body_syntax(headers: &axum::http::HeaderMap) -> Result<Option<Syntax>, String> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return Ok(None) };
    let text = value.to_str().map_err(|_| "the content-type is not text".to_string())?.to_ascii_lowercase();
    let mut parts = text.split(';').map(str::trim);
    let essence = parts.next().unwrap_or_default();
    for param in parts {
        if let Some(charset) = param.strip_prefix("charset=")
            && !matches!(charset.trim_matches('"'), "utf-8" | "utf8")
        {
            return Err(format!("charset {charset} is not supported; send UTF-8 {ACCEPTED_MEDIA_TYPES}"));
        }
    }
    match essence {
        "application/json" => Ok(Some(Syntax::Json)),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => Ok(Some(Syntax::Yaml)),
        other => Err(format!("content-type {other:?} is not supported; send {ACCEPTED_MEDIA_TYPES}")),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Syntax {
    Json,
    Yaml,
}

/// Plan a scenario, or the observed cluster with overrides (dry run; nothing is applied).
#[utoipa::path(
    post,
    path = "/v1/plans",
    request_body(
        description = "A scenario, as JSON or YAML (WVA optimizer JSON accepted), or a what-if `{\"overrides\": …}` against the latest observed snapshot",
        content(
            (PlanRequest = "application/json"),
            (PlanRequest = "application/yaml"),
        ),
    ),
    responses(
        (status = 200, description = "The plan (a scenario was posted), or the what-if plan and its diff (overrides were posted)", body = PlanResponse),
        (status = 400, description = "Malformed body", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "What-if without an observed snapshot yet", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "Neither JSON nor YAML", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Invalid scenario or overrides", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Too many plans in progress", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 504, description = "The plan missed its deadline", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn create_plan(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (syntax, body) = match read_body(&headers, body) {
        Ok(read) => read,
        Err(response) => return *response,
    };
    let text = body.as_str();
    if syntax == Some(Syntax::Json) && !text.trim_start().starts_with('{') {
        return ProblemDocument::new(
            StatusCode::BAD_REQUEST,
            "malformed-scenario",
            "the content-type is application/json, but the body is not a JSON object",
            vec![],
        )
        .into_response();
    }
    if let Some(what_if) = parse_what_if(text) {
        return match what_if {
            Ok(w) => what_if_plan(&state, &w).await,
            Err(e) => ProblemDocument::new(
                StatusCode::BAD_REQUEST,
                "malformed-overrides",
                format!("what-if body: {e}"),
                e.problems(),
            )
            .into_response(),
        };
    }
    let snapshot = match scenario::load(text) {
        Ok(s) => s,
        Err(e @ LoadError::Parse { .. }) => {
            return ProblemDocument::new(StatusCode::BAD_REQUEST, "malformed-scenario", e.to_string(), e.problems())
                .into_response();
        }
        Err(e @ LoadError::Invalid(_)) => {
            return invalid("invalid-scenario", "the scenario is invalid", e.problems());
        }
    };
    match plan_within_limits(&state, snapshot).await {
        Ok(plan) => Json(plan).into_response(),
        Err(response) => response,
    }
}

/// A POST body as text, with the syntax its content type names: a media type neither JSON nor
/// YAML is 415 (with `Accept-Post`), an unreadable body its problem, non-UTF-8 400.
fn read_body(
    headers: &axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Option<Syntax>, String), Box<Response>> {
    let syntax = body_syntax(headers).map_err(|why| {
        let mut response =
            ProblemDocument::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", why, vec![])
                .into_response();
        response.headers_mut().insert("accept-post", header::HeaderValue::from_static(ACCEPTED_MEDIA_TYPES));
        Box::new(response)
    })?;
    let body = body.map_err(|rejection| Box::new(body_rejection(&rejection)))?;
    let text = String::from_utf8(body.to_vec()).map_err(|_| {
        Box::new(
            ProblemDocument::new(StatusCode::BAD_REQUEST, "unreadable-body", "body is not UTF-8", vec![])
                .into_response(),
        )
    })?;
    Ok((syntax, text))
}

/// A body that could not be read: too large (413), too slow (408), or broken off (400).
fn body_rejection(rejection: &BytesRejection) -> Response {
    let status = rejection.status();
    let text = rejection.body_text();
    let timed_out = {
        use std::error::Error as _;
        let mut source = rejection.source();
        let mut found = false;
        while let Some(e) = source {
            found |= e.is::<tower_http::timeout::TimeoutError>();
            source = e.source();
        }
        found
    };
    if timed_out {
        let detail = "the body did not arrive in time; send it in one go".to_string();
        return ProblemDocument::new(StatusCode::REQUEST_TIMEOUT, "body-timeout", detail, vec![]).into_response();
    }
    let kind = if status == StatusCode::PAYLOAD_TOO_LARGE { "body-too-large" } else { "unreadable-body" };
    ProblemDocument::new(status, kind, text, vec![]).into_response()
}

fn invalid(kind: &str, detail: &str, problems: Vec<Problem>) -> Response {
    ProblemDocument::new(StatusCode::UNPROCESSABLE_ENTITY, kind, detail, problems).into_response()
}

/// `Some` when the body is a what-if (a mapping whose only key is `overrides`).
fn parse_what_if(text: &str) -> Option<Result<WhatIf, LoadError>> {
    // Scenarios (the common, large bodies) are not parsed twice.
    if !text.contains("overrides") {
        return None;
    }
    // A body that does not parse is reported by the scenario reader below.
    let value = scenario::parse_value(text).ok()?;
    if !value.as_object()?.contains_key("overrides") {
        return None;
    }
    Some(scenario::from_value_at_path(value))
}

async fn what_if_plan(state: &AppState, what_if: &WhatIf) -> Response {
    let latest = state.controller.latest();
    let (Some(observed), Some(decision)) = (latest.observed, latest.decision) else {
        return ProblemDocument::new(
            StatusCode::CONFLICT,
            "no-observed-snapshot",
            "what-if plans need the controller's observed snapshot; none yet (the controller is not running, or has not completed a cycle)",
            vec![],
        )
        .into_response();
    };
    let snapshot = match whatif::snapshot_for(&observed.scenario, &decision, &what_if.overrides) {
        Ok(s) => s,
        Err(whatif::Rejected::Overrides(problems)) => {
            return invalid("invalid-overrides", "the overrides do not fit the observed snapshot", problems);
        }
        Err(whatif::Rejected::Snapshot(problems)) => {
            return invalid("invalid-overrides", "the overridden snapshot is invalid", problems);
        }
    };
    match plan_within_limits(state, snapshot).await {
        Ok(plan) => Json(whatif::compare(plan, &decision)).into_response(),
        Err(response) => response,
    }
}

/// Plan on a blocking thread under the request deadline and the concurrency bound.
async fn plan_within_limits(state: &AppState, mut snapshot: Snapshot) -> Result<Plan, Response> {
    // Leave a margin between the solver's own limit and the request deadline.
    let solver_cap = state.deadline.as_secs_f64() * 0.8;
    snapshot.settings.time_limit_s = snapshot.settings.time_limit_s.min(solver_cap);
    within_limits(state, move || crate::optimize::plan(&snapshot)).await
}

/// Run `work` on a blocking thread under the request deadline and the concurrency bound.
async fn within_limits<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    let Ok(permit) = state.plan_permits.clone().try_acquire_owned() else {
        let mut response = ProblemDocument::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many plans in progress; retry shortly",
            vec![],
        )
        .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return Err(response);
    };
    // The permit lives as long as the work itself: a request that times out cannot be
    // cancelled inside HiGHS, and it still counts against the bound until it finishes.
    let work = tokio::task::spawn_blocking(move || {
        let out = work();
        drop(permit);
        out
    });
    match tokio::time::timeout(state.deadline, work).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(join_error)) => Err(ProblemDocument::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "planner-failed",
            format!("the planner failed: {join_error}"),
            vec![],
        )
        .into_response()),
        Err(_) => Err(ProblemDocument::new(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline-exceeded",
            format!("no answer within {:.1} s", state.deadline.as_secs_f64()),
            vec![],
        )
        .into_response()),
    }
}

/// What `POST /v1/predict` takes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictBody {
    /// The scenario whose variants are predicted.
    pub scenario: Scenario,
    /// Only this variant; every variant with a profile when absent.
    #[serde(default)]
    pub variant: Option<String>,
    /// Replicas sharing the model's traffic (default: the variant's current replicas, at least 1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100_000)]
    pub replicas: Option<u32>,
    /// The model's total arrival rates, req/s (default: the scenario's load).
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub rates_rps: Vec<f64>,
    /// Factors on the profile's prefill and decode terms, as the controller's calibration
    /// reports them; the profile as given when absent.
    #[serde(default)]
    pub correction: Option<crate::analyze::predict::Correction>,
}

#[utoipa::path(
    post,
    path = "/v1/predict",
    request_body(
        description = "`{scenario, variant?, replicas?, rates_rps?, correction?}` as JSON or YAML",
        content((PredictBody = "application/json"), (PredictBody = "application/yaml")),
    ),
    responses(
        (status = 200, description = "Per variant: each class's capacity at its SLO and the steady state at each rate", body = Vec<VariantPrediction>),
        (status = 400, description = "Malformed body", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "Neither JSON nor YAML", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Invalid scenario, variant, rates or replicas", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Too many requests in progress", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 504, description = "No answer within the deadline", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn create_prediction(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let text = match read_body(&headers, body) {
        Ok((_, text)) => text,
        Err(response) => return *response,
    };
    // The scenario readers' limits and rules (size, duplicate keys, integral numbers, the path
    // of a bad field) apply to the whole body.
    let parsed: PredictBody = match scenario::parse_value(&text).and_then(scenario::from_value_at_path) {
        Ok(b) => b,
        Err(e) => {
            let problems = e.problems();
            return ProblemDocument::new(
                StatusCode::BAD_REQUEST,
                "malformed-body",
                format!("predict body: {e}"),
                problems,
            )
            .into_response();
        }
    };
    let snapshot = match scenario::validate(&parsed.scenario) {
        Ok(s) => s,
        Err(e) => return invalid("invalid-scenario", "the scenario is invalid", LoadError::Invalid(e).problems()),
    };
    let request = PredictRequest {
        variant: parsed.variant,
        replicas: parsed.replicas,
        rates_rps: parsed.rates_rps,
        correction: parsed.correction,
    };
    match within_limits(&state, move || predict(&snapshot, &request)).await {
        Ok(Ok(predictions)) => Json(predictions).into_response(),
        Ok(Err(e)) => invalid("invalid-prediction", &e.to_string(), vec![]),
        Err(response) => response,
    }
}

fn no_cycle_yet(state: &AppState) -> Response {
    // Without a controller there is no plan to wait for: the resource does not exist here.
    if !state.controlled {
        return ProblemDocument::new(
            StatusCode::NOT_FOUND,
            "no-controller",
            "this server runs no controller; the current plan is served by `allot serve --simulate` or `allot serve --cluster`",
            vec![],
        )
        .into_response();
    }
    let detail = state.controller.latest().last_error.map_or_else(
        || {
            "the controller has not completed a cycle (or is not running: `allot serve --simulate`, or in a cluster)"
                .to_string()
        },
        |e| format!("no plan yet; the last cycle failed: {e}"),
    );
    ProblemDocument::new(StatusCode::SERVICE_UNAVAILABLE, "no-plan-yet", detail, vec![]).into_response()
}

/// The controller's current decision: the plan, and what each variant should run and why.
#[utoipa::path(get, path = "/v1/plan", responses(
    (status = 200, body = Decision),
    (status = 404, description = "No controller runs in this server", body = ProblemDocument, content_type = "application/problem+json"),
    (status = 503, description = "No cycle completed yet", body = ProblemDocument, content_type = "application/problem+json"),
))]
async fn current_plan(State(state): State<Arc<AppState>>) -> Response {
    match state.controller.decision() {
        Some(d) => Json(d.as_ref().clone()).into_response(),
        None => no_cycle_yet(&state),
    }
}

/// The controller's latest observation.
#[utoipa::path(get, path = "/v1/snapshot", responses(
    (status = 200, body = SnapshotView),
    (status = 404, description = "No controller runs in this server", body = ProblemDocument, content_type = "application/problem+json"),
    (status = 503, description = "No cycle completed yet", body = ProblemDocument, content_type = "application/problem+json"),
))]
async fn current_snapshot(State(state): State<Arc<AppState>>) -> Response {
    let latest = state.controller.latest();
    let (Some(o), Some(d)) = (latest.observed, latest.decision) else { return no_cycle_yet(&state) };
    let pods = o.snapshot.variants.iter().zip(&o.pods).map(|(v, p)| (v.name.clone(), *p)).collect();
    Json(SnapshotView {
        snapshot_id: d.snapshot_id.clone(),
        observed_at_s: o.at_s,
        scenario: o.scenario.clone(),
        pods,
        stale_models: o.stale_models.clone(),
        metric_age_s: o.metric_age_s.clone(),
        warnings: o.warnings.clone(),
    })
    .into_response()
}

/// Query of `GET /v1/history`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// Only records of cycles after this one (a console polls with the last cycle it has).
    #[param(minimum = 0, maximum = 1_000_000_000_000_000_000_u64)]
    after_cycle: Option<u64>,
}

/// The recent cycles, oldest first: replicas, GPUs, demand, attainment and cost per cycle.
#[utoipa::path(get, path = "/v1/history", params(HistoryQuery), responses(
    (status = 200, body = HistoryPage),
    (status = 400, description = "Malformed query", body = ProblemDocument, content_type = "application/problem+json"),
))]
async fn history(State(state): State<Arc<AppState>>, Query(query): Query<HistoryQuery>) -> Response {
    // The bound the schema states, so that the schema and the server agree on every value.
    if query.after_cycle.is_some_and(|c| c > MAX_CYCLE) {
        let detail = format!("after_cycle: must be at most {MAX_CYCLE}");
        return ProblemDocument::new(StatusCode::BAD_REQUEST, "malformed-query", detail, vec![]).into_response();
    }
    Json(state.controller.history.page(query.after_cycle)).into_response()
}

/// Largest `after_cycle` (a cycle every second for 30 billion years).
const MAX_CYCLE: u64 = 1_000_000_000_000_000_000;

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let body = state.controller.metrics.encode();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

async fn simulated_vllm_metrics(State(state): State<Arc<AppState>>) -> Response {
    match &state.simulated {
        Some(sim) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], sim.vllm_metrics()).into_response()
        }
        None => (StatusCode::NOT_FOUND, "not simulating\n").into_response(),
    }
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
