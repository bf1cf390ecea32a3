//! The Weir task manager: offers slots to the job manager, runs the subtasks
//! deployed to it (one thread each), and moves data between them — through
//! in-process channels when both ends are here, over gRPC streams otherwise.
//!
//! - [`tasks`](crate::tasks): deployed tasks and their inboxes;
//! - [`deploy`](crate::deploy): from a deployment request to a running task;
//! - [`exchange`](crate::exchange): the network data plane (credit-based, Arrow IPC);
//! - [`checkpoint`](crate::checkpoint): a task's side of checkpoints — its
//!   decisions ([`order`](crate::checkpoint)) apart from the uploads and
//!   acknowledgements;
//! - [`config`]: the `taskmanager:` configuration section.
//!
//! Tasks are instantiated from the operator kinds of the [`Registry`] the
//! task manager is started with.

mod checkpoint;
pub mod config;
mod deploy;
mod exchange;
mod metrics;
mod scratch;
mod tasks;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::{info, warn};
use weir_proto::v1;
use weir_proto::v1::data_exchange_server::DataExchangeServer;
use weir_proto::v1::job_manager_service_client::JobManagerServiceClient;
use weir_proto::v1::task_manager_service_server::{TaskManagerService, TaskManagerServiceServer};
use weir_runtime::operators::Registry;
use weir_runtime::task::{TaskControl, TaskOptions};
use weir_security::Role;
use weir_types::{CheckpointId, JobId};

use crate::checkpoint::SavepointTable;
use crate::deploy::DeployContext;
use crate::exchange::{ExchangeService, Peers, MAX_FRAME_BYTES};
use crate::tasks::Tasks;

/// Default nice increment of task threads: a busy task gets about a tenth of
/// the CPU time a runnable control thread (checkpoint upload, heartbeat,
/// RPC) gets, so that the control threads run as soon as they wake.
pub const DEFAULT_TASK_NICE: i32 = 10;

/// How a task manager runs.
#[derive(Debug, Clone)]
pub struct TaskManagerOptions {
    /// Its id (unique in the cluster).
    pub id: String,
    /// The job manager, e.g. `http://127.0.0.1:6123`.
    pub jobmanager: String,
    /// Address other processes reach this one at; defaults to the bound address.
    pub advertised_address: Option<String>,
    /// Number of slots offered.
    pub slots: u32,
    /// Data-plane tunables.
    pub task: TaskOptions,
    /// Credits per input channel.
    pub credits: usize,
    /// How long a producer waits for its consumer to be deployed.
    pub deploy_wait: Duration,
    /// Local working directory of state backends (RocksDB).
    pub state_dir: std::path::PathBuf,
    /// S3 settings for checkpoint storage (unset fields: `AWS_*` environment).
    pub s3: weir_state::S3Options,
    /// Nice increment of task threads (0: same priority as the process).
    pub task_nice: i32,
    /// TLS and roles: how callers are known, and how the job manager and
    /// other task managers are reached.
    pub security: weir_security::Security,
}

impl TaskManagerOptions {
    /// Options with defaults for everything but the job manager and slots.
    pub fn new(jobmanager: impl Into<String>, slots: u32) -> Self {
        Self {
            id: format!("tm-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            jobmanager: jobmanager.into(),
            advertised_address: None,
            slots,
            task: TaskOptions::default(),
            credits: weir_runtime::channel::DEFAULT_CREDITS,
            deploy_wait: Duration::from_secs(30),
            state_dir: std::env::temp_dir().join("weir-state"),
            s3: weir_state::S3Options::default(),
            task_nice: DEFAULT_TASK_NICE,
            security: weir_security::Security::default(),
        }
    }
}

/// Serves `TaskManagerService`; every call needs the `jobmanager` role.
struct TaskManagerRpc {
    ctx: DeployContext,
    security: weir_security::Security,
}

#[tonic::async_trait]
impl TaskManagerService for TaskManagerRpc {
    async fn deploy_task(
        &self,
        req: Request<v1::DeployTaskRequest>,
    ) -> Result<Response<v1::DeployTaskResponse>, Status> {
        self.security.check(&req, Role::JobManager, "deploy tasks")?;
        deploy::deploy(&self.ctx, req.into_inner())?;
        Ok(Response::new(v1::DeployTaskResponse {}))
    }

    async fn cancel_job_tasks(
        &self,
        req: Request<v1::CancelJobTasksRequest>,
    ) -> Result<Response<v1::CancelJobTasksResponse>, Status> {
        self.security.check(&req, Role::JobManager, "cancel tasks")?;
        let r = req.into_inner();
        let n = self.ctx.tasks.cancel_job(&r.job_id, r.attempt);
        info!(job_id = %r.job_id, attempt = r.attempt, tasks = n, "cancelling tasks");
        Ok(Response::new(v1::CancelJobTasksResponse {}))
    }

