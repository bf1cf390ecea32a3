//! The job manager's HTTP endpoints: health and readiness probes, a small
//! read-only REST overview, and Prometheus metrics.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::cluster::{ClusterHandle, Command};

/// Which endpoint a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http {
    /// `/healthz`, `/readyz`, `/v1/jobs`, `/v1/overview`.
    Rest,
    /// `/metrics` (and `/healthz`).
    Metrics,
}

/// How long a probe waits for the core to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The routes of endpoint `what`.
pub(crate) fn router(cluster: ClusterHandle, what: Http) -> Router {
    let routes = Router::new().route("/healthz", get(healthz));
    let routes = match what {
        Http::Rest => {
            routes.route("/readyz", get(readyz)).route("/v1/jobs", get(jobs)).route("/v1/overview", get(overview))
        }
        Http::Metrics => routes.route("/metrics", get(metrics)),
    };
    routes.fallback(not_found).with_state(cluster)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn not_found(uri: axum::http::Uri) -> (StatusCode, String) {
    (StatusCode::NOT_FOUND, format!("no such path: {}\n", uri.path()))
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response()
}

/// Ready when the core answers: it has read its job records and serves requests.
async fn readyz(State(cluster): State<ClusterHandle>) -> Response {
    match tokio::time::timeout(PROBE_TIMEOUT, cluster.ask(Command::Overview)).await {
        Ok(Ok(_)) => "ready\n".into_response(),
        Ok(Err(e)) => unavailable(e),
        Err(_) => unavailable("the job manager core did not answer in time"),
    }
}

async fn jobs(State(cluster): State<ClusterHandle>) -> Response {
    match cluster.ask(Command::List).await {
        Ok(jobs) => {
            let list: Vec<_> = jobs
                .iter()
                .map(|j| {
                    json!({
                        "job_id": j.job_id,
                        "name": j.name,
                        "state": j.state().as_str_name(),
                        "start_time_ms": j.start_time_ms,
                        "end_time_ms": if j.end_time_ms > 0 { Some(j.end_time_ms) } else { None },
                    })
                })
                .collect();
            Json(list).into_response()
        }
        Err(e) => unavailable(e),
    }
}

async fn overview(State(cluster): State<ClusterHandle>) -> Response {
    match cluster.ask(Command::Overview).await {
        Ok(o) => Json(json!({
            "jobs_running": o.jobs_running,
            "task_managers": o.task_managers.iter().map(|t| json!({
                "id": t.task_manager_id,
                "address": t.rpc_address,
                "slots_total": t.slots_total,
                "slots_free": t.slots_free,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => unavailable(e),
    }
}

async fn metrics(State(cluster): State<ClusterHandle>) -> Response {
    match cluster.ask(Command::Metrics).await {
        Ok(text) => ([(header::CONTENT_TYPE, weir_telemetry::METRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => unavailable(e),
    }
}
