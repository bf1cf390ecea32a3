//! Talking to a job manager.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tonic::transport::Channel;
use weir_proto::v1;
use weir_proto::v1::job_manager_service_client::JobManagerServiceClient;
use weir_runtime::graph::JobGraph;

use crate::progress::Progress;

/// A job manager client.
pub type Client = JobManagerServiceClient<Channel>;

/// Reads and parses a job file; errors name the file and line.
pub fn read_job(path: &Path) -> anyhow::Result<JobFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading job file {}", path.display()))?;
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("sql")) {
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "sql".into());
        let script = weir_sql::compile(&text, &name).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        return Ok(JobFile { graph: script.graph, explain: script.explain });
    }
    let graph = weir_runtime::spec::parse_job_yaml(&text).map_err(|e| anyhow!("job file {}: {e}", path.display()))?;
    Ok(JobFile { graph, explain: false })
}

/// A job read from a file: a YAML job file, or a SQL script (`.sql`).
#[derive(Debug, Clone)]
pub struct JobFile {
    /// The job.
    pub graph: JobGraph,
    /// The script asked to `EXPLAIN` the job instead of running it.
    pub explain: bool,
}

/// Connects to the job manager at `url`.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let endpoint = Channel::from_shared(url.to_string())
        .with_context(|| format!("invalid job manager URL {url}"))?
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.with_context(|| format!("cannot reach the job manager at {url}"))?;
    Ok(JobManagerServiceClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20))
}

/// A gRPC status as an error a user can read.
pub fn status(s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::InvalidArgument => anyhow!("job rejected: {}", s.message()),
        tonic::Code::Unavailable => anyhow!("the job manager is unavailable: {}", s.message()),
        _ => anyhow!("{}", s.message()),
    }
}

/// Where a submitted job starts from.
#[derive(Debug, Default, Clone)]
pub struct StartFrom {
    /// A savepoint (or retained checkpoint) directory.
    pub savepoint: Option<String>,
    /// Let savepoint state of operators the job no longer has go.
    pub allow_non_restored_state: bool,
}

/// Submits `graph`; returns the job id.
pub async fn submit(
    c: &mut Client,
    graph: &JobGraph,
    parallelism: Option<u32>,
    from: &StartFrom,
) -> anyhow::Result<String> {
    let req = v1::SubmitJobRequest {
        graph: Some(weir_proto::graph_to_proto(graph)),
        default_parallelism: parallelism.unwrap_or(0),
        from_savepoint: from.savepoint.clone().unwrap_or_default(),
        allow_non_restored_state: from.allow_non_restored_state,
    };
    Ok(c.submit_job(req).await.map_err(status)?.into_inner().job_id)
}

/// A job's details.
pub async fn details(c: &mut Client, id: &str) -> anyhow::Result<v1::JobDetails> {
    Ok(c.get_job(v1::GetJobRequest { job_id: id.to_string(), wait_for_end_ms: 0 }).await.map_err(status)?.into_inner())
}

/// Whether a job state is final.
pub fn is_terminal(s: v1::JobState) -> bool {
    matches!(s, v1::JobState::Finished | v1::JobState::Failed | v1::JobState::Canceled)
}

/// The state of a job's details.
pub fn state(d: &v1::JobDetails) -> v1::JobState {
    d.summary.as_ref().map(|s| s.state()).unwrap_or(v1::JobState::Unspecified)
}

/// Waits for the job to end (long polls) and returns its details; a
/// visible `progress` shows the job's state and records written meanwhile.
pub async fn wait_for_end(c: &mut Client, id: &str, progress: &Progress) -> anyhow::Result<v1::JobDetails> {
    let poll = if progress.visible() { Duration::from_secs(1) } else { Duration::from_secs(10) };
    loop {
        let req = v1::GetJobRequest { job_id: id.to_string(), wait_for_end_ms: poll.as_millis() as u64 };
        let d = c.get_job(req).await.map_err(status)?.into_inner();
        if is_terminal(state(&d)) {
            progress.clear();
            return Ok(d);
        }
        progress.set_message(format!("{} · {} records written", state(&d).as_str_name(), d.sink_records));
    }
}

/// Exit status for a job that ended: success only when it finished.
pub fn exit_code(d: &v1::JobDetails) -> ExitCode {
    if state(d) == v1::JobState::Finished {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
