//! An embedded cluster: a job manager and one task manager in this process,
//! talking gRPC over loopback exactly like separate processes do.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use weir_jobmanager::{JobManager, JobManagerOptions};
use weir_proto::v1;
use weir_runtime::graph::JobGraph;
use weir_runtime::operators::Registry;
use weir_taskmanager::{TaskManager, TaskManagerOptions};

use crate::client;
use crate::output::{self, Format};
use crate::progress::Progress;

/// A running embedded cluster.
pub struct Embedded {
    jm: JobManager,
    tm: TaskManager,
    /// Default checkpoint storage and job records of this embedded cluster only.
    _storage: tempfile::TempDir,
    /// URL of the job manager.
    pub url: String,
}

impl Embedded {
    /// Starts a job manager and a task manager with `slots` slots, and waits
    /// until the task manager has registered.
    pub async fn start(slots: u32, registry: Arc<Registry>) -> anyhow::Result<Embedded> {
        // A fresh job manager storage: an embedded cluster never resumes another's jobs.
        let storage = tempfile::Builder::new().prefix("weir-embedded").tempdir()?;
        let mut opts = JobManagerOptions {
            checkpoint_storage: format!("file://{}", storage.path().display()),
            ..JobManagerOptions::default()
        };
        // Local runs write where the user works, and to the temp directory.
        opts.security.allowed_paths = weir_security::AllowedPaths::local_default();
        let jm = JobManager::start(TcpListener::bind("127.0.0.1:0").await?, opts, registry.clone())?;
        let url = format!("http://{}", jm.addr);
        let tm = TaskManager::start(
            TcpListener::bind("127.0.0.1:0").await?,
            TaskManagerOptions::new(url.clone(), slots),
            registry,
        )?;
        let mut c = client::connect(&url, &Default::default()).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let o = c.cluster_overview(v1::ClusterOverviewRequest {}).await.map_err(client::status)?.into_inner();
            if !o.task_managers.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!("the embedded task manager did not register within 10s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(Embedded { jm, tm, _storage: storage, url })
    }

    /// Stops both processes' services.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.tm.shutdown().await?;
        self.jm.shutdown().await
    }
}

/// `weir local`: runs a job on an embedded cluster until it ends.
pub async fn run_local(
    graph: &JobGraph,
    registry: Arc<Registry>,
    parallelism: Option<u32>,
    slots: Option<u32>,
    fmt: Format,
) -> anyhow::Result<ExitCode> {
    let plan = weir_runtime::plan::Plan::new(graph, &registry, parallelism.unwrap_or(0))
        .map_err(|e| anyhow::anyhow!("job {}: {e}", graph.name))?;
    let cluster = Embedded::start(slots.unwrap_or(plan.slots_needed()).max(1), registry)
        .await
        .context("starting the embedded cluster")?;
    let mut c = client::connect(&cluster.url, &Default::default()).await?;
    let id = client::submit(&mut c, graph, parallelism, &client::StartFrom::default()).await?;
    if fmt == Format::Text {
        eprintln!("job {id} ({}) running on an embedded cluster; Ctrl-C cancels it", graph.name);
    }
    let progress = Progress::start(fmt, &graph.name);
    let details = tokio::select! {
        d = client::wait_for_end(&mut c, &id, &progress) => d?,
        _ = tokio::signal::ctrl_c() => {
            progress.clear();
            eprintln!("cancelling job {id}");
            let mut c2 = client::connect(&cluster.url, &Default::default()).await?;
            c2.cancel_job(v1::CancelJobRequest { job_id: id.clone() }).await.map_err(client::status)?;
            client::wait_for_end(&mut c2, &id, &Progress::start(fmt, "cancelling")).await?
        }
    };
    output::details(fmt, &details);
    cluster.shutdown().await?;
    Ok(client::exit_code(&details))
}
