//! The Weir job manager: accepts jobs, plans and validates them, places their
//! subtasks on task manager slots, deploys them, tracks their state, and
//! detects lost task managers by their heartbeats.
//!
//! Pure state machines, unit-tested transition by transition:
//!
//! - [`job`](crate::job): one job's lifecycle — scheduling, task reports,
//!   failures and restarts, cancellation, checkpoints and savepoints;
//! - [`coordinator`](crate::coordinator): one job's checkpoint bookkeeping;
//! - [`membership`](crate::membership): task managers, their slots and heartbeats;
//! - [`scheduler`](crate::scheduler): slot allocation and placement;
//! - [`restore`](crate::restore): what a job restores from and whether it fits.
//!
//! and around them the I/O: [`cluster`] (the actor that owns the machines,
//! turns messages into transitions and effects into RPCs, timers and
//! storage writes), [`api`] (the one service layer of job control) with its
//! two faces, the gRPC service and the [`rest`] API, job records, and
//! [`config`] (the `jobmanager:` configuration section).
//!
//! Operators never run here; the job manager only sees JobGraphs and plans
//! them with the [`Registry`] it is started with. It depends on no
//! connector: what it knows of one reaches it through that registry.

pub mod api;
pub mod cluster;
pub mod config;
mod coordinator;
mod job;
mod membership;
mod records;
pub mod rest;
mod restore;
mod scheduler;
mod service;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use weir_proto::v1::job_manager_service_server::JobManagerServiceServer;
use weir_runtime::operators::Registry;

pub use cluster::{ClusterError, ClusterHandle, JobManagerOptions};
pub use rest::{Http, RestOptions};

/// Largest gRPC message accepted (job graphs with inline tables can be big).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A running job manager.
#[derive(Debug)]
pub struct JobManager {
    /// Where it serves gRPC.
    pub addr: SocketAddr,
    /// Handle to its core.
    pub cluster: ClusterHandle,
    /// Its job control, shared by gRPC and REST.
    pub api: api::Api,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    shutdown: CancellationToken,
    tls: Option<Arc<weir_security::Tls>>,
}

impl JobManager {
    /// Starts a job manager serving on `listener`, planning jobs with the
    /// operator kinds of `registry`.
    pub fn start(
        listener: TcpListener,
        opts: JobManagerOptions,
        registry: Arc<Registry>,
    ) -> anyhow::Result<JobManager> {
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let s3 = opts.s3.clone();
        let security = opts.security.clone();
        let tls = security.tls.clone();
        weir_security::warn_if_plaintext(addr, security.tls.is_some(), "gRPC");
        let incoming = weir_security::incoming(listener, security.tls.clone(), "gRPC");
        let (core, cluster) = cluster::Cluster::new(opts, registry);
        let core_task = tokio::spawn(core.run(shutdown.clone()));
        let api = api::Api::new(cluster.clone(), s3, &security);
        let svc = JobManagerServiceServer::new(service::JobManagerRpc::new(api.clone(), cluster.clone(), security))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, token.cancelled())
                .await?;
            core_task.await?;
            Ok(())
        });
        tracing::info!(%addr, "job manager listening");
        Ok(JobManager { addr, cluster, api, task, shutdown, tls })
    }

    /// Stops serving and waits for the server to end.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await?
    }

    /// Serves an HTTP endpoint on `listener` until shutdown: the REST API
    /// (with `/healthz` and `/readyz`; HTTPS when the job manager has TLS
    /// settings) or the Prometheus endpoint (`/metrics`, and `/healthz`;
    /// plain HTTP for scrapers).
    pub fn serve_http(&self, listener: TcpListener, what: Http, opts: RestOptions) -> anyhow::Result<()> {
        let router = rest::router(self.api.clone(), what, opts);
        match (what, &self.tls) {
            (Http::Rest, Some(tls)) => {
                let https = weir_security::HttpsListener::new(listener, tls.clone(), "rest")?;
                weir_telemetry::serve(https, router, self.shutdown.clone(), "rest (https)");
            }
            (Http::Rest, None) => weir_telemetry::serve(listener, router, self.shutdown.clone(), "rest"),
            (Http::Metrics, _) => weir_telemetry::serve(listener, router, self.shutdown.clone(), "metrics"),
        }
        Ok(())
    }

    /// Waits until the server stops by itself (it only does on error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await?
    }
}