    async fn trigger_checkpoint(
        &self,
        req: Request<v1::TriggerCheckpointRequest>,
    ) -> Result<Response<v1::TriggerCheckpointResponse>, Status> {
        self.security.check(&req, Role::JobManager, "trigger checkpoints")?;
        let r = req.into_inner();
        if !r.savepoint_location.is_empty() {
            // Opening the directory now turns a bad target into a failed
            // savepoint before any barrier flows.
            weir_state::CheckpointStorage::from_uri_with(&r.savepoint_location, &self.ctx.s3)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            self.ctx.savepoints.announce(
                &JobId::new(r.job_id.clone()),
                r.attempt,
                CheckpointId(r.checkpoint_id),
                &r.savepoint_location,
            );
        }
        if r.prepare {
            return Ok(Response::new(v1::TriggerCheckpointResponse { triggered: 0 }));
        }
        let id = CheckpointId(r.checkpoint_id);
        let ctl = if r.stop { TaskControl::StopWithSavepoint(id) } else { TaskControl::TriggerCheckpoint(id) };
        let triggered = self.ctx.tasks.control(&r.job_id, r.attempt, ctl, true);
        tracing::debug!(job_id = %r.job_id, checkpoint = r.checkpoint_id, sources = triggered, "checkpoint triggered");
        Ok(Response::new(v1::TriggerCheckpointResponse { triggered }))
    }

    async fn notify_checkpoint_complete(
        &self,
        req: Request<v1::NotifyCheckpointCompleteRequest>,
    ) -> Result<Response<v1::NotifyCheckpointCompleteResponse>, Status> {
        self.security.check(&req, Role::JobManager, "confirm checkpoints")?;
        let r = req.into_inner();
        let id = CheckpointId(r.checkpoint_id);
        let ctl = if r.aborted { TaskControl::CheckpointAborted(id) } else { TaskControl::CheckpointComplete(id) };
        self.ctx.tasks.control(&r.job_id, r.attempt, ctl, false);
        self.ctx.savepoints.forget(&JobId::new(r.job_id.clone()), r.attempt, id);
        Ok(Response::new(v1::NotifyCheckpointCompleteResponse {}))
    }
}

/// A running task manager.
#[derive(Debug)]
pub struct TaskManager {
    /// Its id.
    pub id: String,
    /// Where it serves gRPC.
    pub addr: SocketAddr,
    tasks: Tasks,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    registered: Arc<AtomicBool>,
    /// Its local scratch directory, locked while it runs.
    _scratch: scratch::Scratch,
}

impl TaskManager {
    /// Starts serving on `listener` and registering with the job manager;
    /// tasks are instantiated from the operator kinds of `operators`.
    pub fn start(
        listener: TcpListener,
        opts: TaskManagerOptions,
        operators: Arc<Registry>,
    ) -> anyhow::Result<TaskManager> {
        let addr = listener.local_addr()?;
        let tls = opts.security.tls.clone();
        let advertised = opts.advertised_address.clone().unwrap_or_else(|| {
            let ip = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
            let scheme = if tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{ip}:{}", addr.port())
        });
        let jm = weir_security::lazy_channel(&opts.jobmanager, tls.as_ref(), Duration::from_secs(5))?;
        let jm = JobManagerServiceClient::new(jm);
        let scratch = scratch::Scratch::claim(&opts.state_dir, &opts.id).map_err(|e| {
            anyhow::anyhow!("claiming the scratch directory {}: {e}", opts.state_dir.join(&opts.id).display())
        })?;
        let tasks = Tasks::default();
        let shutdown = CancellationToken::new();
        let (reports, reports_rx) = mpsc::unbounded_channel();
        let ctx = DeployContext {
            task_manager_id: opts.id.clone(),
            tasks: tasks.clone(),
            operators,
            peers: Peers::new(tls.clone()),
            runtime: tokio::runtime::Handle::current(),
            reports,
            options: opts.task,
            credits: opts.credits,
            deploy_wait: opts.deploy_wait,
            jm: jm.clone(),
            state_dir: scratch.dir.clone(),
            s3: opts.s3.clone(),
            savepoints: SavepointTable::default(),
            task_nice: opts.task_nice,
        };
        tokio::spawn(forward_reports(jm.clone(), reports_rx));
        let registered = Arc::new(AtomicBool::new(false));
        tokio::spawn(membership(
            jm,
            opts.clone(),
            advertised.clone(),
            tasks.clone(),
            shutdown.clone(),
            registered.clone(),
        ));
        let tm_svc = TaskManagerServiceServer::new(TaskManagerRpc { ctx, security: opts.security.clone() })
            .max_decoding_message_size(MAX_DEPLOY_BYTES);
        let ex_svc =
            DataExchangeServer::new(ExchangeService::new(tasks.clone(), opts.deploy_wait, opts.security.clone()))
                .max_decoding_message_size(MAX_FRAME_BYTES)
                .max_encoding_message_size(MAX_FRAME_BYTES);
        let token = shutdown.clone();
        weir_security::warn_if_plaintext(addr, tls.is_some(), "gRPC");
        let incoming = weir_security::incoming(listener, tls, "gRPC");
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(tm_svc)
                .add_service(ex_svc)
                .serve_with_incoming_shutdown(incoming, token.cancelled())
                .await?;
            Ok(())
        });
        info!(id = %opts.id, %addr, %advertised, slots = opts.slots, jobmanager = %opts.jobmanager, "task manager listening");
        Ok(TaskManager { id: opts.id, addr, tasks, shutdown, server, registered, _scratch: scratch })
    }

    /// Serves `/healthz` (the process answers), `/readyz` (registered with
    /// the job manager) and `/metrics` (Prometheus) on `listener` until
    /// shutdown.
    pub fn serve_http(&self, listener: TcpListener) {
        let probes =
            metrics::Probes { tasks: self.tasks.clone(), registered: self.registered.clone(), id: self.id.clone() };
        weir_telemetry::serve(listener, metrics::router(probes), self.shutdown.clone(), "probes and metrics");
    }

    /// Cancels every task and stops serving.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.tasks.cancel_all();
        self.shutdown.cancel();
        self.server.await?
    }

    /// Waits until the server stops by itself (it only does on error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.server).await?
    }
}

