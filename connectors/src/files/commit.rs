//! Partition commit: a success file (`_SUCCESS`) written into a partition
//! directory once it is done, so that readers (Hive, Spark, a downstream
//! job) know it is complete — Flink's `success-file` commit policy.
//!
//! A partition is a candidate once parts of it are committed. It is done:
//! - with the `process_time` trigger, `delay` after its first part was
//!   committed (at once by default), checked whenever a checkpoint
//!   completes;
//! - with the `partition_time` trigger, once the watermark of *every*
//!   subtask of the sink passed the time its values name plus `delay`
//!   (for hourly partitions, a delay of an hour): the rows of that time are
//!   then in parts committed by every subtask.
//!
//! Subtasks learn each other's watermarks through small marker objects in
//! a hidden directory beside the parts (`.weir-commit-<uid>/<subtask>`):
//! each subtask writes its marker at every barrier, with the watermarks of
//! its last barriers, before it acknowledges the barrier. When checkpoint
//! *n* completes every subtask has written its watermark at barrier *n*,
//! and each subtask commits the candidates it wrote that the smallest of
//! those watermarks makes done. At the end of input each subtask writes
//! its remaining candidates into its marker; the last to end commits every
//! subtask's and removes the markers.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use weir_runtime::error::{OpResult, OperatorError};
use weir_runtime::operators::duration;

use super::parts::unescape;
use super::{storage_error, Store};
use crate::blocking::wait;

/// When a partition is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `delay` after its first part was committed, by the clock.
    #[default]
    ProcessTime,
    /// When every subtask's watermark passed the partition's time plus `delay`.
    PartitionTime,
}

/// The `partition_commit` configuration of `file_sink`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionCommit {
    /// `process_time` (default) or `partition_time`.
    #[serde(default)]
    pub trigger: Trigger,
    /// How long after its time (or first commit) a partition is done.
    #[serde(default, with = "duration")]
    pub delay: Duration,
    /// The partition's time from its values: `$dt $hour:00:00` (default:
    /// the first partition column's value).
    #[serde(default)]
    pub timestamp_pattern: Option<String>,
    /// How that text reads, a `strftime` pattern in UTC (default
    /// `%Y-%m-%d %H:%M:%S`; a bare date also reads, as midnight).
    #[serde(default = "default_format")]
    pub timestamp_format: String,
    /// The success file's name (default `_SUCCESS`).
    #[serde(default = "default_success")]
    pub success_file: String,
}

fn default_format() -> String {
    "%Y-%m-%d %H:%M:%S".into()
}
fn default_success() -> String {
    "_SUCCESS".into()
}

impl PartitionCommit {
    /// Checks the configuration against the sink's partition columns (in
    /// directory order); returns the timestamp pattern to use.
    pub fn check(&self, columns: &[String]) -> Result<String, (String, &'static str)> {
        let name = &self.success_file;
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err((format!("`{name}` is not a file name"), "success_file"));
        }
        let Some(first) = columns.first() else {
            return Err(("partition commit needs partitions: set partition_by or time_partition".into(), "trigger"));
        };
        let pattern = self.timestamp_pattern.clone().unwrap_or_else(|| format!("${first}"));
        if self.trigger == Trigger::PartitionTime {
            for var in variables(&pattern) {
                if !columns.iter().any(|c| c == var) {
                    return Err((
                        format!("`${var}` is not a partition column (they are: {})", columns.join(", ")),
                        "timestamp_pattern",
                    ));
                }
            }
            let items = chrono::format::StrftimeItems::new(&self.timestamp_format);
            if items.into_iter().any(|i| matches!(i, chrono::format::Item::Error)) {
                return Err((format!("`{}` is not a strftime pattern", self.timestamp_format), "timestamp_format"));
            }
        }
        Ok(pattern)
    }
}

