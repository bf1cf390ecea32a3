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
    /// Address of the REST API and its probes (default `127.0.0.1:8081`;
    /// `off`: not served).
    pub rest_addr: Option<Listen>,
    /// Largest request body the REST API accepts, e.g. `4MiB` (default 4 MiB).
    pub rest_max_body: Option<ByteSize>,
    /// File of `TOKEN ROLE` lines (role `read` or `admin`): the REST API
    /// then needs a bearer token (default: none, open).
    pub rest_token_file: Option<std::path::PathBuf>,
    /// Address of the Prometheus endpoint `/metrics` (default: none).
    pub metrics_addr: Option<SocketAddr>,
    /// S3 settings for checkpoint storage (default: the `AWS_*` environment).
    #[serde(default)]
    pub s3: Option<weir_state::S3Options>,
}

/// Where an optional endpoint listens: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// Not served.
    Off,
    /// Served at this address.
    At(SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Listen::Off);
        }
        s.parse().map(Listen::At).map_err(|e| format!("`{s}` is neither an address (host:port) nor `off`: {e}"))
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A size in bytes, written with an optional unit: `4194304`, `4MiB`, `512KiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: usize = digits.parse().map_err(|_| format!("`{s}` is not a size (e.g. 4MiB)"))?;
        let scale = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            other => return Err(format!("`{other}` is not a size unit (B, KiB, MiB or GiB)")),
        };
        n.checked_mul(scale).filter(|&b| b > 0).map(ByteSize).ok_or_else(|| format!("`{s}` is not a usable size"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(usize),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(0) => Err(serde::de::Error::custom("a size must be positive")),
            Raw::Bytes(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl JobManagerSection {
    /// Default address of the job manager.
    pub const DEFAULT_RPC_ADDR: &'static str = "127.0.0.1:6123";

    /// Default address of the REST API (Flink's port).
    pub const DEFAULT_REST_ADDR: &'static str = "127.0.0.1:8081";

    /// Where the REST API listens, if anywhere.
    pub fn rest_listen(&self) -> Option<SocketAddr> {
        match self.rest_addr {
            Some(Listen::Off) => None,
            Some(Listen::At(a)) => Some(a),
            None => Some(Self::DEFAULT_REST_ADDR.parse().expect("valid default")),
        }
    }

    /// Settings of the REST API (the token file is read here).
    pub fn rest_options(&self) -> anyhow::Result<crate::RestOptions> {
        let d = crate::RestOptions::default();
        let tokens = match &self.rest_token_file {
            Some(p) => Some(std::sync::Arc::new(
                weir_security::Tokens::load(p).map_err(|e| anyhow::anyhow!("rest_token_file: {e}"))?,
            )),
            None => None,
        };
        Ok(crate::RestOptions { max_body_bytes: self.rest_max_body.map_or(d.max_body_bytes, |b| b.0), tokens, ..d })
    }

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
            security: d.security,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rest_api_listens_on_flinks_port_unless_moved_or_off() {
        let section = |yaml: &str| weir_config::parse_section::<JobManagerSection>(yaml, "jobmanager").unwrap();
        assert_eq!(section("").rest_listen(), Some("127.0.0.1:8081".parse().unwrap()));
        assert_eq!(section("jobmanager:\n  rest_addr: off\n").rest_listen(), None);
        let moved = section("jobmanager:\n  rest_addr: 0.0.0.0:9000\n  rest_max_body: 512KiB\n");
        assert_eq!(moved.rest_listen(), Some("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(moved.rest_options().unwrap().max_body_bytes, 512 << 10);
        assert_eq!(section("jobmanager:\n  rest_max_body: 1000\n").rest_options().unwrap().max_body_bytes, 1000);
        let bad = weir_config::parse_section::<JobManagerSection>("jobmanager:\n  rest_addr: nowhere\n", "jobmanager");
        assert!(format!("{:#}", bad.unwrap_err()).contains("neither an address"), "a bad address is named");
        assert!("4 parsecs".parse::<ByteSize>().unwrap_err().contains("not a size unit"));
        assert!("0MiB".parse::<ByteSize>().is_err(), "a zero limit would refuse everything");
    }
}
