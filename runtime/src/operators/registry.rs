//! The operator registry: task managers instantiate operators by kind name.

use super::OperatorFactory;
use super::{datagen, join, project, sinks, values, watermark, window};

static FACTORIES: &[&dyn OperatorFactory] = &[
    &datagen::DatagenFactory,
    &values::ValuesFactory,
    &project::MapFactory,
    &project::ProjectFactory,
    &project::FilterFactory,
    &watermark::WatermarkFactory,
    &window::WindowFactory,
    &join::LookupJoinFactory,
    &sinks::DiscardFactory,
    &sinks::StdoutFactory,
    &sinks::JsonlFileFactory,
];

/// The factory for `kind`.
pub fn get(kind: &str) -> Option<&'static dyn OperatorFactory> {
    FACTORIES.iter().copied().find(|f| f.kind() == kind)
}

/// Every registered kind, for error messages and docs.
pub fn kinds() -> Vec<&'static str> {
    FACTORIES.iter().map(|f| f.kind()).collect()
}
