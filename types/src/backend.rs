//! Which state backend a job's tasks use.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where operator state is kept between checkpoints and in what format
/// checkpoints write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// In memory; every checkpoint writes the whole state (one file per task).
    #[default]
    Heap,
    /// RocksDB; checkpoints are incremental (change files and shared SSTs).
    Rocksdb,
}

impl BackendKind {
    /// Its name in job files, checkpoint metadata and messages.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Heap => "heap",
            BackendKind::Rocksdb => "rocksdb",
        }
    }

    /// The kind named `s` (as [`BackendKind::name`] writes it; `hashmap`,
    /// Flink's name for the heap backend, is accepted too).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "heap" | "hashmap" => Some(BackendKind::Heap),
            "rocksdb" => Some(BackendKind::Rocksdb),
            _ => None,
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for k in [BackendKind::Heap, BackendKind::Rocksdb] {
            assert_eq!(BackendKind::parse(k.name()), Some(k));
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        }
        assert_eq!(BackendKind::parse("memory"), None);
    }
}
