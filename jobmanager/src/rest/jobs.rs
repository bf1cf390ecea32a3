//! The REST operations on the cluster and its jobs.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use weir_proto::v1;

use super::model::*;
use super::ApiError;
use crate::api::{Api, TriggerStatus};

/// What every REST handler holds.
#[derive(Clone)]
pub(crate) struct RestState {
    pub(crate) api: Api,
    pub(crate) max_body_bytes: usize,
    pub(crate) sql: Option<std::sync::Arc<super::SqlCompile>>,
}

impl std::fmt::Debug for RestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestState").field("api", &self.api).field("sql", &self.sql.is_some()).finish()
    }
}

type Answer<T> = Result<Json<T>, ApiError>;

/// The cluster at a glance.
#[utoipa::path(get, path = "/v1/overview", tag = "cluster",
    responses((status = 200, body = Overview)))]
pub(crate) async fn overview(State(s): State<RestState>) -> Answer<Overview> {
    let o = s.api.overview().await?;
    let jobs = s.api.list().await?;
    let count = |state: v1::JobState| jobs.iter().filter(|j| j.state() == state).count() as u32;
    Ok(Json(Overview {
        version: env!("CARGO_PKG_VERSION").to_string(),
        task_managers: o.task_managers.len() as u32,
        slots_total: o.task_managers.iter().map(|t| t.slots_total).sum(),
        slots_available: o.task_managers.iter().map(|t| t.slots_free).sum(),
        jobs_running: o.jobs_running,
        jobs_finished: count(v1::JobState::Finished),
        jobs_canceled: count(v1::JobState::Canceled),
        jobs_failed: count(v1::JobState::Failed),
    }))
}

/// The registered task managers and their slots.
#[utoipa::path(get, path = "/v1/taskmanagers", tag = "cluster",
    responses((status = 200, body = TaskManagers)))]
pub(crate) async fn taskmanagers(State(s): State<RestState>) -> Answer<TaskManagers> {
    Ok(Json(TaskManagers::from_proto(&s.api.overview().await?)))
}

/// Every job, in submission order.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs",
    responses((status = 200, body = Jobs)))]
pub(crate) async fn list(State(s): State<RestState>) -> Answer<Jobs> {
    Ok(Json(Jobs { jobs: s.api.list().await?.iter().map(JobSummary::from_proto).collect() }))
}

/// A job: its state, its graph of vertices with their subtasks, rates,
/// backpressure and watermarks.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobDetails), (status = 404, body = ErrorBody)))]
pub(crate) async fn details(State(s): State<RestState>, Path(id): Path<String>) -> Answer<JobDetails> {
    Ok(Json(JobDetails::from_proto(&s.api.get(id, None).await?)))
}

/// A job's recent checkpoints and savepoints.
#[utoipa::path(get, path = "/v1/jobs/{id}/checkpoints", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = Checkpoints), (status = 404, body = ErrorBody)))]
pub(crate) async fn checkpoints(State(s): State<RestState>, Path(id): Path<String>) -> Answer<Checkpoints> {
    Ok(Json(Checkpoints::from_proto(&s.api.get(id, None).await?)))
}

/// A job's failures, newest first.
#[utoipa::path(get, path = "/v1/jobs/{id}/exceptions", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = Exceptions), (status = 404, body = ErrorBody)))]
pub(crate) async fn exceptions(State(s): State<RestState>, Path(id): Path<String>) -> Answer<Exceptions> {
    Ok(Json(Exceptions::from_proto(&s.api.get(id, None).await?)))
}

/// Submits a job. The body is a job file (YAML, or the same as JSON), a SQL
/// script (`Content-Type: application/sql`), or a JSON object
/// `{"job": ...}` or `{"sql": ...}` with `parallelism`, `from_savepoint`,
/// `allow_non_restored_state` and, for SQL, `name`; the options may be
/// given in the query instead. Nothing is scheduled unless the job is valid.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    params(SubmitOptions),
    request_body(content(
        (String = "application/yaml"),
        (String = "application/sql"),
        (SubmitEnvelope = "application/json"),
    ), description = "A job file, a SQL script, or a JSON envelope holding one and its options"),
    responses(
        (status = 202, body = Submitted, description = "Accepted; the job waits for slots"),
        (status = 400, body = ErrorBody, description = "Malformed job file or invalid job"),
        (status = 413, body = ErrorBody, description = "Body larger than the limit"),
    ))]
