//! Error classes of the runtime. A [`PlanError`] is the user's to fix (a job
//! that cannot run as written); an [`OperatorError`] stops a running task.

use std::fmt;

/// A job that cannot be planned: names the operator, the field and the line
/// of the job file where the problem is, so that it can be fixed without
/// guessing. Retrying never helps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    /// The operator (or edge `from -> to`) concerned, if any.
    pub operator: Option<String>,
    /// The field within the operator or edge, e.g. `config.predicate`.
    pub field: Option<String>,
    /// 1-based line of the job file; 0 when unknown.
    pub line: u32,
    /// What is wrong, and where possible what would be right.
    pub message: String,
}

impl PlanError {
    /// An error about the job as a whole.
    pub fn job(message: impl Into<String>) -> Self {
        Self { operator: None, field: None, line: 0, message: message.into() }
    }

    /// An error about one operator.
    pub fn operator(uid: &str, line: u32, message: impl Into<String>) -> Self {
        Self { operator: Some(uid.to_string()), field: None, line, message: message.into() }
    }

    /// Names the field concerned.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut wrote = false;
        if let Some(op) = &self.operator {
            write!(f, "{op}")?;
            wrote = true;
        }
        if self.line > 0 {
            write!(f, "{}line {}", if wrote { " at " } else { "" }, self.line)?;
            wrote = true;
        }
        if let Some(field) = &self.field {
            write!(f, "{}field `{field}`", if wrote { ", " } else { "" })?;
            wrote = true;
        }
        if wrote {
            write!(f, ": ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for PlanError {}

/// A failure while a task runs. Carries enough to say which operator failed
/// and why; the job manager turns it into the job's failure reason.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// An Arrow kernel failed (e.g. arithmetic overflow in an expression).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A DataFusion expression failed to evaluate.
    #[error("expression: {0}")]
    Expression(#[from] datafusion::error::DataFusionError),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The task's plan could not be instantiated (should have been caught at submit).
    #[error("{0}")]
    Plan(#[from] PlanError),
    /// A channel to another subtask closed before its end of input.
    #[error("channel closed: {0}")]
    ChannelClosed(String),
    /// Data that breaks an operator's contract (e.g. a null event time).
    #[error("{0}")]
    InvalidData(String),
    /// State could not be snapshotted or restored.
    #[error("state: {0}")]
    State(String),
    /// A user's function (of the typed API or an application's operator) failed.
    #[error("{0}")]
    User(String),
    /// An external system (a broker, a database) failed or is unreachable.
    #[error("{system}: {message}")]
    External {
        /// The system, e.g. `kafka`.
        system: &'static str,
        /// What was being done and what went wrong.
        message: String,
    },
}

impl weir_types::Classify for OperatorError {
    fn class(&self) -> weir_types::ErrorClass {
        use weir_types::ErrorClass;
        match self {
            // A user's expression or data that breaks an operator's contract.
            OperatorError::Expression(_)
            | OperatorError::InvalidData(_)
            | OperatorError::Plan(_)
            | OperatorError::User(_) => ErrorClass::User,
            OperatorError::Io { .. } | OperatorError::ChannelClosed(_) | OperatorError::External { .. } => {
                ErrorClass::Transient
            }
            OperatorError::State(_) => ErrorClass::Corrupt,
            OperatorError::Arrow(_) => ErrorClass::Internal,
        }
    }
}

/// Result of operator calls.
pub type OpResult<T> = Result<T, OperatorError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_error_names_operator_line_and_field() {
        let e = PlanError::operator("win", 12, "unknown column `x`").field("config.key");
        assert_eq!(e.to_string(), "win at line 12, field `config.key`: unknown column `x`");
        assert_eq!(PlanError::job("no operators").to_string(), "no operators");
    }
}
