//! Talking to a job manager.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use weir_proto::v1;
use weir_proto::v1::job_manager_service_client::JobManagerServiceClient;
use weir_runtime::graph::JobGraph;

use crate::progress::Progress;

/// A job manager client.
pub type Client = JobManagerServiceClient<InterceptedService<Channel, Bearer>>;

/// How the CLI proves who it is to a job manager: a client certificate
/// (TLS), a bearer token, or both.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Credentials {
    #[command(flatten)]
    pub tls: weir_security::TlsArgs,
    /// File holding a bearer token of the job manager's token file (the
    /// token itself may instead be in WEIR_TOKEN).
    #[arg(long, env = "WEIR_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
}

impl Credentials {
    /// The token to present: from `--token-file`, else `WEIR_TOKEN`.
    fn token(&self) -> anyhow::Result<Option<String>> {
        let token = match &self.token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading token file {}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("WEIR_TOKEN").ok().map(|t| t.trim().to_string()),
        };
        Ok(token.filter(|t| !t.is_empty()))
    }
}

/// Adds `authorization: Bearer TOKEN` to every call, when there is a token.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Bearer(<token>)" } else { "Bearer(none)" })
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

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

/// Connects to the job manager at `url`, presenting `credentials`.
pub async fn connect(url: &str, credentials: &Credentials) -> anyhow::Result<Client> {
    let mut section = weir_security::SecuritySection::default();
    section.apply(&credentials.tls);
    let tls = section.tls()?;
    let bearer = match credentials.token()? {
        Some(t) => Some(
            MetadataValue::try_from(format!("Bearer {t}"))
                .map_err(|_| anyhow!("the token holds characters a header cannot carry"))?,
        ),
        None => None,
    };
    let channel = weir_security::channel(url, tls.as_ref(), Duration::from_secs(5))
        .await
        .map_err(|e| anyhow!("the job manager: {e}"))?;
    Ok(JobManagerServiceClient::with_interceptor(channel, Bearer(bearer))
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

/// A gRPC status as an error a user can read.
pub fn status(s: tonic::Status) -> anyhow::Error {
    if let Some(cause) = std::error::Error::source(&s) {
        // A broken connection: its innermost cause says why (a refused
        // certificate, a reset).
        let why = weir_security::explain(cause);
        // A closed port or an unknown host say all there is to say; anything
        // else (a reset, a broken pipe, garbled HTTP/2) is what a TLS server
        // looks like to a client it refused or that spoke plain HTTP/2.
        let plain_failure = ["refused", "timed out", "lookup", "resolve"].iter().any(|w| why.contains(w));
        let hint = if !plain_failure && !why.contains(" (") {
            // TLS 1.3 clients finish their handshake before the server checks
            // their certificate: a refusal often shows as a closed connection.
            " (the job manager closed the connection: with TLS it refuses a client certificate of another CA or an \
             expired one, and its log says which; a job manager with TLS is addressed as https:// with --tls-ca, \
             --tls-cert and --tls-key)"
        } else {
            ""
        };
        return anyhow!("the job manager: {}: {why}{hint}", s.message());
    }
    match s.code() {
        tonic::Code::InvalidArgument => anyhow!("job rejected: {}", s.message()),
        tonic::Code::Unavailable => anyhow!("the job manager is unavailable: {}", s.message()),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => anyhow!("refused: {}", s.message()),
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

#[cfg(test)]
mod tests {
    use super::status;

    #[test]
    fn broken_connections_say_why_and_refusals_say_who() {
        let closed = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stream closed because of a broken pipe");
        let e = status(tonic::Status::from_error(Box::new(closed))).to_string();
        assert!(e.contains("broken pipe") && e.contains("addressed as https://"), "{e}");
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused (os error 111)");
        let e = status(tonic::Status::from_error(Box::new(refused))).to_string();
        assert!(e.contains("Connection refused") && !e.contains("https://"), "no TLS hint for a closed port: {e}");
        let e = status(tonic::Status::permission_denied("certificate `CN=x` may not submit jobs")).to_string();
        assert_eq!(e, "refused: certificate `CN=x` may not submit jobs");
    }
}
