//! Job manager configuration: the `jobmanager:` section of `weir.yaml`,
//! overridden by environment variables and flags (see `docs/configuration.md`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use crate::cluster::JobManagerOptions;

/// The `jobmanager:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobManagerSection {
    /// Address to serve gRPC on (default `127.0.0.1:6123`).
    pub rpc_addr: Option<SocketAddr>,
    /// Expected period of task manager heartbeats (default `1s`).
    #[serde(default, with = "humantime_serde")]
    pub heartbeat_interval: Option<Duration>,
    /// Silence after which a task manager is lost (default `5s`).
    #[serde(default, with = "humantime_serde")]
    pub heartbeat_timeout: Option<Duration>,
    /// How long a job waits for free slots (default `30s`).
    #[serde(default, with = "humantime_serde")]
    pub slot_wait_timeout: Option<Duration>,
    /// Checkpoint storage of jobs that name none (default: `weir-checkpoints` in the temp dir).
    pub checkpoint_storage: Option<String>,
    /// Where savepoints go when `weir savepoint` names no target (default: none).
    pub savepoint_dir: Option<String>,
    /// Address of the REST endpoint: `/healthz`, `/readyz`, `/v1/jobs`,
    /// `/v1/overview` (default: none).
    pub rest_addr: Option<SocketAddr>,
    /// Address of the Prometheus endpoint `/metrics` (default: none).
    pub metrics_addr: Option<SocketAddr>,
    /// S3 settings for checkpoint storage (default: the `AWS_*` environment).
    #[serde(default)]
    pub s3: Option<weir_state::S3Options>,
}

impl JobManagerSection {
    /// Default address of the job manager.
    pub const DEFAULT_RPC_ADDR: &'static str = "127.0.0.1:6123";

    /// Resolved options, checked for consistency.
    pub fn options(&self) -> anyhow::Result<JobManagerOptions> {
        let d = JobManagerOptions::default();
        let o = JobManagerOptions {
            heartbeat_interval: self.heartbeat_interval.unwrap_or(d.heartbeat_interval),
            heartbeat_timeout: self.heartbeat_timeout.unwrap_or(d.heartbeat_timeout),
            slot_wait_timeout: self.slot_wait_timeout.unwrap_or(d.slot_wait_timeout),
            checkpoint_storage: self.checkpoint_storage.clone().unwrap_or(d.checkpoint_storage),
            s3: self.s3.clone().unwrap_or_default(),
            savepoint_dir: self.savepoint_dir.clone(),
        };
        weir_state::CheckpointStorage::from_uri_with(&o.checkpoint_storage, &o.s3)
            .map_err(|e| anyhow::anyhow!("checkpoint_storage: {e}"))?;
        if o.heartbeat_interval.is_zero() || o.heartbeat_timeout <= o.heartbeat_interval {
            bail!(
                "heartbeat_timeout ({:?}) must be longer than heartbeat_interval ({:?}), which must be positive",
                o.heartbeat_timeout,
                o.heartbeat_interval
            );
        }
        Ok(o)
    }
}