/// The `$name`s of a pattern.
fn variables(pattern: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = pattern;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

/// The values a partition directory names: `a=1/b=x` → {a: 1, b: x}.
fn values(dir: &str) -> BTreeMap<&str, Option<String>> {
    dir.split('/').filter_map(|seg| seg.split_once('=')).map(|(k, v)| (k, unescape(v))).collect()
}

/// A subtask's marker: the watermarks at its last barriers, and at the end
/// of input the candidates it leaves.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Marker {
    parallelism: u32,
    /// (checkpoint, watermark at its barrier), oldest first.
    barriers: Vec<(u64, Option<i64>)>,
    ended: bool,
    /// Candidates (directory → first commit, ms), written at the end.
    pending: BTreeMap<String, i64>,
}

/// Barriers a marker remembers.
const REMEMBERED: usize = 16;

/// One subtask's side of the partition commit.
pub struct Committer {
    config: PartitionCommit,
    pattern: String,
    /// The markers' directory, relative to the sink's base.
    markers: String,
    subtask: u32,
    parallelism: u32,
    /// Candidates: directory → when its first part was committed (ms).
    pub pending: BTreeMap<String, i64>,
    watermark: Option<i64>,
    barriers: VecDeque<(u64, Option<i64>)>,
    /// The candidates left at the end of input, once it ended.
    ended: Option<BTreeMap<String, i64>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Committer {
    /// A committer for subtask `subtask` of `parallelism` of sink `uid`.
    pub fn new(config: PartitionCommit, pattern: String, uid: &str, subtask: u32, parallelism: u32) -> Committer {
        Committer {
            config,
            pattern,
            markers: format!(".weir-commit-{uid}"),
            subtask,
            parallelism,
            pending: BTreeMap::new(),
            watermark: None,
            barriers: VecDeque::new(),
            ended: None,
        }
    }

    /// Parts of these directories were committed.
    pub fn committed<'a>(&mut self, dirs: impl IntoIterator<Item = &'a str>) {
        let now = now_ms();
        for d in dirs {
            if !d.is_empty() {
                self.pending.entry(d.to_string()).or_insert(now);
            }
        }
    }

    /// The subtask's input watermark advanced.
    pub fn watermark(&mut self, w: i64) {
        self.watermark = Some(w);
    }

    /// Barrier `id`: remembers the watermark and, for the partition-time
    /// trigger, publishes it before the barrier is acknowledged.
    pub fn barrier(&mut self, store: &Store, id: u64) -> OpResult<()> {
        self.barriers.push_back((id, self.watermark));
        while self.barriers.len() > REMEMBERED {
            self.barriers.pop_front();
        }
        // After the end of input the marker says so already; rewritten, it
        // could outlive the last subtask's clean-up.
        if self.config.trigger == Trigger::PartitionTime && self.ended.is_none() {
            self.put_marker(store)?;
        }
        Ok(())
    }

