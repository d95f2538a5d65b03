//! REST adapter: dry-run plans over HTTP. Never applies anything.
//!
//! - `POST /v1/plans`: a scenario (JSON or YAML) in, the plan out.
//! - `GET /healthz`: liveness.
//! - `GET /openapi.json`: the OpenAPI document, generated from the types.
//!
//! Bad bodies get an RFC 9457 problem document naming the field; oversized bodies get 413; each
//! plan runs on a blocking thread under a deadline, and at most `max_concurrent_plans` run at once.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::Semaphore;
use utoipa::{OpenApi, ToSchema};

use crate::plan::Plan;
use crate::scenario::{self, LoadError, Problem, Scenario};

/// Settings of `allot serve`.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ALLOT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Largest accepted request body, bytes.
    #[arg(long, env = "ALLOT_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Wall-clock deadline of one plan request, seconds; the solver's time limit is capped below it.
    #[arg(long, env = "ALLOT_PLAN_DEADLINE_S", default_value_t = 30.0)]
    pub plan_deadline_s: f64,
    /// Plans computed at once; further requests get 503 until one finishes.
    #[arg(long, env = "ALLOT_MAX_CONCURRENT_PLANS", default_value_t = 2)]
    pub max_concurrent_plans: usize,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 4 * 1024 * 1024,
            plan_deadline_s: 30.0,
            max_concurrent_plans: 2,
        }
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
    info(title = "Allot", description = "Dry-run placement plans for LLM inference replicas"),
    paths(create_plan, healthz),
    components(schemas(Scenario, Plan, ProblemDocument, Health))
)]
pub struct ApiDoc;

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

struct AppState {
    plan_permits: Arc<Semaphore>,
    deadline: Duration,
}

/// The router, separate from the listener so tests can drive it in-process.
pub fn router(args: &ServeArgs) -> Router {
    let state = Arc::new(AppState {
        plan_permits: Arc::new(Semaphore::new(args.max_concurrent_plans.max(1))),
        deadline: Duration::from_secs_f64(args.plan_deadline_s.max(0.1)),
    });
    Router::new()
        .route("/v1/plans", post(create_plan))
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .layer(DefaultBodyLimit::max(args.max_body_bytes))
        .with_state(state)
}

/// Plan a scenario (dry run; nothing is applied).
#[utoipa::path(
    post,
    path = "/v1/plans",
    request_body(content = Scenario, description = "A scenario, as JSON or YAML (WVA optimizer JSON accepted)"),
    responses(
        (status = 200, description = "The plan", body = Plan),
        (status = 400, description = "Malformed body", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Invalid scenario", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Too many plans in progress", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 504, description = "The plan missed its deadline", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn create_plan(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            let kind = if status == StatusCode::PAYLOAD_TOO_LARGE { "body-too-large" } else { "unreadable-body" };
            return ProblemDocument::new(status, kind, rejection.body_text(), vec![]).into_response();
        }
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return ProblemDocument::new(StatusCode::BAD_REQUEST, "unreadable-body", "body is not UTF-8", vec![])
            .into_response();
    };
    let mut snapshot = match scenario::load(text) {
        Ok(s) => s,
        Err(e @ LoadError::Parse { .. }) => {
            return ProblemDocument::new(StatusCode::BAD_REQUEST, "malformed-scenario", e.to_string(), e.problems())
                .into_response();
        }
        Err(e @ LoadError::Invalid(_)) => {
            return ProblemDocument::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-scenario",
                "the scenario is invalid",
                e.problems(),
            )
            .into_response();
        }
    };
    let Ok(permit) = state.plan_permits.clone().try_acquire_owned() else {
        let mut response = ProblemDocument::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many plans in progress; retry shortly",
            vec![],
        )
        .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return response;
    };
    // Leave a margin between the solver's own limit and the request deadline.
    let solver_cap = state.deadline.as_secs_f64() * 0.8;
    snapshot.settings.time_limit_s = snapshot.settings.time_limit_s.min(solver_cap);
    // The permit lives as long as the solve itself: a request that times out cannot be
    // cancelled inside HiGHS, and it still counts against the bound until it finishes.
    let work = tokio::task::spawn_blocking(move || {
        let plan = crate::optimize::plan(&snapshot);
        drop(permit);
        plan
    });
    match tokio::time::timeout(state.deadline, work).await {
        Ok(Ok(plan)) => Json(plan).into_response(),
        Ok(Err(join_error)) => ProblemDocument::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "planner-failed",
            format!("the planner failed: {join_error}"),
            vec![],
        )
        .into_response(),
        Err(_) => ProblemDocument::new(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline-exceeded",
            format!("no plan within {:.1} s", state.deadline.as_secs_f64()),
            vec![],
        )
        .into_response(),
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

/// Bind and serve until Ctrl-C.
pub async fn serve(args: ServeArgs) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "serving the Allot API");
    axum::serve(listener, router(&args))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

/// `allot serve` entry point.
pub fn run(args: ServeArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
