//! Identifiers: newtypes, so that a job id, a vertex index and a checkpoint
//! id can never be mixed up with each other or with a count.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identity of a job: 32 lowercase hex digits, assigned at submission.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// A job id as given (by a request, a record, a path).
    pub fn new(id: impl Into<String>) -> Self {
        JobId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its first eight characters, as names of savepoint directories use it.
    pub fn short(&self) -> &str {
        self.0.get(..8).unwrap_or(&self.0)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for JobId {
    fn from(s: String) -> Self {
        JobId(s)
    }
}

impl From<&str> for JobId {
    fn from(s: &str) -> Self {
        JobId(s.to_string())
    }
}

/// Index of a vertex (a chain of operators) within a job's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VertexId(pub u32);

impl fmt::Display for VertexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identity of a checkpoint (or savepoint): increasing within a job, across
/// its restarts and across the savepoints it starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CheckpointId(pub u64);

impl CheckpointId {
    /// The id after this one.
    pub fn next(self) -> Self {
        CheckpointId(self.0 + 1)
    }
}

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_serialize_as_their_bare_values() {
        assert_eq!(serde_json::to_string(&JobId::new("ab")).unwrap(), "\"ab\"");
        assert_eq!(serde_json::to_string(&CheckpointId(7)).unwrap(), "7");
        assert_eq!(serde_json::to_string(&VertexId(3)).unwrap(), "3");
        assert_eq!(CheckpointId(7).next(), CheckpointId(8));
        assert_eq!(JobId::new("0123456789abcdef").short(), "01234567");
        assert_eq!(JobId::new("abc").short(), "abc");
    }
}