pub(crate) async fn submit(
    State(s): State<RestState>,
    headers: HeaderMap,
    query: Result<Query<SubmitOptions>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let body = body.map_err(|e| body_error(e, s.max_body_bytes))?;
    let req = submission(&headers, &body, query, s.sql.as_deref())?;
    let id = s.api.submit(req).await?;
    Ok((StatusCode::ACCEPTED, Json(Submitted { id })))
}

fn body_error(e: BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {limit} bytes (jobmanager.rest_max_body)"),
        )
    } else {
        ApiError(e.status(), format!("cannot read the request body: {}", e.body_text()))
    }
}

/// What a submission's body holds.
enum JobText {
    /// A job file (YAML or JSON).
    File(String),
    /// A SQL script.
    Sql(String),
}

/// The submission a request body (and its query) asks for.
fn submission(
    headers: &HeaderMap,
    body: &[u8],
    query: SubmitOptions,
    sql: Option<&super::SqlCompile>,
) -> Result<v1::SubmitJobRequest, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the job file is not UTF-8 text"))?;
    let content_type = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let json = content_type.starts_with("application/json");
    if content_type.starts_with("application/sql") {
        return finish(JobText::Sql(text.to_string()), query, sql);
    }
    // A JSON envelope names the job file under `job`; any other body is the
    // job file itself (JSON is YAML too).
    let envelope = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) if v.get("job").is_some() || v.get("sql").is_some() => Some(
            serde_json::from_value::<SubmitEnvelope>(v)
                .map_err(|e| ApiError::bad_request(format!("invalid submission: {e}")))?,
        ),
        Err(e) if json => return Err(ApiError::bad_request(format!("the body is not JSON: {e}"))),
        _ => None,
    };
    let (job_text, options) = match envelope {
        Some(env) => {
            let job = match (env.job, env.sql) {
                (Some(serde_json::Value::String(s)), None) => JobText::File(s),
                (Some(other), None) => JobText::File(other.to_string()),
                (None, Some(script)) => JobText::Sql(script),
                _ => return Err(ApiError::bad_request("a submission holds `job` or `sql`, not both")),
            };
            let merged = SubmitOptions {
                parallelism: env.parallelism.or(query.parallelism),
                from_savepoint: env.from_savepoint.or(query.from_savepoint),
                allow_non_restored_state: env.allow_non_restored_state.or(query.allow_non_restored_state),
                name: env.name.or(query.name),
            };
            (job, merged)
        }
        None => (JobText::File(text.to_string()), query),
    };
    finish(job_text, options, sql)
}

/// The job graph of `text`, submitted with `options`.
fn finish(
    text: JobText,
    options: SubmitOptions,
    sql: Option<&super::SqlCompile>,
) -> Result<v1::SubmitJobRequest, ApiError> {
    if options.parallelism == Some(0) {
        return Err(ApiError::bad_request("parallelism must be at least 1 (leave it out for the job's own)"));
    }
    let graph = match text {
        JobText::File(t) => weir_runtime::spec::parse_job_yaml(&t).map_err(|e| ApiError::bad_request(e.to_string()))?,
        JobText::Sql(script) => {
            let compile = sql.ok_or_else(|| ApiError::bad_request("this job manager takes no SQL scripts"))?;
            let name = options.name.as_deref().unwrap_or("sql");
            compile(&script, name).map_err(ApiError::bad_request)?
        }
    };
    Ok(v1::SubmitJobRequest {
        graph: Some(weir_proto::graph_to_proto(&graph)),
        default_parallelism: options.parallelism.unwrap_or(0),
        from_savepoint: options.from_savepoint.unwrap_or_default(),
        allow_non_restored_state: options.allow_non_restored_state.unwrap_or(false),
    })
}

