//! The job manager's HTTP endpoints: health and readiness probes, a small
//! read-only REST overview, and Prometheus metrics.

use std::time::Duration;

use serde_json::json;
use weir_config::http::Response;

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

/// Answers one request.
pub async fn answer(cluster: &ClusterHandle, what: Http, path: &str) -> Response {
    match (what, path) {
        (_, "/healthz") => Response::text(200, "ok\n"),
        (Http::Rest, "/readyz") => {
            // Ready when the core answers: it has read its job records and serves requests.
            match tokio::time::timeout(PROBE_TIMEOUT, cluster.ask(Command::Overview)).await {
                Ok(Ok(_)) => Response::text(200, "ready\n"),
                Ok(Err(e)) => Response::text(503, format!("{e}\n")),
                Err(_) => Response::text(503, "the job manager core did not answer in time\n"),
            }
        }
        (Http::Rest, "/v1/jobs") => match cluster.ask(Command::List).await {
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
                Response::json(serde_json::Value::Array(list).to_string())
            }
            Err(e) => Response::text(503, format!("{e}\n")),
        },
        (Http::Rest, "/v1/overview") => match cluster.ask(Command::Overview).await {
            Ok(o) => Response::json(
                json!({
                    "jobs_running": o.jobs_running,
                    "task_managers": o.task_managers.iter().map(|t| json!({
                        "id": t.task_manager_id,
                        "address": t.rpc_address,
                        "slots_total": t.slots_total,
                        "slots_free": t.slots_free,
                    })).collect::<Vec<_>>(),
                })
                .to_string(),
            ),
            Err(e) => Response::text(503, format!("{e}\n")),
        },
        (Http::Metrics, "/metrics") => match cluster.ask(Command::Metrics).await {
            Ok(text) => Response::metrics(text),
            Err(e) => Response::text(503, format!("{e}\n")),
        },
        (_, other) => Response::not_found(other),
    }
}