    /// Checkpoint `id` completed (this subtask's parts of it are committed):
    /// writes the success files of the candidates that are done.
    pub fn complete(&mut self, store: &Store, id: u64) -> OpResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ready: Vec<String> = match self.config.trigger {
            Trigger::ProcessTime => {
                let delay = self.config.delay.as_millis() as i64;
                let now = now_ms();
                self.pending.iter().filter(|(_, t)| **t + delay <= now).map(|(d, _)| d.clone()).collect()
            }
            Trigger::PartitionTime => {
                let Some(w) = self.smallest_watermark(store, id)? else { return Ok(()) };
                self.done_by(&self.pending, w)?
            }
        };
        self.succeed(store, &ready)?;
        for d in ready {
            self.pending.remove(&d);
        }
        Ok(())
    }

    /// The input ended and this subtask's parts are committed.
    pub fn finish(&mut self, store: &Store) -> OpResult<()> {
        if self.config.trigger == Trigger::ProcessTime {
            let all: Vec<String> = std::mem::take(&mut self.pending).into_keys().collect();
            return self.succeed(store, &all);
        }
        self.ended = Some(std::mem::take(&mut self.pending));
        self.put_marker(store)?;
        let mut all = BTreeMap::new();
        for j in 0..self.parallelism {
            match self.get_marker(store, j)? {
                Some(m) if m.ended => all.extend(m.pending),
                _ => return Ok(()), // not the last to end
            }
        }
        let dirs: Vec<String> = all.into_keys().collect();
        self.succeed(store, &dirs)?;
        for j in 0..self.parallelism {
            let path = store.path(&format!("{}/{j}", self.markers));
            let s = store.clone();
            wait(async move {
                match s.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(storage_error(format!("deleting {path}"), e)),
                }
            })?;
        }
        Ok(())
    }

    /// The smallest watermark of all subtasks at barrier `id`; `None` when a
    /// subtask has none, or its marker does not go back to `id`.
    fn smallest_watermark(&self, store: &Store, id: u64) -> OpResult<Option<i64>> {
        let mut smallest = i64::MAX;
        for j in 0..self.parallelism {
            let own = (j == self.subtask).then(|| self.barriers.iter().find(|b| b.0 == id).map(|b| b.1));
            let at = match own {
                Some(at) => at,
                None => self.get_marker(store, j)?.and_then(|m| m.barriers.iter().find(|b| b.0 == id).map(|b| b.1)),
            };
            match at.flatten() {
                Some(w) => smallest = smallest.min(w),
                None => return Ok(None),
            }
        }
        Ok(Some(smallest))
    }

    /// The directories of `candidates` whose time plus the delay the
    /// watermark `w` passed.
    fn done_by(&self, candidates: &BTreeMap<String, i64>, w: i64) -> OpResult<Vec<String>> {
        let delay = self.config.delay.as_millis() as i64;
        let mut out = Vec::new();
        for d in candidates.keys() {
            if self.partition_time(d)?.saturating_add(delay) < w {
                out.push(d.clone());
            }
        }
        Ok(out)
    }

    /// The time directory `dir` names (ms since the epoch, UTC).
    pub fn partition_time(&self, dir: &str) -> OpResult<i64> {
        let values = values(dir);
        let mut text = String::new();
        let mut rest = self.pattern.as_str();
        while let Some(i) = rest.find('$') {
            text.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            let value = values.get(&rest[..end]).cloned().flatten().ok_or_else(|| {
                OperatorError::InvalidData(format!("partition `{dir}` has no value for `${}`", &rest[..end]))
            })?;
            text.push_str(&value);
            rest = &rest[end..];
        }
        text.push_str(rest);
        let format = &self.config.timestamp_format;
        let date = |f: &str| NaiveDate::parse_from_str(&text, f).map(|d| d.and_time(Default::default()));
        let time = NaiveDateTime::parse_from_str(&text, format)
            .or_else(|e| date(format).or_else(|_| date("%Y-%m-%d")).map_err(|_| e))
            .map_err(|e| {
                OperatorError::InvalidData(format!(
                    "partition `{dir}`: `{text}` (from `{}`) does not read as `{format}`: {e}",
                    self.pattern
                ))
            })?;
        Ok(time.and_utc().timestamp_millis())
    }

    /// Writes the success file of each directory.
    fn succeed(&self, store: &Store, dirs: &[String]) -> OpResult<()> {
        for d in dirs {
            let path = store.path(&format!("{d}/{}", self.config.success_file));
            let s = store.clone();
            wait(async move {
                s.store
                    .put(&path, bytes::Bytes::new().into())
                    .await
                    .map(|_| ())
                    .map_err(|e| storage_error(format!("writing {path}"), e))
            })?;
        }
        if !dirs.is_empty() {
            tracing::info!(subtask = self.subtask, partitions = dirs.len(), "file sink committed partitions");
        }
        Ok(())
    }

    /// Publishes this subtask's marker.
    fn put_marker(&self, store: &Store) -> OpResult<()> {
        let marker = Marker {
            parallelism: self.parallelism,
            barriers: self.barriers.iter().copied().collect(),
            ended: self.ended.is_some(),
            pending: self.ended.clone().unwrap_or_default(),
        };
        let bytes = serde_json::to_vec(&marker).map_err(|e| OperatorError::State(e.to_string()))?;
        let path = store.path(&format!("{}/{}", self.markers, self.subtask));
        let s = store.clone();
        wait(async move {
            s.store.put(&path, bytes.into()).await.map(|_| ()).map_err(|e| storage_error(format!("writing {path}"), e))
        })
    }

    fn get_marker(&self, store: &Store, j: u32) -> OpResult<Option<Marker>> {
        let path = store.path(&format!("{}/{j}", self.markers));
        let s = store.clone();
        let bytes = wait(async move {
            match s.store.get(&path).await {
                Ok(r) => r.bytes().await.map(Some).map_err(|e| storage_error(format!("reading {path}"), e)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(storage_error(format!("reading {path}"), e)),
            }
        })?;
        // A marker that does not decode (torn by a crash) counts as absent.
        Ok(bytes.and_then(|b| serde_json::from_slice::<Marker>(&b).ok()).filter(|m| m.parallelism == self.parallelism))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committer(pattern: Option<&str>, format: Option<&str>) -> Committer {
        let mut config: PartitionCommit = serde_json::from_value(serde_json::json!({
            "trigger": "partition_time", "delay": "1m"
        }))
        .unwrap();
        config.timestamp_pattern = pattern.map(str::to_string);
        if let Some(f) = format {
            config.timestamp_format = f.into();
        }
        let pattern = config.check(&["dt".into(), "hm".into()]).unwrap();
        Committer::new(config, pattern, "lake", 0, 2)
    }

    #[test]
    fn a_partitions_time_is_read_from_its_values() {
        let c = committer(Some("$dt $hm:00"), None);
        assert_eq!(c.partition_time("dt=2026-03-01/hm=08%3A05").unwrap(), 1_772_352_300_000);
        assert_eq!(c.partition_time("dt=2026-03-01/hm=08:05").unwrap(), 1_772_352_300_000);
        let e = c.partition_time("dt=2026-03-01").unwrap_err().to_string();
        assert!(e.contains("no value for `$hm`"), "{e}");
        // The default: the first column, where a bare date is midnight.
        assert_eq!(committer(None, None).partition_time("dt=2026-03-01/hm=08:05").unwrap(), 1_772_323_200_000);
        assert_eq!(committer(None, Some("%d.%m.%Y")).partition_time("dt=01.03.2026").unwrap(), 1_772_323_200_000);
        let e = committer(None, Some("%d.%m.%Y")).partition_time("dt=yesterday").unwrap_err().to_string();
        assert!(e.contains("`yesterday` (from `$dt`) does not read as `%d.%m.%Y`"), "{e}");
        let mut candidates = BTreeMap::new();
        candidates.insert("dt=2026-03-01/hm=08:05".to_string(), 0);
        candidates.insert("dt=2026-03-01/hm=08:06".to_string(), 0);
        let c = committer(Some("$dt $hm:00"), None);
        // 08:05 + 1 min delay is passed by 08:06:00.001, 08:06 is not.
        assert_eq!(c.done_by(&candidates, 1_772_352_360_001).unwrap(), ["dt=2026-03-01/hm=08:05"]);
    }

    #[test]
    fn configurations_are_checked_against_the_partition_columns() {
        let config = |v: serde_json::Value| serde_json::from_value::<PartitionCommit>(v).unwrap();
        let cols = ["dt".to_string(), "hour".to_string()];
        let bad = [
            (
                serde_json::json!({"trigger": "partition_time", "timestamp_pattern": "$day"}),
                "`$day` is not a partition",
            ),
            (serde_json::json!({"success_file": "a/b"}), "not a file name"),
            (serde_json::json!({"trigger": "partition_time", "timestamp_format": "%Q"}), "not a strftime"),
        ];
        for (v, want) in bad {
            let e = config(v).check(&cols).unwrap_err().0;
            assert!(e.contains(want), "{e}");
        }
        assert!(config(serde_json::json!({})).check(&[]).unwrap_err().0.contains("needs partitions"));
        assert_eq!(config(serde_json::json!({})).check(&cols).unwrap(), "$dt");
    }
}