/// Cancels a job.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 202, body = JobStateBody, description = "Cancelling (or cancelled)"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The job has already ended"),
    ))]
pub(crate) async fn cancel(
    State(s): State<RestState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<JobStateBody>), ApiError> {
    let state = s.api.cancel(id.clone()).await?;
    Ok((StatusCode::ACCEPTED, Json(JobStateBody { id, state: state.as_str_name().to_string() })))
}

fn savepoint_target(body: &[u8]) -> Result<String, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(String::new());
    }
    let req: SavepointRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid savepoint request: {e}")))?;
    Ok(req.target.unwrap_or_default())
}

async fn trigger(s: RestState, id: String, body: Result<Bytes, BytesRejection>, stop: bool) -> Triggering {
    let body = body.map_err(|e| body_error(e, s.max_body_bytes))?;
    let target = savepoint_target(&body)?;
    let request_id = s.api.trigger_savepoint(id, target, stop).await?;
    Ok((StatusCode::ACCEPTED, Json(Triggered { request_id })))
}

type Triggering = Result<(StatusCode, Json<Triggered>), ApiError>;

/// Takes a savepoint of a running job; poll the answer's `request_id`.
#[utoipa::path(post, path = "/v1/jobs/{id}/savepoints", tag = "savepoints",
    params(("id" = String, Path, description = "Job id")),
    request_body(content = SavepointRequest, content_type = "application/json", description = "Optional: an empty body uses the job manager's savepoint_dir"),
    responses(
        (status = 202, body = Triggered),
        (status = 400, body = ErrorBody, description = "No target and no savepoint_dir, or a bad target"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The job is not running"),
    ))]
pub(crate) async fn savepoint(
    State(s): State<RestState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Triggering {
    trigger(s, id, body, false).await
}

/// Stops a running job with a savepoint: sources stop after its barrier,
/// sinks commit up to it, and the job ends FINISHED.
#[utoipa::path(post, path = "/v1/jobs/{id}/stop", tag = "savepoints",
    params(("id" = String, Path, description = "Job id")),
    request_body(content = SavepointRequest, content_type = "application/json", description = "Optional: an empty body uses the job manager's savepoint_dir"),
    responses(
        (status = 202, body = Triggered),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The job is not running"),
    ))]
pub(crate) async fn stop(
    State(s): State<RestState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Triggering {
    trigger(s, id, body, true).await
}

/// Where a savepoint (or stop) stands.
#[utoipa::path(get, path = "/v1/jobs/{id}/savepoints/{trigger}", tag = "savepoints",
    params(("id" = String, Path, description = "Job id"), ("trigger" = String, Path, description = "The request id")),
    responses((status = 200, body = SavepointStatus), (status = 404, body = ErrorBody)))]
