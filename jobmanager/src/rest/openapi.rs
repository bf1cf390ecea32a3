//! The OpenAPI document of the REST API, generated from the handlers and
//! models themselves.

use axum::Json;
use utoipa::OpenApi;

use super::jobs;
use super::model::*;

#[derive(OpenApi)]
#[openapi(
    info(title = "Weir job manager REST API", description = "Job control and monitoring of a Weir cluster."),
    paths(
        jobs::overview,
        jobs::taskmanagers,
        jobs::list,
        jobs::submit,
        jobs::details,
        jobs::checkpoints,
        jobs::exceptions,
        jobs::cancel,
        jobs::savepoint,
        jobs::stop,
        jobs::savepoint_status,
    ),
    components(schemas(
        ErrorBody,
        Overview,
        TaskManager,
        TaskManagers,
        JobSummary,
        Jobs,
        Operator,
        Subtask,
        Vertex,
        Link,
        JobDetails,
        Recovery,
        SubtaskAck,
        Checkpoint,
        CheckpointCounts,
        LatestCheckpoints,
        Checkpoints,
        JobException,
        Exceptions,
        SubmitOptions,
        SubmitEnvelope,
        Submitted,
        JobStateBody,
        SavepointRequest,
        Triggered,
        SavepointStatus,
    ))
)]
struct Document;

/// `GET /v1/openapi.json`.
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(Document::openapi())
}

/// The document, for tests and tools.
pub fn openapi() -> utoipa::openapi::OpenApi {
    Document::openapi()
}
