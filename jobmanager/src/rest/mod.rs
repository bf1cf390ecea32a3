//! The job manager's HTTP endpoints: the REST API under `/v1` (documented
//! by the OpenAPI document it serves at `/v1/openapi.json`), the web UI at
//! `/`, health and readiness probes, and Prometheus metrics on their own
//! listener.
//!
//! Every operation goes through the service layer the gRPC face uses
//! ([`crate::api::Api`]), so REST and the CLI answer alike; errors are JSON
//! `{"error": "..."}` with the status that fits (see [`ApiError`]).

pub mod auth;
mod jobs;
pub mod model;
mod openapi;
mod ui;

pub use openapi::openapi;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::api::Api;
use crate::cluster::ClusterError;
use model::ErrorBody;

/// Which endpoint a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http {
    /// The REST API, `/healthz` and `/readyz`.
    Rest,
    /// `/metrics` (and `/healthz`).
    Metrics,
}

/// Compiles a SQL script (its text and the job's name) into a job graph;
/// the job manager knows no SQL itself, the process that starts it does.
pub type SqlCompile = dyn Fn(&str, &str) -> Result<weir_runtime::graph::JobGraph, String> + Send + Sync;

/// Settings of the REST endpoint.
#[derive(Clone)]
pub struct RestOptions {
    /// Largest request body accepted (a job file), in bytes.
    pub max_body_bytes: usize,
    /// Accepts SQL scripts as jobs, if given.
    pub sql: Option<std::sync::Arc<SqlCompile>>,
    /// Bearer tokens the API requires, if any (see [`auth`]).
    pub tokens: Option<std::sync::Arc<weir_security::Tokens>>,
}

impl std::fmt::Debug for RestOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestOptions")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("sql", &self.sql.is_some())
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl Default for RestOptions {
    fn default() -> Self {
        Self { max_body_bytes: 4 << 20, sql: None, tokens: None }
    }
}

/// How long a probe waits for the core to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A failed request, answered as `{"error": "..."}` with its status.
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        let status = match e {
            ClusterError::InvalidJob(_) => StatusCode::BAD_REQUEST,
            ClusterError::UnknownJob(_) | ClusterError::UnknownTrigger(_) => StatusCode::NOT_FOUND,
            ClusterError::WrongState(_) => StatusCode::CONFLICT,
            ClusterError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

/// The routes of endpoint `what`.
pub(crate) fn router(api: Api, what: Http, opts: RestOptions) -> Router {
    let routes = Router::new().route("/healthz", get(healthz));
    let routes = match what {
        Http::Rest => routes
            .route("/readyz", get(readyz))
            .route("/", get(ui::index))
            .route("/jobs/{id}", get(ui::index))
            .route("/ui/app.js", get(ui::script))
            .route("/ui/style.css", get(ui::style))
            .route("/v1/openapi.json", get(openapi::document))
            .route("/v1/overview", get(jobs::overview))
            .route("/v1/taskmanagers", get(jobs::taskmanagers))
            .route("/v1/jobs", get(jobs::list).post(jobs::submit))
            .route("/v1/jobs/{id}", get(jobs::details))
            .route("/v1/jobs/{id}/checkpoints", get(jobs::checkpoints))
            .route("/v1/jobs/{id}/exceptions", get(jobs::exceptions))
            .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
            .route("/v1/jobs/{id}/savepoints", post(jobs::savepoint))
            .route("/v1/jobs/{id}/stop", post(jobs::stop))
            .route("/v1/jobs/{id}/savepoints/{trigger}", get(jobs::savepoint_status))
            .layer(DefaultBodyLimit::max(opts.max_body_bytes)),
        Http::Metrics => routes.route("/metrics", get(metrics)),
    };
    let routes = routes.fallback(not_found);
    let routes = match (&opts.tokens, what) {
        (Some(tokens), Http::Rest) => routes.layer(axum::middleware::from_fn_with_state(tokens.clone(), auth::require)),
        _ => routes,
    };
    routes.with_state(jobs::RestState { api, max_body_bytes: opts.max_body_bytes, sql: opts.sql })
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no such path: {}", uri.path()))
}

/// Ready when the core answers: it has read its job records and serves requests.
async fn readyz(State(s): State<jobs::RestState>) -> Response {
    match tokio::time::timeout(PROBE_TIMEOUT, s.api.overview()).await {
        Ok(Ok(_)) => "ready\n".into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the job manager core did not answer in time\n").into_response(),
    }
}

async fn metrics(State(s): State<jobs::RestState>) -> Response {
    match s.api.metrics().await {
        Ok(text) => ([(header::CONTENT_TYPE, weir_telemetry::METRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}
