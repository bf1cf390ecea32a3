//! Error classes: whose fault a failure is and whether trying again helps.
//!
//! Every crate keeps its own error enum with the context it knows (a path,
//! a checkpoint, an operator); each also says which [`ErrorClass`] a value
//! belongs to, so that a decision made far away (the checkpoint coordinator
//! deciding between "skip this checkpoint", "retry" and "fail the job")
//! never has to parse a message.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The user's to fix: a job, configuration, request or record that
    /// cannot work as written. Retrying the same thing never helps.
    User,
    /// Stored data that cannot be trusted (a checkpoint file missing,
    /// truncated or failing its checksum). Use an older copy; retrying the
    /// same read does not help.
    Corrupt,
    /// Something outside that may recover (storage or a broker unreachable,
    /// a timeout, a peer that went away). Retrying may help.
    Transient,
    /// A broken invariant: a bug.
    Internal,
}

impl ErrorClass {
    /// Whether retrying the same operation may succeed.
    pub fn is_retriable(self) -> bool {
        self == ErrorClass::Transient
    }

    /// Its name in messages and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::User => "user",
            ErrorClass::Corrupt => "corrupt",
            ErrorClass::Transient => "transient",
            ErrorClass::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error that knows its class.
pub trait Classify {
    /// The class of this error.
    fn class(&self) -> ErrorClass;
}

/// A failure as it travels between processes and components: its class
/// and a message for people. What the original error type knew beyond that
/// stays with it; what every decision needs travels here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Whose fault it is and whether retrying helps.
    pub class: ErrorClass,
    /// What went wrong, naming what was being done.
    pub message: String,
}

impl Failure {
    /// A failure of `class`.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self { class, message: message.into() }
    }

    /// The failure an error stands for.
    pub fn of<E: Classify + fmt::Display + ?Sized>(e: &E) -> Self {
        Self { class: e.class(), message: e.to_string() }
    }

    /// The same failure, its message prefixed with what was being done.
    pub fn context(self, doing: impl fmt::Display) -> Self {
        Self { class: self.class, message: format!("{doing}: {}", self.message) }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl Classify for Failure {
    fn class(&self) -> ErrorClass {
        self.class
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_their_class_through_context() {
        let f = Failure::new(ErrorClass::Corrupt, "file x fails its checksum").context("restoring checkpoint 3");
        assert_eq!(f.class(), ErrorClass::Corrupt);
        assert_eq!(f.to_string(), "restoring checkpoint 3: file x fails its checksum");
        assert_eq!(Failure::of(&f), f);
    }

    #[test]
    fn only_transient_failures_are_worth_retrying() {
        assert!(ErrorClass::Transient.is_retriable());
        for c in [ErrorClass::User, ErrorClass::Corrupt, ErrorClass::Internal] {
            assert!(!c.is_retriable(), "{c}");
        }
    }
}