/// Largest deployment request accepted (it carries the job graph).
const MAX_DEPLOY_BYTES: usize = 64 << 20;

/// Registers with the job manager, then heartbeats; registers again whenever
/// the job manager no longer knows this task manager.
async fn membership(
    mut jm: JobManagerServiceClient<Channel>,
    opts: TaskManagerOptions,
    advertised: String,
    tasks: Tasks,
    shutdown: CancellationToken,
    registered: Arc<AtomicBool>,
) {
    let register =
        v1::RegisterTaskManagerRequest { task_manager_id: opts.id.clone(), rpc_address: advertised, slots: opts.slots };
    'register: loop {
        let mut backoff = Duration::from_millis(50);
        let interval = loop {
            match jm.register_task_manager(register.clone()).await {
                Ok(r) => break Duration::from_millis(r.into_inner().heartbeat_interval_ms.max(10)),
                Err(e) => {
                    warn!(jobmanager = %opts.jobmanager, error = %e.message(), retry_in = ?backoff, "registering with the job manager failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        };
        info!(jobmanager = %opts.jobmanager, "registered with the job manager");
        registered.store(true, Ordering::Relaxed);
        let mut ticker = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let (running, counters): (Vec<_>, Vec<_>) = tasks
                .all()
                .into_iter()
                .map(|(t, running)| {
                    let key = v1::TaskKey { job_id: t.job, vertex: t.vertex, subtask: t.subtask, attempt: t.attempt };
                    let counters = deploy::counters_to_proto(&running.counters);
                    (key.clone(), v1::TaskCountersReport { task: Some(key), counters: Some(counters) })
                })
                .unzip();
            match jm
                .heartbeat(v1::HeartbeatRequest {
                    task_manager_id: opts.id.clone(),
                    running,
                    counters,
                    memory_bytes: weir_telemetry::resident_memory_bytes().unwrap_or(0),
                })
                .await
            {
                Ok(r) if r.get_ref().known => {}
                Ok(_) => {
                    registered.store(false, Ordering::Relaxed);
                    warn!("the job manager no longer knows this task manager: cancelling tasks and registering again");
                    tasks.cancel_all();
                    continue 'register;
                }
                Err(e) => warn!(error = %e.message(), "heartbeat failed"),
            }
        }
    }
}

async fn forward_reports(
    mut jm: JobManagerServiceClient<Channel>,
    mut rx: mpsc::UnboundedReceiver<v1::TaskStateReport>,
) {
    while let Some(report) = rx.recv().await {
        let mut backoff = Duration::from_millis(50);
        for attempt in 1..=5 {
            match jm.report_task_state(report.clone()).await {
                Ok(_) => break,
                Err(e) => {
                    warn!(attempt, error = %e.message(), "reporting task state failed");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        }
    }
}