pub(crate) async fn savepoint_status(
    State(s): State<RestState>,
    Path((id, trigger)): Path<(String, String)>,
) -> Answer<SavepointStatus> {
    let status = match s.api.savepoint_status(&id, &trigger)? {
        TriggerStatus::InProgress => SavepointStatus { status: "IN_PROGRESS".into(), ..Default::default() },
        TriggerStatus::Completed(done) => SavepointStatus {
            status: "COMPLETED".into(),
            location: Some(done.location),
            checkpoint_id: Some(done.checkpoint_id),
            state_bytes: Some(done.state_bytes),
            failure: None,
        },
        TriggerStatus::Failed(why) => {
            SavepointStatus { status: "FAILED".into(), failure: Some(why), ..Default::default() }
        }
    };
    Ok(Json(status))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const JOB: &str = "name: t\noperators:\n  - {uid: gen, kind: datagen}\n  - {uid: out, kind: discard}\nedges:\n  - {from: gen, to: out}\n";

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h
    }

    #[test]
    fn a_body_is_a_job_file_with_its_options_in_the_query() {
        let query =
            SubmitOptions { parallelism: Some(3), from_savepoint: Some("file:///sp".into()), ..Default::default() };
        let req = submission(&HeaderMap::new(), JOB.as_bytes(), query, None).unwrap();
        assert_eq!(req.graph.unwrap().operators.len(), 2);
        assert_eq!((req.default_parallelism, req.from_savepoint.as_str()), (3, "file:///sp"));
    }

    #[test]
    fn a_json_envelope_holds_the_job_as_text_or_as_an_object_and_its_options_win() {
        let as_text = serde_json::json!({"job": JOB, "parallelism": 2, "allow_non_restored_state": true});
        let query = SubmitOptions { parallelism: Some(9), ..Default::default() };
        let req = submission(&json_headers(), as_text.to_string().as_bytes(), query, None).unwrap();
        assert_eq!((req.default_parallelism, req.allow_non_restored_state), (2, true));
        let object: serde_json::Value = serde_yaml_ng::from_str(JOB).unwrap();
        let as_object = serde_json::json!({ "job": object });
        let req =
            submission(&json_headers(), as_object.to_string().as_bytes(), SubmitOptions::default(), None).unwrap();
        assert_eq!(req.graph.unwrap().name, "t");
    }

    #[test]
    fn sql_scripts_go_through_the_compiler_the_job_manager_was_given() {
        let compile = |text: &str, name: &str| -> Result<weir_runtime::graph::JobGraph, String> {
            if text.contains("INSERT") {
                let mut g = weir_runtime::spec::parse_job_yaml(JOB).unwrap();
                g.name = name.to_string();
                Ok(g)
            } else {
                Err(format!("line 1: not a script: {text}"))
            }
        };
        let mut sql = HeaderMap::new();
        sql.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/sql"));
        let named = SubmitOptions { name: Some("clicks".into()), ..Default::default() };
        let req = submission(&sql, b"INSERT INTO x SELECT 1", named, Some(&compile)).unwrap();
        assert_eq!(req.graph.unwrap().name, "clicks");
        let err = submission(&sql, b"SELEC", SubmitOptions::default(), Some(&compile)).unwrap_err();
        assert_eq!((err.0, err.1.as_str()), (StatusCode::BAD_REQUEST, "line 1: not a script: SELEC"));
        let env = serde_json::json!({"sql": "INSERT INTO y SELECT 2", "parallelism": 3});
        let req = submission(&json_headers(), env.to_string().as_bytes(), SubmitOptions::default(), Some(&compile));
        assert_eq!(req.unwrap().default_parallelism, 3);
        let none = submission(&sql, b"INSERT", SubmitOptions::default(), None).unwrap_err();
        assert!(none.1.contains("takes no SQL"), "{}", none.1);
        let both = serde_json::json!({"sql": "x", "job": "y"});
        let err = submission(&json_headers(), both.to_string().as_bytes(), SubmitOptions::default(), None);
        assert!(err.unwrap_err().1.contains("not both"));
    }

    #[test]
    fn bad_bodies_are_refused_with_what_is_wrong() {
        let err = |headers: &HeaderMap, body: &str| {
            submission(headers, body.as_bytes(), SubmitOptions::default(), None).unwrap_err().1
        };
        assert!(err(&json_headers(), "{oops").contains("not JSON"));
        assert!(err(&json_headers(), "{\"job\": \"x\", \"paralelism\": 2}").contains("invalid"));
        assert!(err(&HeaderMap::new(), "name: t\noperators: 3\n").contains("invalid job file"));
        assert!(err(&HeaderMap::new(), "").contains("empty"));
        let zero = SubmitOptions { parallelism: Some(0), ..Default::default() };
        assert!(submission(&HeaderMap::new(), JOB.as_bytes(), zero, None).unwrap_err().1.contains("at least 1"));
        let bytes = [0xff, 0xfe];
        assert!(submission(&HeaderMap::new(), &bytes, SubmitOptions::default(), None).unwrap_err().1.contains("UTF-8"));
    }
}
